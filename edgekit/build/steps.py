"""The build steps: dependencies, source, compile, install (verified), switch `current`. Public API:

    from edgekit.build.spec import BuildSpec
    from edgekit.build.steps import build_steps
    run_steps(ctx, build_steps(BuildSpec(source=..., cpu_only=...)))

Reads `ctx.state["facts"]` (a DeviceFacts) when present, else reads facts itself. After the steps,
`ctx.state["build"] = {"prefix": ..., "bin_dir": ..., "current": ..., "stamp": {...} or None (dry run)}`.
A build that fails leaves the previous `current` untouched; the full log stays on the device.
The gate and the switch of `current`: edgekit.build.current; build once, deploy many: edgekit.build.packs.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgekit import lockfile
from edgekit.build import isa
from edgekit.build import spec as S
from edgekit.build.cmake import BuildPlan, SourceInfo, parse_progress, plan_build
from edgekit.build.current import gate_plan, installed, switch_plan
from edgekit.build.gate import GateRefused
from edgekit.build.source import fetch_commands, marker_command, remote_tarball, resolve_source
from edgekit.build.stamp import BUILT_ON_COMMAND, describe, make_stamp, parse_built_on, stamp_matches
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.facts.device import DeviceFacts, read_facts, require_supported
from edgekit.remote.lock import work_locked
from edgekit.remote.plan import Change, Context, Noop, run_steps

q = shlex.quote


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
            results += getattr(e, "results", [])
            if not e.cpu_level or spec.cpu_level is not None or e.cpu_level in refused:
                e.results = results  # type: ignore[attr-defined]
                raise               # explicit level, no lower level, or the record did not take: never loop
            refused.add(e.cpu_level)
            ctx.state.pop(("build-resolved", spec), None)
            ctx.state["facts"] = read_facts(ctx.transport, spec.cuda_arch)
            ctx.reporter.progress("llama-gate", f"{e.cpu_level} refused here ({e.verdict.signal}); "
                                  "building the next lower CPU level")


# -- shared resolution (once per run) -------------------------------------------------------------------------
@dataclass
class Resolved:
    facts: DeviceFacts
    source: SourceInfo
    plan: BuildPlan


def resolve(ctx: Context, spec: S.BuildSpec) -> Resolved:
    key = ("build-resolved", spec)
    if key not in ctx.state:
        facts = ctx.state.get("facts") or read_facts(ctx.transport, spec.cuda_arch)
        require_supported(facts)
        source = resolve_source(spec)
        ctx.state[key] = Resolved(facts, source, plan_build(facts, spec, source))
    return ctx.state[key]


def _built_noop(ctx: Context, r: Resolved) -> Noop | None:
    inst = installed(ctx, r.plan.prefix)
    if inst["server"] and stamp_matches(inst["stamp"], r.plan):
        return Noop(f"not needed: {describe(inst['stamp'])} already built at {r.plan.prefix}")
    return None


def _run_logged(ctx: Context, command: str, log: str, env: dict, on_line=None, what: str = "build") -> None:
    """Run as root, appending all output to the device log; on failure raise with the log path and tail."""
    script = work_locked(f"mkdir -p {q(S.LOG_DIR)} && echo {q('$ ' + command)} >> {q(log)} && "
                         f"rc_file=$(mktemp) && {{ {command} ; echo $? > \"$rc_file\"; }} 2>&1 | tee -a {q(log)}; "
                         "rc=$(cat \"$rc_file\"); rm -f \"$rc_file\"; exit $rc")
    res = ctx.sudo(script, env=env, on_line=on_line, check=False)
    if res.exit_code != 0:
        tail = ctx.transport.sudo(f"tail -n 40 {q(log)}", check=False).stdout or res.stdout + res.stderr
        raise RemoteCommandFailed(
            command, res.exit_code, tail,
            message=f"llama.cpp {what} failed on {ctx.transport.name} (exit {res.exit_code}); "
                    f"full log: {ctx.transport.name}:{log}",
            hint=f"read the log (`ssh {ctx.transport.name} sudo less {log}`); the previous `current` build "
                 "still serves. Out of memory (cc1plus/nvcc killed)? retry with --jobs 1 or add swap")


# -- steps ----------------------------------------------------------------------------------------------------
class BuildPlanned:
    """The build decided from facts alone (source, CUDA or CPU level, disk, jobs): refusals come before changes."""

    name = "build plan"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop:
        p = resolve(ctx, self.spec).plan
        return Noop(f"{p.id}: {p.flags_summary()}, {p.jobs_note}")


class BuildDeps:
    """Build tools installed with apt when missing (checked first, so a second run installs nothing)."""

    name = "build-deps"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve(ctx, self.spec)
        done = _built_noop(ctx, r)
        if done:
            return done
        out = ctx.transport.run(f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(S.BUILD_DEPS)}",
                                check=False)
        if "command not found" in out.stderr or out.exit_code == 127:
            raise UnsuitableDevice(f"{ctx.transport.name} has no dpkg: edgekit installs build tools with apt",
                                   hint=f"install {' '.join(S.BUILD_DEPS)} yourself, then re-run")
        missing = missing_packages(out.stdout, S.BUILD_DEPS)
        if not missing:
            return Noop(f"build dependencies present ({', '.join(S.BUILD_DEPS)})")
        if not self.spec.install_deps:
            return Noop(f"not installing missing {' '.join(missing)} (--skip-deps); the build may fail without them")
        commands = [f"apt-get update -q --error-on=any {S.APT_OPTS}",
                    f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {S.APT_OPTS} "
                    + " ".join(missing)]
        hint = (f"the device could not reach its apt mirror (see the output above): fix its network or mirror, or "
                f"install {' '.join(missing)} offline and run again with --skip-deps")

        def apply(c: Context) -> None:
            for command in commands:
                res = c.sudo(command, check=False, timeout=1800)
                if not res.ok:
                    unreachable = any(s in res.stdout + res.stderr for s in (
                        "Temporary failure resolving", "Could not resolve", "Failed to fetch", "Connection timed out",
                        "Unable to connect", "Network is unreachable", "Could not connect"))
                    raise RemoteCommandFailed(command, res.exit_code, res.stdout + res.stderr,
                                              message=("apt cannot reach its mirror on " if unreachable else
                                                       "apt failed on ") + c.transport.name, hint=hint)

        return Change(f"install {' '.join(missing)}", commands, apply=apply)


def missing_packages(dpkg_output: str, wanted) -> list[str]:
    ok = {line.split()[0] for line in dpkg_output.splitlines() if line.endswith("install ok installed")}
    return [p for p in wanted if p not in ok]


class LlamaSource:
    """llama.cpp's source unpacked (or cloned) in the build directory on the device."""

    name = "llama-source"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve(ctx, self.spec)
        done = _built_noop(ctx, r)
        if done:
            return done
        src, p = r.source, r.plan
        have = ctx.transport.run(marker_command(p.src_dir), check=False).stdout.strip()
        if have == src.digest:
            return Noop(f"source {src.version} already at {p.src_dir}")
        commands = fetch_commands(src, p.src_dir)
        if src.kind == "tarball":
            size = Path(src.local).stat().st_size / 2**20
            commands = [f"# upload {src.local} ({size:.0f} MiB) -> {remote_tarball(src)}"] + commands
            what = f"push {Path(src.local).name} and unpack"
        else:
            what = f"git clone {src.url} at {src.digest}"
        return Change(f"{what} into {p.src_dir}", commands, apply=lambda c: self._apply(c, r))

    def _apply(self, ctx: Context, r: Resolved) -> None:
        src = r.source
        if src.kind == "tarball" and src.url:      # a source by URL: its first download is recorded in edgekit.lock
            lockfile.check_or_record("sources", src.url, src.digest, src.url)
        if src.kind == "tarball":
            remote = remote_tarball(src)
            have = ctx.transport.run(f"sha256sum {q(remote)} 2>/dev/null", check=False).stdout.split()
            if not have or have[0] != src.digest:
                ctx.progress(f"uploading {Path(src.local).name}")
                ctx.sudo(f"mkdir -p {q(S.SOURCE_CACHE)}")
                ctx.transport.put(src.local, remote, sudo=True)
                got = ctx.transport.run(f"sha256sum {q(remote)}", check=False).stdout.split()
                if not got or got[0] != src.digest:
                    ctx.sudo(f"rm -f {q(remote)}", check=False)
                    raise RemoteCommandFailed(f"sha256sum {remote}", 1, " ".join(got),
                                              message=f"uploaded source {remote} does not match sha256 {src.digest}",
                                              hint="retry; check the device's disk is not full")
        ctx.progress("unpacking source" if src.kind == "tarball" else f"cloning {src.digest}")
        for command in fetch_commands(src, r.plan.src_dir):
            hint = None
            if src.kind == "git" and command.startswith("git clone"):
                hint = (f"is {src.digest!r} a llama.cpp release tag (like {S.LLAMA_CPP_VERSION}), and does the "
                        f"device reach {src.url}? Without internet, pass --llama-src PATH")
            ctx.sudo(command, hint=hint)


class LlamaCompile:
    """llama.cpp configured with CMake and compiled (only the targets edgekit uses), with ccache."""

    name = "llama-compile"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve(ctx, self.spec)
        done = _built_noop(ctx, r)
        if done:
            return done
        p = r.plan
        env = " ".join(f"{k}={v}" for k, v in p.env.items())
        summary = f"build llama.cpp {p.version} ({p.flags_summary()}) with {p.jobs_note}; log {p.log}"
        return Change(summary, [f"mkdir -p {S.CCACHE_DIR} {S.LOG_DIR}", f"{env} {p.configure_command()}",
                                f"{env} {p.build_command()}"],
                      apply=lambda c: self._apply(c, r), detail={"jobs": p.jobs, "flags_hash": p.flags_hash})

    def _apply(self, ctx: Context, r: Resolved) -> None:
        p = r.plan
        start = time.monotonic()
        ctx.sudo(f"mkdir -p {q(S.CCACHE_DIR)} {q(S.LOG_DIR)} && : > {q(p.log)}")
        ctx.progress("configuring")
        _run_logged(ctx, p.configure_command(), p.log, p.env, what="configure")

        def on_line(line: str) -> None:
            got = parse_progress(line)
            if got:
                n, total, what = got
                ctx.progress(f"[{n}/{total}] {what.rsplit('/', 1)[-1]}", n, total)

        _run_logged(ctx, p.build_command(), p.log, p.env, on_line=on_line)
        ctx.state["build-seconds"] = time.monotonic() - start


class LlamaInstall:
    """The built binaries verified (run, and CUDA linked when expected), installed to the versioned prefix."""

    name = "llama-install"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve(ctx, self.spec)
        done = _built_noop(ctx, r)
        if done:
            return done
        p = r.plan
        return Change(f"verify and install to {p.prefix}", [
            f"{p.build_dir}/bin/llama-server --version", f"ldd {p.build_dir}/bin/llama-server",
            f"install {' '.join(p.targets)} and lib*.so* to {p.prefix}.partial, write {S.STAMP_NAME}, "
            f"then mv to {p.prefix}",
        ], apply=lambda c: self._apply(c, r))

    def _apply(self, ctx: Context, r: Resolved) -> None:
        p, part = r.plan, f"{r.plan.prefix}.partial"
        linked = verify_binary(ctx, f"{p.build_dir}/bin/llama-server", p)
        bins = " ".join(q(f"{p.build_dir}/bin/{t}") for t in p.targets)
        ctx.sudo(f"rm -rf {q(part)} && mkdir -p {q(part)}/bin {q(part)}/lib && cp -a {bins} {q(part)}/bin/ && "
                 f"cp -a {q(p.build_dir)}/bin/*.so* {q(part)}/lib/")
        built_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        stamp = make_stamp(p, r.source, ctx.state.get("build-seconds", 0.0), built_at, linked,
                           built_on=parse_built_on(ctx.transport.run(BUILT_ON_COMMAND, check=False).stdout))
        ctx.transport.put_text(json.dumps(stamp, indent=2) + "\n", f"{part}/{S.STAMP_NAME}", sudo=True)
        verify_binary(ctx, f"{part}/bin/llama-server", p)        # the installed copy finds its own libs
        ctx.sudo(f"rm -rf {q(p.prefix)} && mv {q(part)} {q(p.prefix)} && rm -rf {q(p.work_dir)}")
        ctx.state["build-stamp"] = stamp


def verify_binary(ctx: Context, server: str, plan: BuildPlan) -> list[str]:
    """Run `llama-server --version`; when CUDA was expected, fail loudly unless libggml-cuda is linked."""
    res = ctx.sudo(f"{q(server)} --version 2>&1", check=False)
    if res.exit_code != 0 or "version" not in res.stdout:
        raise RemoteCommandFailed(f"{server} --version", res.exit_code, res.stdout + res.stderr,
                                  message=f"the built llama-server does not run on {ctx.transport.name}",
                                  hint="see the output above; rebuild (remove the prefix) or check missing libraries")
    libs = linked_ggml(ctx.sudo(f"ldd {q(server)}", check=False).stdout)
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


class LlamaGate:
    """The new build's llama-server runs for real on the device, in the service's sandbox, before `current` moves."""

    name = "llama-gate"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve(ctx, self.spec)
        p = r.plan
        auto = self.spec.cpu_level is None and p.cpu_level is not None
        return gate_plan(ctx, p.prefix, p.id, p.backend == "cuda", p.cpu_level if auto else None,
                         lower=isa.lower(p.arch, next((lv for lv in isa.levels_for(p.arch)
                                                       if lv.name == p.cpu_level), None)) if auto else None)


class LlamaCurrent:
    """`current` points at the build (switched atomically); the previous one kept, older ones pruned."""

    name = "llama-current"

    def __init__(self, spec: S.BuildSpec):
        self.spec = spec

    def plan(self, ctx: Context) -> Noop | Change:
        r = resolve(ctx, self.spec)
        return switch_plan(ctx, r.plan.prefix, self.spec.keep)


