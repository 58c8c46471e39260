"""Build once, deploy many: pack an installed build on its builder, fetch it to the controller cache, install it
on another device (checked member by member, gated there, then made current)."""

from __future__ import annotations

import json
from pathlib import Path

from edgekit import layout as L
from edgekit import paths
from edgekit.facts import isa
from edgekit.llamacpp.current import gate_ops, gate_plan, gate_run_for, known_settings, switch_ops, switch_plan
from edgekit.llamacpp.gate import GateRefused, record_text, record_upload, run_gate
from edgekit.llamacpp.pack import checked_unpack_command
from edgekit.facts.build import parse_stamp
from edgekit.digest import sha256_file
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice, UsageError
from edgekit.facts.deployed import InstalledBuild
from edgekit.facts.system import Arch
from edgekit.remote.command import Upload, q
from edgekit.remote.plan import Change, Context, Noop
from edgekit.remote.run_state import BuildState


def pack_build(ctx: Context, prefix: str = L.CURRENT) -> dict:
    """On the device: tar an installed build (with its stamp) into PACK_DIR; -> {'remote', 'sha256', 'stamp'}."""
    real = ctx.transport.run(f"readlink -f {q(prefix)}").stdout.strip()
    stamp = parse_stamp(ctx.transport.run(f"cat {q(real)}/{L.STAMP_NAME}", check=False).stdout)
    if not stamp:
        raise UsageError(f"no llama.cpp build at {prefix} on {ctx.transport.name}",
                         hint=f"build one first: `edgekit build {ctx.transport.name}`")
    name = real.rsplit("/", 1)[-1]
    remote = f"{L.PACK_DIR}/{name}.tar.gz"
    ctx.sudo(f"mkdir -p {q(L.PACK_DIR)} && tar -C {q(L.INSTALL_ROOT)} --exclude={L.GATE_NAME} -czf {q(remote)}.partial {q(name)} && "
             f"mv {q(remote)}.partial {q(remote)}")
    sha = ctx.transport.run(f"sha256sum {q(remote)}").stdout.split()[0]
    return {"remote": remote, "name": name, "sha256": sha, "stamp": stamp}


def fetch_pack(ctx: Context, pack: dict) -> Path:
    """Copy a packed build to the controller cache (builds/<name>.tar.gz + .json), verified by sha256."""
    local = paths.cache() / "builds" / f"{pack['name']}.tar.gz"
    if local.is_file() and sha256_file(local) == pack["sha256"]:
        return store_pack(None, pack)
    local.parent.mkdir(parents=True, exist_ok=True)
    part = local.with_suffix(".partial")
    ctx.transport.get(pack["remote"], part)
    if sha256_file(part) != pack["sha256"]:
        part.unlink(missing_ok=True)
        raise RemoteCommandFailed(f"get {pack['remote']}", 1, "", message="fetched build does not match its sha256",
                                  hint="retry the fetch")
    return store_pack(part, pack)


def store_pack(part: Path | None, pack: dict) -> Path:
    """Put a verified pack (`part`, or the one already there when None) into the controller's pack cache as
    builds/<name>.tar.gz, with builds/<name>.json ({name, sha256, stamp}) beside it; -> the tarball."""
    dest = paths.cache() / "builds"
    dest.mkdir(parents=True, exist_ok=True)
    local = dest / f"{pack['name']}.tar.gz"
    if part is not None:
        Path(part).replace(local)
    meta = dest / f"{pack['name']}.json.partial"
    meta.write_text(json.dumps({k: pack[k] for k in ("name", "sha256", "stamp")}, indent=2))
    meta.replace(dest / f"{pack['name']}.json")
    return local


def require_machine(stamp: dict, name: str, machine: str | None, target: str) -> None:
    """Pure: refuse a pack unless its stamp records the machine it was built for and the device is that machine.

    Explicit, before anything is uploaded: the gate alone is not enough, because an emulated device (an aarch64
    stand-in under qemu-user) runs an x86_64 binary natively on its host's kernel and would pass it."""
    built_for = stamp.get("arch")
    hint = (f"build for it: `edgekit build {target}` (on the device) or `edgekit build {target} --cross --cpu` "
            "(on this controller)")
    if not built_for:
        raise UnsuitableDevice(f"the packed build {name} does not record the machine it was built for; refused "
                               "before anything changed", hint=hint)
    if not machine:
        raise UnsuitableDevice(f"cannot tell the machine of {target} (`uname -m` said nothing); the packed build "
                               f"{name} is for {built_for}: refused before anything changed",
                               hint=f"see `edgekit facts {target}`")
    if built_for != machine:
        raise UnsuitableDevice(f"the packed build {name} is for {built_for} and {target} is {machine}: refused "
                               "before anything changed", hint=hint)


class InstallPack:
    """A packed build (tarball from fetch_pack) installed at its versioned prefix and made current."""

    name = "llama-install-pack"

    def __init__(self, tarball: str | Path, keep: int = 3):
        self.tarball = Path(tarball)
        meta = json.loads(self.tarball.with_name(self.tarball.name.removesuffix(".tar.gz") + ".json").read_text())
        self.pack_name, self.sha256, self.stamp, self.keep = meta["name"], meta["sha256"], meta["stamp"], keep

    @property
    def prefix(self) -> str:
        return f"{L.INSTALL_ROOT}/{self.pack_name}"

    def plan(self, ctx: Context) -> Noop | Change:
        facts = ctx.run.facts
        require_machine(self.stamp, self.pack_name, facts.arch if facts else ctx.fact(Arch()), ctx.transport.name)
        if facts is not None:
            lacking = isa.missing(set(self.stamp.get("cpu_requires") or ()), facts.cpu_flags)
            if lacking:
                raise UnsuitableDevice(f"the packed build {self.pack_name} needs CPU features this device does not "
                                       f"advertise: {', '.join(lacking)}",
                                       hint=f"build on this device: `edgekit build {ctx.transport.name}`")
        inst = ctx.fact(InstalledBuild(self.prefix))
        gpu = self.stamp.get("backend") == "cuda"
        if inst["server"] and inst["stamp"] and inst["stamp"].get("flags_hash") == self.stamp.get("flags_hash"):
            gate = gate_plan(ctx, self.prefix, self.pack_name, gpu, what="pack")
            if isinstance(gate, Noop):
                return switch_plan(ctx, self.prefix, self.keep)
            ops = gate.commands + switch_ops(ctx, self.prefix, self.keep, inst["current"])

            def gate_then_switch(c: Context) -> None:      # installed earlier but not gated here: gate, then switch
                gate.apply(c)
                for op in ops[len(gate.commands):]:
                    c.do(op)

            return Change(gate.summary + ", then make it current", ops, apply=gate_then_switch)
        remote = f"{L.PACK_DIR}/{self.pack_name}.tar.gz"
        part = f"{self.prefix}.partial"
        run = gate_run_for(ctx, self.pack_name, part, gpu)
        gate = gate_ops(ctx, run, None)
        ops = [f"mkdir -p {q(L.PACK_DIR)}", Upload(remote, local=str(self.tarball), sha256=self.sha256),
               f"echo {q(self.sha256 + '  ' + remote)} | sha256sum -c --quiet",
               checked_unpack_command(self.tarball, self.sha256, self.pack_name, remote, part),
               f"rm -f {q(part)}/{L.GATE_NAME}", *gate, f"rm -rf {q(self.prefix)} && mv {q(part)} {q(self.prefix)}",
               record_upload(self.prefix), *switch_ops(ctx, self.prefix, self.keep, inst["current"])]
        first_gate, after_gate = ops.index(gate[0]), ops.index(gate[-1]) + 1

        def apply(c: Context) -> None:
            for op in ops[:first_gate]:
                c.do(op, **({"hint": "the upload was corrupted; retry"} if "sha256sum -c" in str(op) else {}))
            verdict = run_gate(c, run, gate, self.pack_name)      # first: does it run here at all (SIGILL, ...)
            if not verdict.ok:
                c.read(f"rm -rf {q(part)}")             # the refused pack is not kept
                raise GateRefused(f"the packed build {self.pack_name} failed the gate on {c.transport.name}: "
                                  f"{verdict.reason}. Refused: `current` is unchanged (log {c.transport.name}:"
                                  f"{verdict.log})", verdict,
                                  hint=f"build on this device instead: `edgekit build {c.transport.name}`")
            try:
                known_settings(c, part, self.pack_name, "pack")      # then: does it know every setting we write
            except UnsuitableDevice:
                c.read(f"rm -rf {q(part)}")             # the refused pack is not kept
                raise
            c.do(ops[after_gate])
            c.do(ops[after_gate + 1].with_text(record_text(c, verdict, self.pack_name)))
            for op in ops[after_gate + 2:]:
                c.do(op)
            c.run.build = switch_plan_state(c, self.prefix)

        return Change(f"install packed {self.pack_name}, prove it runs here (gate), make it current", ops,
                      apply=apply)


def switch_plan_state(ctx: Context, prefix: str) -> BuildState:
    return BuildState(prefix, L.CURRENT, ctx.fact(InstalledBuild(prefix))["stamp"])
