"""`edgekit build`: build llama.cpp on the device for its GPU (or CPU with --cpu), once per version and flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from edgekit.cli.app import app
from edgekit.cli.common import AcceptNewHostKey, AskBecomePass, Identity, Json, open_transport
from edgekit.console import StepPrinter, emit_json, say
from edgekit.errors import EdgekitError


@app.command()
def build(
    target: str = typer.Argument(..., help="[user@]host[:port], an ssh_config alias, or `local`."),
    llama_src: Optional[str] = typer.Option(None, "--llama-src", help="llama.cpp source: a directory, a .tar.gz "
                                            "(e.g. the llama-cpp-python sdist) or a URL, pushed to the device."),
    cpu: bool = typer.Option(False, "--cpu", help="Build CPU-only on purpose (refused by default without CUDA)."),
    cuda_arch: Optional[str] = typer.Option(None, "--cuda-arch", help="GPU arch to build for, e.g. 87 or compute_87 "
                                            "(default: from the device; also CUDA_DOCKER_ARCH)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel compile jobs (default: from CPUs and RAM)."),
    version: Optional[str] = typer.Option(None, "--version", help="llama.cpp release tag to git clone "
                                          "(default: the pinned one)."),
    cmake_flag: list[str] = typer.Option([], "--cmake-flag", help="Extra cmake definition -DNAME=VALUE "
                                         "(repeatable; changes the flags hash, so it is a separate build)."),
    repo: Optional[str] = typer.Option(None, "--repo", help="git repository to clone the tag from "
                                       "(default: github.com/ggml-org/llama.cpp; e.g. a local mirror)."),
    skip_deps: bool = typer.Option(False, "--skip-deps", help="Do not apt-get install missing build tools "
                                   "(offline machines that have what they need)."),
    keep: int = typer.Option(3, "--keep", help="Installed builds to keep (current and previous always kept)."),
    cpu_level: Optional[str] = typer.Option(None, "--cpu-level", help="CPU instruction level, e.g. x86-64-v3, "
                                            "armv8.2-a+dotprod+fp16 or native (default: the best that passes the gate)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands that would run; change nothing."),
    json_out: bool = Json,
    identity: Optional[Path] = Identity,
    accept_new_host_key: bool = AcceptNewHostKey,
    ask_become_pass: bool = AskBecomePass,
) -> None:
    """Build llama.cpp on the device (CMake, CUDA for its GPU arch, ccache) and make it current."""
    from edgekit.build.spec import LLAMA_CPP_VERSION, BuildSpec
    from edgekit.build.steps import run_build
    from edgekit.remote.lock import device_lock
    from edgekit.remote.plan import Context
    from edgekit.settings import resolve

    arch = cuda_arch if cuda_arch is not None else os.environ.get("CUDA_DOCKER_ARCH")
    checked = resolve({"cmake_flags": cmake_flag or None, "jobs": jobs, "cpu_level": cpu_level, "cuda_arch": arch,
                       "llama_src": llama_src})
    spec = BuildSpec(version=version or LLAMA_CPP_VERSION, source=llama_src, cpu_only=cpu, cuda_arch=arch,
                     jobs=jobs, keep=keep, extra_flags=tuple(checked.cmake_flags), install_deps=not skip_deps,
                     cpu_level=cpu_level, **({"repo": repo} if repo else {}))
    with open_transport(target, identity, accept_new_host_key, ask_become_pass) as t:
        ctx = Context(transport=t, dry_run=dry_run, reporter=StepPrinter())
        try:
            with device_lock(t, "build", enabled=not dry_run):
                results = run_build(ctx, spec)
        except EdgekitError as e:
            if json_out:
                emit_json({"target": target, "ok": False, "error": e.message,
                           "steps": [r.to_json() for r in getattr(e, "results", [])]})
            raise
    info = ctx.state.get("build") or {}
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
