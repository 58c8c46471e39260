"""`edgekit build`: build llama.cpp on the device for its GPU (or CPU with --cpu), once per version and flags."""

from __future__ import annotations

import os
from typing import Optional

import typer

from edgekit.llamacpp.spec import LLAMA_CPP_VERSION, BuildSpec
from edgekit.llamacpp.steps import run_build
from edgekit.cli.app import app
from edgekit.cli.common import Json, Login, logs_in
from edgekit.cli.options import CmakeFlag, Cpu, CpuLevel, CudaArch, DryRun, Jobs, LlamaSrc, SkipDeps, Target
from edgekit.console import StepPrinter, emit_json, say
from edgekit.errors import EdgekitError
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Context
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
