"""The build steps: dependencies, source, compile, install (verified), gate, switch `current`. Public API:

    from edgekit.llamacpp.spec import BuildSpec
    from edgekit.llamacpp.steps import run_build
    run_build(ctx, BuildSpec(source=..., cpu_only=...))

Uses ctx.run.facts (a DeviceFacts) when present, else reads the facts itself; leaves ctx.run.build (BuildState).
A build that fails leaves the previous `current` untouched; the full log stays on the device.
The gate and the switch of `current`: edgekit.llamacpp.current; build once, deploy many: edgekit.llamacpp.packs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgekit import layout as L
from edgekit import lockfile
from edgekit.facts import isa
from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import BuildPlan, SourceInfo, parse_progress, plan_build
from edgekit.llamacpp.current import CpuLevelRefused, gate_plan, switch_plan
from edgekit.llamacpp.gate import GateRefused
from edgekit.llamacpp.source import fetch_commands, remote_tarball, resolve_source
from edgekit.llamacpp.stamp import describe, make_stamp, stamp_matches
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.facts.deployed import BuiltOn, DebPackages, FileSha256, InstalledBuild, SourceMarker
from edgekit.facts.device import DeviceFacts, read_facts, require_supported
from edgekit.remote.command import Check, Local, Upload, q, sh
from edgekit.remote.lock import work_locked
from edgekit.remote.plan import Change, Context, Noop, run_steps


def build_steps(spec: S.BuildSpec) -> list:
    """The steps that make `spec` the device's current llama.cpp build (the gate before `current` moves)."""
    return [BuildDeps(spec), LlamaSource(spec), LlamaCompile(spec), LlamaInstall(spec), LlamaGate(spec),
            LlamaCurrent(spec)]


def run_build(ctx: Context, spec: S.BuildSpec) -> list:
    """Run the build steps; when the gate refuses an automatically chosen CPU level (SIGILL), the level is
    recorded on the device (facts then exclude it) and the next lower level is built, until one passes."""
    results: list = []
    refused: set[str] = set()
    while True:
        try:
            results += run_steps(ctx, build_steps(spec))
            return results
        except GateRefused as e:
            if not e.cpu_level or spec.cpu_level is not None or e.cpu_level in refused:
                raise               # explicit level, no lower level, or the record did not take: never loop
            refused.add(e.cpu_level)
            results += run_steps(ctx, [CpuLevelRefused(e.cpu_level)])
            ctx.run.resolved_builds.pop(spec, None)
            ctx.run.facts = read_facts(ctx.transport, spec.cuda_arch)
            ctx.reporter.progress("llama-gate", f"{e.cpu_level} refused here ({e.verdict.signal}); "
                                  "building the next lower CPU level")


# -- shared resolution (once per run) -------------------------------------------------------------------------
@dataclass
class Resolved:
    facts: DeviceFacts
    source: SourceInfo
    plan: BuildPlan


def resolve_build(ctx: Context, spec: S.BuildSpec) -> Resolved:
    if spec not in ctx.run.resolved_builds:
        facts = ctx.run.facts or read_facts(ctx.transport, spec.cuda_arch)
        require_supported(facts)
        source = resolve_source(spec)
        ctx.run.resolved_builds[spec] = Resolved(facts, source, plan_build(facts, spec, source))
    return ctx.run.resolved_builds[spec]


def _built_noop(ctx: Context, r: Resolved) -> Noop | None:
    inst = ctx.fact(InstalledBuild(r.plan.prefix))
    if inst["server"] and stamp_matches(inst["stamp"], r.plan):
        return Noop(f"not needed: {describe(inst['stamp'])} already built at {r.plan.prefix}")
    return None


def logged(command: str, log: str, env: dict[str, str]) -> str:
    """`command` as root with its output appended to the device log, under the work lock, its exit status kept."""
    exports = "".join(f"export {k}={q(v)}; " for k, v in env.items())
    return work_locked(f"{exports}mkdir -p {q(L.LOG_DIR)} && echo {q('$ ' + command)} >> {q(log)} && "
                       f"rc_file=$(mktemp) && {{ {command} ; echo $? > \"$rc_file\"; }} 2>&1 | tee -a {q(log)}; "
                       "rc=$(cat \"$rc_file\"); rm -f \"$rc_file\"; exit $rc")


def _run_logged(ctx: Context, op: str, command: str, log: str, on_line=None, what: str = "build") -> None:
    """Run a `logged` op; on failure raise with the log path and its tail."""
    res = ctx.do(op, on_line=on_line, check=False)
    if res.exit_code != 0:
        tail = ctx.read(f"tail -n 40 {q(log)}").stdout or res.stdout + res.stderr
        raise RemoteCommandFailed(
            command, res.exit_code, tail,
            message=f"llama.cpp {what} failed on {ctx.transport.name} (exit {res.exit_code}); "
                    f"full log: {ctx.transport.name}:{log}",
            hint=f"read the log (`ssh {ctx.transport.name} sudo less {log}`); the previous `current` build "
                 "still serves. Out of memory (cc1plus/nvcc killed)? retry with --jobs 1 or add swap")


# -- steps ----------------------------------------------------------------------------------------------------
class _BuildStep:
    """A step of one build: `plan` resolves the build once per run; steps before the install are no-ops once this
    very build is installed (`until_installed`), else `decide(ctx, r)` compares and plans."""

    name = ""
    until_installed = False

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve_build(ctx, self.spec)
        return (self.until_installed and _built_noop(ctx, r)) or self.decide(ctx, r)

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        raise NotImplementedError


class BuildPlanned(_BuildStep):
    """The build decided from facts alone (source, CUDA or CPU level, disk, jobs): refusals come before changes."""

    name = "build plan"

    def decide(self, ctx: Context, r: Resolved) -> Noop:
        p = r.plan
        return Noop(f"{p.id}: {p.flags_summary()}, {p.jobs_note}")


UNREACHABLE = ("Temporary failure resolving", "Could not resolve", "Failed to fetch", "Connection timed out",
               "Unable to connect", "Network is unreachable", "Could not connect")


class BuildDeps(_BuildStep):
    """Build tools installed with apt when missing (checked first, so a second run installs nothing)."""

    name = "build-deps"
    until_installed = True

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        present = ctx.fact(DebPackages(S.BUILD_DEPS))
        if present is None:
            raise UnsuitableDevice(f"{ctx.transport.name} has no dpkg: edgekit installs build tools with apt",
                                   hint=f"install {' '.join(S.BUILD_DEPS)} yourself, then re-run")
        missing = [p for p in S.BUILD_DEPS if p not in present]
        if not missing:
            return Noop(f"build dependencies present ({', '.join(S.BUILD_DEPS)})")
        if not self.spec.install_deps:
            return Noop(f"not installing missing {' '.join(missing)} (--skip-deps); the build may fail without them")
        ops = [f"apt-get update -q --error-on=any {S.APT_OPTS}",
               f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {S.APT_OPTS} "
               + sh(*missing)]
        hint = (f"the device could not reach its apt mirror (see the output above): fix its network or mirror, or "
                f"install {' '.join(missing)} offline and run again with --skip-deps")

        def apply(c: Context) -> None:
            for op in ops:
                res = c.do(op, check=False, timeout=1800)
                if not res.ok:
                    unreachable = any(s in res.stdout + res.stderr for s in UNREACHABLE)
                    raise RemoteCommandFailed(op, res.exit_code, res.stdout + res.stderr,
                                              message=("apt cannot reach its mirror on " if unreachable else
                                                       "apt failed on ") + c.transport.name, hint=hint)

        return Change(f"install {' '.join(missing)}", ops, apply=apply)


class LlamaSource(_BuildStep):
    """llama.cpp's source unpacked (or cloned) in the build directory on the device."""

    name = "llama-source"
    until_installed = True

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        src, p = r.source, r.plan
        if ctx.fact(SourceMarker(p.src_dir)) == src.digest:
            return Noop(f"source {src.version} already at {p.src_dir}")
        ops: list = []
        if src.kind == "tarball" and src.url:      # a source by URL: its first download is recorded in edgekit.lock
            ops.append(Local(f"check or record {src.url} sha256 {src.digest[:16]}… in edgekit.lock"))
        if src.kind == "tarball":
            remote = remote_tarball(src)
            if ctx.fact(FileSha256(remote)) != src.digest:
                ops += [sh("mkdir", "-p", S.SOURCE_CACHE), Upload(remote, local=src.local, sha256=src.digest),
                        Check(f"sha256 of {remote} is {src.digest}")]
            what = f"push {Path(src.local).name} and unpack"
        else:
            what = f"git clone {src.url} at {src.digest}"
        ops += fetch_commands(src, p.src_dir)
        return Change(f"{what} into {p.src_dir}", ops, apply=lambda c: self._apply(c, r, ops))

    def _apply(self, ctx: Context, r: Resolved, ops: list) -> None:
        src = r.source
        for op in ops:
            if isinstance(op, Local):
                lockfile.check_or_record("sources", src.url, src.digest, src.url)
            elif isinstance(op, Upload):
                ctx.progress(f"uploading {Path(src.local).name}")
                ctx.do(op)
            elif isinstance(op, Check):
                remote = remote_tarball(src)
                got = ctx.read(f"sha256sum {q(remote)}", sudo=False).stdout.split()
                if not got or got[0] != src.digest:
                    ctx.read(f"rm -f {q(remote)}")         # cleanup after a refusal: not a planned change
                    raise RemoteCommandFailed(op.text, 1, " ".join(got), message=f"uploaded source {remote} does "
                                              f"not match sha256 {src.digest}",
                                              hint="retry; check the device's disk is not full")
            else:
                hint = None
                if src.kind == "git" and op.startswith("git clone"):
                    hint = (f"is {src.digest!r} a llama.cpp release tag (like {S.LLAMA_CPP_VERSION}), and does the "
                            f"device reach {src.url}? Without internet, pass --llama-src PATH")
                ctx.progress("unpacking source" if src.kind == "tarball" else f"cloning {src.digest}")
                ctx.do(op, hint=hint)


class LlamaCompile(_BuildStep):
    """llama.cpp configured with CMake and compiled (only the targets edgekit uses), with ccache."""

    name = "llama-compile"
    until_installed = True

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        p = r.plan
        summary = f"build llama.cpp {p.version} ({p.flags_summary()}) with {p.jobs_note}; log {p.log}"
        ops = [f"mkdir -p {q(S.CCACHE_DIR)} {q(S.LOG_DIR)} && : > {q(p.log)}",
               logged(p.configure_command(), p.log, p.env), logged(p.build_command(), p.log, p.env)]
        return Change(summary, ops, apply=lambda c: self._apply(c, r, ops),
                      detail={"jobs": p.jobs, "flags_hash": p.flags_hash})

    def _apply(self, ctx: Context, r: Resolved, ops: list) -> None:
        p = r.plan
        start = time.monotonic()
        ctx.do(ops[0])
        ctx.progress("configuring")
        _run_logged(ctx, ops[1], p.configure_command(), p.log, what="configure")

        def on_line(line: str) -> None:
            got = parse_progress(line)
            if got:
                n, total, what = got
                ctx.progress(f"[{n}/{total}] {what.rsplit('/', 1)[-1]}", n, total)

        _run_logged(ctx, ops[2], p.build_command(), p.log, on_line=on_line)
        ctx.run.build_seconds = time.monotonic() - start


class LlamaInstall(_BuildStep):
    """The built binaries verified (run, and CUDA linked when expected), installed to the versioned prefix."""

    name = "llama-install"
    until_installed = True

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        p, part = r.plan, f"{r.plan.prefix}.partial"
        bins = " ".join(q(f"{p.build_dir}/bin/{t}") for t in p.targets)
        ops = [*verify_checks(f"{p.build_dir}/bin/llama-server"),
               f"rm -rf {q(part)} && mkdir -p {q(part)}/bin {q(part)}/lib && cp -a {bins} {q(part)}/bin/ && "
               f"cp -a {q(p.build_dir)}/bin/*.so* {q(part)}/lib/",
               Upload(f"{part}/{S.STAMP_NAME}", made_by_run="the build stamp (version, flags, linked libraries)"),
               *verify_checks(f"{part}/bin/llama-server"),          # the installed copy finds its own libs
               f"rm -rf {q(p.prefix)} && mv {q(part)} {q(p.prefix)} && rm -rf {q(p.work_dir)}"]
        return Change(f"verify and install to {p.prefix}", ops, apply=lambda c: self._apply(c, r, ops))

    def _apply(self, ctx: Context, r: Resolved, ops: list) -> None:
        p = r.plan
        linked = verify_binary(ctx, f"{p.build_dir}/bin/llama-server", p)
        ctx.do(ops[2])
        built_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        stamp = make_stamp(p, r.source, ctx.run.build_seconds, built_at, linked, built_on=ctx.fact(BuiltOn()))
        ctx.do(ops[3].with_text(json.dumps(stamp, indent=2) + "\n"))
        verify_binary(ctx, f"{p.prefix}.partial/bin/llama-server", p)
        ctx.do(ops[6])


def verify_checks(server: str) -> list[Check]:
    return [Check(f"{q(server)} --version 2>&1"), Check(f"ldd {q(server)}")]


def verify_binary(ctx: Context, server: str, plan: BuildPlan) -> list[str]:
    """Run `llama-server --version`; when CUDA was expected, fail loudly unless libggml-cuda is linked."""
    res = ctx.read(f"{q(server)} --version 2>&1")
    if res.exit_code != 0 or "version" not in res.stdout:
        raise RemoteCommandFailed(f"{server} --version", res.exit_code, res.stdout + res.stderr,
                                  message=f"the built llama-server does not run on {ctx.transport.name}",
                                  hint="see the output above; rebuild (remove the prefix) or check missing libraries")
    libs = linked_ggml(ctx.read(f"ldd {q(server)}").stdout)
    if plan.backend == "cuda" and "libggml-cuda" not in libs:
        raise RemoteCommandFailed(
            f"ldd {server}", 1, "\n".join(libs),
            message=f"CUDA was expected but the built llama-server is CPU-only (no libggml-cuda linked: "
                    f"{', '.join(libs) or 'no ggml libraries'})",
            hint=f"check that CMake found CUDA in the build log ({plan.log}); nvcc {plan.nvcc}")
    if any("not found" in line for line in libs):
        raise RemoteCommandFailed(f"ldd {server}", 1, "\n".join(libs),
                                  message="the built llama-server has unresolved libraries")
    return libs


def linked_ggml(ldd_output: str) -> list[str]:
    """ggml/llama libraries named by `ldd` output, e.g. ['libggml-base', 'libggml-cpu', 'libggml-cuda', ...]."""
    found = []
    for line in ldd_output.splitlines():
        name = line.strip().split(" ", 1)[0]
        if name.startswith(("libggml", "libllama", "libmtmd")):
            base = name.split(".so", 1)[0]
            found.append(base + (" (not found)" if "not found" in line else ""))
    return sorted(set(found))


class LlamaGate(_BuildStep):
    """The new build's llama-server runs for real on the device, in the service's sandbox, before `current` moves."""

    name = "llama-gate"

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        p = r.plan
        auto = self.spec.cpu_level is None and p.cpu_level is not None
        return gate_plan(ctx, p.prefix, p.id, p.backend == "cuda", p.cpu_level if auto else None,
                         lower=isa.lower(p.arch, next((lv for lv in isa.levels_for(p.arch)
                                                       if lv.name == p.cpu_level), None)) if auto else None)


class LlamaCurrent(_BuildStep):
    """`current` points at the build (switched atomically); the previous one kept, older ones pruned."""

    name = "llama-current"

    def decide(self, ctx: Context, r: Resolved) -> Noop | Change:
        return switch_plan(ctx, r.plan.prefix, self.spec.keep)


