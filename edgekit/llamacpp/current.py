"""Making a build `current`: the gate that must pass first, the atomic switch, the previous build kept, pruning.

`gate_plan` is the step decision shared by a fresh build (steps.LlamaGate) and a pack from another host
(packs.InstallPack): Noop when this build already passed the gate on this device, else the gate run.
"""

from __future__ import annotations

from edgekit import layout as L
from edgekit.llamacpp.gate import GATE_MODEL, GateRefused, GateRun, run_gate, sandbox_properties
from edgekit.llamacpp.server_env import names_written, require_known
from edgekit.llamacpp.stamp import describe
from edgekit.errors import UnsuitableDevice
from edgekit.facts.deployed import (BuildDirs, FileSha256, GateRecord, GpuGroups, HealthyBuild, InstalledBuild,
                                    ServerEnvNames, SystemdVersion, UserGroups)
from edgekit.models.tiny import tiny_llama_sha256
from edgekit.remote.command import Op, q
from edgekit.remote.plan import Change, Context, Noop
from edgekit.remote.run_state import BuildState
from edgekit.service.settings import render_unit


def gate_run_for(ctx: Context, build_id: str, prefix: str, gpu: bool) -> GateRun:
    """The gate's commands for one build, with the real unit's sandbox (as rendered for this device)."""
    unit = render_unit({"edgekit_private_devices": not gpu, "edgekit_service_groups": ctx.fact(GpuGroups())})
    props = sandbox_properties(unit, ctx.fact(SystemdVersion()))
    if ctx.fact(UserGroups(L.SERVICE_USER)) is None:
        # `edgekit build` before any provision: no service user yet; a transient one has the same rights.
        props = [p for p in props if not p.startswith(("User=", "Group=", "SupplementaryGroups="))]
        props.append("DynamicUser=yes")
    facts = ctx.run.facts
    threads = max(1, min(4, (facts.cpus if facts else None) or 2))
    return GateRun(build_id, f"{prefix}/bin", gpu, props, threads)


def gate_ops(ctx: Context, run: GateRun, record_in: str | None) -> list[Op]:
    return run.ops(ctx.fact(FileSha256(GATE_MODEL)) == tiny_llama_sha256(), record_in)


def known_settings(ctx: Context, prefix: str, build_id: str, what: str = "build", defer_silent: bool = False
                   ) -> str | None:
    """Refuse (UnknownServerSetting, exit 5) when the build at `prefix` does not know a LLAMA_ARG_* name this
    run's service settings write; -> what was checked (None: not built yet, e.g. in a dry run). With
    `defer_silent`, a build whose --help says nothing (it does not run: SIGILL, a missing library) is left to the
    gate, which says why it does not run (and, for SIGILL, builds a lower CPU level); the caller checks again after
    the gate passes."""
    known = ctx.fact(ServerEnvNames(f"{prefix}/bin/llama-server"))
    if defer_silent and known is not None and not known:
        return None
    current = None
    if known is not None:
        current = (ctx.read(f"readlink {q(L.CURRENT)}", sudo=False).stdout.strip() or "none").rsplit("/", 1)[-1]
    return require_known(known, names_written(ctx.run.service, ctx.run.router), build_id, ctx.transport.name,
                         current, what)


def gate_plan(ctx: Context, prefix: str, build_id: str, gpu: bool, cpu_level: str | None = None,
              lower=None, what: str = "build") -> Noop | Change:
    """Noop when this build already passed the gate on this device; else the gate run (raises GateRefused).
    Either way the build must know every setting the service's env file will name (raises UnknownServerSetting)."""
    rec = ctx.fact(GateRecord(prefix))
    if rec and rec.get("ok") and rec.get("build") == build_id:
        knows = known_settings(ctx, prefix, build_id, what)
        return Noop(f"passed the gate here at {rec.get('at')}: {rec.get('reason')}; {knows}")
    knows = known_settings(ctx, prefix, build_id, what, defer_silent=True)   # refused before anything when --help answers
    run = gate_run_for(ctx, build_id, prefix, gpu)
    ops = gate_ops(ctx, run, prefix)

    def apply(c: Context) -> None:
        c.progress("gate: starting the new llama-server in the service sandbox")
        verdict = run_gate(c, run, ops, build_id)
        if verdict.ok:
            known_settings(c, prefix, build_id, what)       # it runs: now its --help must list what edgekit writes
            return
        refused = cpu_level if verdict.signal == "SIGILL" and cpu_level and lower is not None else None
        current = c.read(f"readlink {q(L.CURRENT)}", sudo=False).stdout.strip() or "none"
        message = (f"the new {what} {build_id} failed the gate on {c.transport.name}: {verdict.reason}. "
                   f"`current` is unchanged ({current.rsplit('/', 1)[-1]}); the {what} and its log are kept "
                   f"({c.transport.name}:{verdict.log})")
        hint = f"edgekit records {cpu_level} as unusable here and builds {lower.name} instead" if refused else None
        raise GateRefused(message, verdict, refused, hint=hint)

    return Change(f"prove {build_id} runs here: its llama-server on a tiny model in the service's sandbox"
                  + (", every layer on the GPU" if gpu else "")
                  + (f" ({knows})" if knows else "; first its `llama-server --help` must list every LLAMA_ARG_* "
                     "setting edgekit writes (read once it is built and runs)"), ops, apply=apply)


class CpuLevelRefused:
    """A CPU level whose build died of SIGILL at the gate, recorded so facts leave it out from now on."""

    name = "cpu level refused"

    def __init__(self, level: str):
        self.level = level

    def plan(self, ctx: Context) -> Change:
        return Change(f"record {self.level} as unusable on this device (SIGILL at the gate)",
                      [f"install -d -m 0755 {q(L.STATE_DIR)} && echo {q(self.level + ' SIGILL')} >> {q(L.CPU_REFUSED)}"])


def switch_plan(ctx: Context, prefix: str, keep: int) -> Noop | Change:
    inst = ctx.fact(InstalledBuild(prefix))
    ctx.run.build = BuildState(prefix, L.CURRENT, inst["stamp"])
    if inst["current"] == prefix and inst["stamp"]:
        return Noop(f"{describe(inst['stamp'])} already built at {prefix} (current)")
    if not ctx.dry_run:
        rec = ctx.fact(GateRecord(prefix))
        if not (rec and rec.get("ok")):
            raise UnsuitableDevice(f"{prefix} has not passed the build gate on {ctx.transport.name}: not switching "
                                   "to it", hint=f"run `edgekit build {ctx.transport.name}` to gate it")
    ops = switch_ops(ctx, prefix, keep, inst["current"])

    def apply(c: Context) -> None:
        for op in ops:
            c.do(op)
        c.run.build = BuildState(prefix, L.CURRENT, c.fact(InstalledBuild(prefix))["stamp"])

    return Change(f"switch {L.CURRENT} -> {prefix}" + (f" (previous: {inst['current']})" if inst["current"] else ""),
                  ops, apply=apply)


def switch_ops(ctx: Context, prefix: str, keep: int, previous: str | None) -> list[Op]:
    """The switch of `current` to `prefix`, then the removal of builds beyond the newest `keep` (never current,
    previous or the last healthy build)."""
    healthy = ctx.fact(HealthyBuild())
    drop = prune_candidates(ctx.fact(BuildDirs()), keep, (healthy,) if healthy else (), after_switch=(prefix, previous))
    return [*switch_commands(prefix, previous), *(f"rm -rf {q(L.INSTALL_ROOT + '/' + name)}" for name in drop)]


def switch_commands(prefix: str, previous: str | None) -> list[str]:
    tmp = f"{L.CURRENT}.edgekit-tmp"
    cmds = []
    if previous and previous != prefix:
        prev_tmp = f"{L.INSTALL_ROOT}/previous.edgekit-tmp"
        cmds.append(f"ln -sfn {q(previous)} {q(prev_tmp)} && mv -T {q(prev_tmp)} {q(L.INSTALL_ROOT + '/previous')}")
    cmds.append(f"ln -sfn {q(prefix)} {q(tmp)} && mv -T {q(tmp)} {q(L.CURRENT)}")
    return cmds


def prune_candidates(listing: str, keep: int, protect: tuple[str, ...] = (),
                     after_switch: tuple[str, str | None] | None = None) -> list[str]:
    """Pure: installed build dirs to remove, oldest first beyond `keep`; current, previous and `protect` (the last
    healthy build, which a rollback restores) are never removed. `after_switch` (new current, old current): the
    listing is read before the switch, so judge it as the switch leaves it."""
    builds, current, previous = [], None, None
    for line in listing.splitlines():
        if line.startswith("@@current "):
            current = line.split(" ", 1)[1].strip().rsplit("/", 1)[-1] or None
        elif line.startswith("@@previous "):
            previous = line.split(" ", 1)[1].strip().rsplit("/", 1)[-1] or None
        elif line.strip():
            stamp, _, name = line.strip().partition(" ")
            try:
                builds.append((float(stamp), name))
            except ValueError:
                continue
    builds.sort(reverse=True)
    if after_switch:
        new, old = (p.rsplit("/", 1)[-1] if p else None for p in after_switch)
        current, previous = new, (old if old and old != new else previous)
        if new and new not in {n for _, n in builds}:
            builds.insert(0, (float("inf"), new))
    protected = {current, previous, *protect}
    kept = [n for _, n in builds if n in protected]
    drop = []
    for _, name in builds:
        if name in protected:
            continue
        if len(kept) < keep:
            kept.append(name)
        else:
            drop.append(name)
    return drop
