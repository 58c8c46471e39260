"""Options more than one command takes: one definition each (flag, short flag, help), so commands cannot drift.

Each is an `Annotated` type; a command gives the default it needs: `dry_run: DryRun = False`, and `cpu: Cpu = None`
in `provision`, where None means "not given" (the inventory or edgekit's default decides).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Target = Annotated[str, typer.Argument(help="[user@]host[:port], an ssh_config alias, or `local`.")]
DeviceOption = Annotated[Optional[str], typer.Option("--target", "-t",
                                                     help="The device: [user@]host[:port] or an ssh_config alias.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan (the commands that would run); change nothing.")]

# -- the build --------------------------------------------------------------------------------------------------
LlamaSrc = Annotated[Optional[str], typer.Option(
    "--llama-src", help="llama.cpp source: a directory, a .tar.gz (e.g. the llama-cpp-python sdist) or a URL, "
                        "pushed to the device.")]
Cpu = Annotated[Optional[bool], typer.Option("--cpu", help="Build CPU-only on purpose (refused by default without "
                                                           "CUDA).")]
CudaArch = Annotated[Optional[str], typer.Option(
    "--cuda-arch", help="GPU arch, e.g. 87 or compute_87 (default: from the device; also CUDA_DOCKER_ARCH).")]
CpuLevel = Annotated[Optional[str], typer.Option(
    "--cpu-level", help="CPU instruction level, e.g. x86-64-v3, armv8.2-a+dotprod+fp16 or native (default: the best "
                        "that passes the gate).")]
CmakeFlag = Annotated[Optional[list[str]], typer.Option(
    "--cmake-flag", help="Extra cmake definition -DNAME=VALUE (repeatable; changes the flags hash, so it is a "
                         "separate build).")]
Jobs = Annotated[Optional[int], typer.Option("--jobs", "-j", help="Parallel compile jobs (default: from CPUs and "
                                                                  "RAM).")]
SkipDeps = Annotated[Optional[bool], typer.Option(
    "--skip-deps", help="Do not apt-get install missing build tools (offline machines that have what they need).")]

# -- the model --------------------------------------------------------------------------------------------------
Ctx = Annotated[Optional[int], typer.Option(
    "--ctx", help="Context length in tokens (default: the model's recommended one, capped to what fits).")]
FetchOn = Annotated[Optional[str], typer.Option(
    "--fetch-on", help="Who downloads the model: device, controller, or auto (the device when it can reach the "
                       "source).")]
Force = Annotated[Optional[bool], typer.Option("--force", help="Install a model even if the fit check says it will "
                                                               "not fit.")]
AllowUnpinned = Annotated[Optional[bool], typer.Option(
    "--allow-unpinned", help="Install a model quant that has no pinned commit and sha256 (checked only against the "
                             "server's X-Linked-Etag).")]
