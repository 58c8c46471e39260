"""Making a build `current`: the gate that must pass first, the atomic switch, the previous build kept, pruning.

`gate_plan` is the step decision shared by a fresh build (steps.LlamaGate) and a pack from another host
(packs.InstallPack): Noop when this build already passed the gate on this device, else the gate run.
"""

from __future__ import annotations

import shlex

from edgekit import layout as L
from edgekit.build import spec as S
from edgekit.build.gate import GateRefused, GateRun, parse_record, read_record_command, record, run_gate, \
    sandbox_properties
from edgekit.build.stamp import describe, installed_command, parse_installed
from edgekit.errors import UnsuitableDevice
from edgekit.remote.plan import Change, Context, Noop

q = shlex.quote


def installed(ctx: Context, prefix: str) -> dict:
    return parse_installed(ctx.transport.run(installed_command(prefix), check=False).stdout)


def gate_run_for(ctx: Context, build_id: str, prefix: str, gpu: bool) -> GateRun:
    """The gate's commands for one build, with the real unit's sandbox (as rendered for this device)."""
    from edgekit.service.settings import render_unit

    groups = [g for g in ctx.transport.run("getent group video render | cut -d: -f1", check=False).stdout.split()
                      if g in L.GPU_GROUPS]   # only the names asked for reach a command
    unit = render_unit({"edgekit_private_devices": not gpu, "edgekit_service_groups": groups})
    version = ctx.transport.run("systemctl --version", check=False).stdout.split()
    props = sandbox_properties(unit, int(version[1]) if len(version) > 1 and version[1].isdigit() else None)
    if not ctx.transport.run(f"id -u {q(L.SERVICE_USER)}", check=False).ok:
        # `edgekit build` before any provision: no service user yet; a transient one has the same rights.
        props = [p for p in props if not p.startswith(("User=", "Group=", "SupplementaryGroups="))]
        props.append("DynamicUser=yes")
    facts = ctx.state.get("facts")
    threads = max(1, min(4, (facts.cpus if facts else None) or 2))
    return GateRun(build_id, f"{prefix}/bin", gpu, props, threads)


def gate_plan(ctx: Context, prefix: str, build_id: str, gpu: bool, cpu_level: str | None = None,
              lower=None, what: str = "build") -> Noop | Change:
    """Noop when this build already passed the gate on this device; else the gate run (raises GateRefused)."""
    rec = parse_record(ctx.transport.run(read_record_command(prefix), check=False).stdout)
    if rec and rec.get("ok") and rec.get("build") == build_id:
        return Noop(f"passed the gate here at {rec.get('at')}: {rec.get('reason')}")
    run = gate_run_for(ctx, build_id, prefix, gpu)

    def apply(c: Context) -> None:
        c.progress("gate: starting the new llama-server in the service sandbox")
        verdict = run_gate(c.transport, run, progress=c.progress)
        record(c.transport, prefix, verdict, build_id)
        if verdict.ok:
            return
        refused_level = None
        if verdict.signal == "SIGILL" and cpu_level and lower is not None:
            c.sudo(f"install -d -m 0755 {q(L.STATE_DIR)} && echo {q(cpu_level + ' SIGILL')} >> {q(L.CPU_REFUSED)}")
            refused_level = cpu_level
        current = c.transport.run(f"readlink {q(S.CURRENT)}", check=False).stdout.strip() or "none"
        message = (f"the new {what} {build_id} failed the gate on {c.transport.name}: {verdict.reason}. "
                   f"`current` is unchanged ({current.rsplit('/', 1)[-1]}); the {what} and its log are kept "
                   f"({c.transport.name}:{verdict.log})")
        hint = verdict.hint
        if refused_level:
            hint = f"edgekit records {cpu_level} as unusable here and builds {lower.name} instead"
        raise GateRefused(message, verdict, refused_level, hint=hint)

    return Change(f"prove {build_id} runs here: its llama-server on a tiny model in the service's sandbox"
                  + (", every layer on the GPU" if gpu else ""), run.commands(), apply=apply)


def switch_plan(ctx: Context, prefix: str, keep: int) -> Noop | Change:
    inst = installed(ctx, prefix)
    ctx.state["build"] = {"prefix": prefix, "bin_dir": f"{prefix}/bin", "current": S.CURRENT, "stamp": inst["stamp"]}
    if inst["current"] == prefix and inst["stamp"]:
        return Noop(f"{describe(inst['stamp'])} already built at {prefix} (current)")
    if not ctx.dry_run:
        rec = parse_record(ctx.transport.run(read_record_command(prefix), check=False).stdout)
        if not (rec and rec.get("ok")):
            raise UnsuitableDevice(f"{prefix} has not passed the build gate on {ctx.transport.name}: not switching "
                                   "to it", hint=f"run `edgekit build {ctx.transport.name}` to gate it")
    commands = switch_commands(prefix, inst["current"]) + [f"prune builds beyond the newest {keep}"]

    def apply(c: Context) -> None:
        for command in switch_commands(prefix, inst["current"]):
            c.sudo(command)
        prune(c, keep)
        now = installed(c, prefix)
        c.state["build"]["stamp"] = now["stamp"]

    return Change(f"switch {S.CURRENT} -> {prefix}" + (f" (previous: {inst['current']})" if inst["current"] else ""),
                  commands, apply=apply)


def switch_commands(prefix: str, previous: str | None) -> list[str]:
    tmp = f"{S.CURRENT}.edgekit-tmp"
    cmds = []
    if previous and previous != prefix:
        prev_tmp = f"{S.INSTALL_ROOT}/previous.edgekit-tmp"
        cmds.append(f"ln -sfn {q(previous)} {q(prev_tmp)} && mv -T {q(prev_tmp)} {q(S.INSTALL_ROOT + '/previous')}")
    cmds.append(f"ln -sfn {q(prefix)} {q(tmp)} && mv -T {q(tmp)} {q(S.CURRENT)}")
    return cmds


LIST_BUILDS = (f"cd {S.INSTALL_ROOT} 2>/dev/null && find . -mindepth 1 -maxdepth 1 -type d ! -name '*.partial' "
               f"-printf '%T@ %f\\n'; echo \"@@current $(readlink current)\"; echo \"@@previous $(readlink previous)\"")


def prune_candidates(listing: str, keep: int, protect: tuple[str, ...] = ()) -> list[str]:
    """Pure: installed build dirs to remove, oldest first beyond `keep`; current, previous and `protect` (the last
    healthy build, which a rollback restores) are never removed."""
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


def prune(ctx: Context, keep: int) -> list[str]:
    import json

    try:
        healthy = json.loads(ctx.sudo(f"cat {q(L.HEALTHY)}", check=False).stdout or "{}").get("build") or ""
    except ValueError:
        healthy = ""
    drop = prune_candidates(ctx.transport.run(LIST_BUILDS, check=False).stdout, keep,
                            (healthy.rsplit("/", 1)[-1],) if healthy else ())
    for name in drop:
        ctx.sudo(f"rm -rf {q(S.INSTALL_ROOT + '/' + name)}")
    return drop
