"""`edgekit build`: build llama.cpp on the device for its GPU (or CPU with --cpu), once per version and flags."""

from __future__ import annotations

import os
import time
from typing import Optional

import typer

from edgekit.facts.device import read_facts
from edgekit.llamacpp import cross
from edgekit.llamacpp.packs import InstallPack
from edgekit.llamacpp.source import resolve_source
from edgekit.llamacpp.spec import LLAMA_CPP_VERSION, BuildSpec
from edgekit.llamacpp.steps import run_build
from edgekit.cli.app import app
from edgekit.cli.common import Json, Login, logs_in
from edgekit.cli.options import CmakeFlag, Cpu, CpuLevel, CudaArch, DryRun, Jobs, LlamaSrc, SkipDeps, Target
from edgekit.console import StepPrinter, emit_json, say
from edgekit.errors import EdgekitError
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Context, run_steps
from edgekit.settings import resolve


@app.command()
@logs_in
def build(
    target: Target,
    llama_src: LlamaSrc = None,
    cpu: Cpu = False,
    cuda_arch: CudaArch = None,
    jobs: Jobs = None,
    version: Optional[str] = typer.Option(None, "--version", help="llama.cpp release tag to git clone "
                                          "(default: the pinned one)."),
    cmake_flag: CmakeFlag = None,
    repo: Optional[str] = typer.Option(None, "--repo", help="git repository to clone the tag from "
                                       "(default: github.com/ggml-org/llama.cpp; e.g. a local mirror)."),
    skip_deps: SkipDeps = False,
    keep: int = typer.Option(3, "--keep", help="Installed builds to keep (current and previous always kept)."),
    cpu_level: CpuLevel = None,
    cross: bool = typer.Option(False, "--cross", help="Compile on this controller with Debian's cross compiler for "
                               "the device's machine (CPU only: with --cpu), pack it, then install the pack on the "
                               "device (gated there). See docs/aarch64-standin.md."),
    dry_run: DryRun = False,
    json_out: bool = Json,
    login: Login = Login(),
) -> None:
    """Build llama.cpp on the device (CMake, CUDA for its GPU arch, ccache) and make it current."""
    arch = cuda_arch if cuda_arch is not None else os.environ.get("CUDA_DOCKER_ARCH")
    checked = resolve({"cmake_flags": cmake_flag or None, "jobs": jobs, "cpu_level": cpu_level, "cuda_arch": arch,
                       "llama_src": llama_src})
    spec = BuildSpec(version=version or LLAMA_CPP_VERSION, source=llama_src, cpu_only=bool(cpu), cuda_arch=arch,
                     jobs=jobs, keep=keep, extra_flags=tuple(checked.cmake_flags), install_deps=not skip_deps,
                     cpu_level=cpu_level, **({"repo": repo} if repo else {}))
    if cross:
        _cross_build(target, spec, dry_run, json_out, login)
        return
    with login.open(target) as t:
        ctx = Context(transport=t, dry_run=dry_run, reporter=StepPrinter())
        try:
            with device_lock(t, "build", enabled=not dry_run):
                results = run_build(ctx, spec)
        except EdgekitError as e:
            if json_out:
                emit_json({"target": target, "ok": False, "error": e.message,
                           "steps": [r.to_json() for r in ctx.results]})
            raise
    build = ctx.run.build
    info = {"prefix": build.prefix, "bin_dir": build.bin_dir, "current": build.current, "stamp": build.stamp} \
        if build else {}
    if json_out:
        emit_json({"target": target, "ok": True, "dry_run": dry_run, **info,
                   "steps": [r.to_json() for r in results]})
    elif info.get("stamp") and not dry_run:
        s = info["stamp"]
        say(f"llama.cpp {s['version']} ({s['backend']}{' sm_' + s['cuda_arch'] if s.get('cuda_arch') else ''}, "
            f"CPU {s.get('cpu_level') or 'native'}) at {info['prefix']} is {info['current']} "
            f"(built {s.get('built_at')} in {s.get('duration_s', 0):.0f}s; passed the gate on this device)")
        if any(r.step == "llama-current" and r.status == "changed" for r in results):
            say(f"a running edgekit service keeps its old build until it restarts: run `edgekit provision "
                f"{target}` to restart it through the health check (it rolls back if unhealthy)")


def _cross_build(target: str, spec: BuildSpec, dry_run: bool, json_out: bool, login: Login) -> None:
    """`build --cross`: the device's facts plan it, this controller compiles and packs it, the device installs the
    pack with the verified pack step (machine checked, gated, then current)."""
    with login.open(target) as t:
        ctx = Context(transport=t, dry_run=dry_run, reporter=StepPrinter())
        ctx.run.facts = read_facts(t, spec.cuda_arch)
        cp = cross.plan_cross(ctx.run.facts, spec, resolve_source(spec))
        p = cp.plan
        tarball = cross.cached_pack(cp)
        what = f"llama.cpp {p.version} for {p.arch} ({p.flags_summary()}, flags {p.flags_hash})"
        if tarball is not None:
            say(f"{what}: the pack is in this controller's cache ({tarball})")
        elif dry_run:
            say(f"would cross-build {what} on this controller ({cp.toolchain.cc}, {cp.jobs} jobs) under {cp.work}:")
            for command in cp.commands():
                say(("  $ ", "dim"), command)
            say(f"then pack it as {p.id}.tar.gz in the controller's pack cache and install it on {target} "
                "(upload, sha256 check, unpack, gate, then `current`)")
            if json_out:
                emit_json({"target": target, "ok": True, "dry_run": True, "id": p.id, "commands": cp.commands()})
            return
        else:
            say(f"cross-building {what} on this controller ({cp.toolchain.cc}, {cp.jobs} jobs; log {cp.log})")
            start = time.monotonic()
            tarball = cross.build_pack(cp, progress=lambda m: say((m, "dim")))
            say(f"packed {tarball.name} in {time.monotonic() - start:.0f}s")
        with device_lock(t, "build", enabled=not dry_run):
            results = run_steps(ctx, [InstallPack(tarball, spec.keep)])
    if json_out:
        emit_json({"target": target, "ok": True, "dry_run": dry_run, "id": p.id, "pack": str(tarball),
                   "prefix": p.prefix, "steps": [r.to_json() for r in results]})
