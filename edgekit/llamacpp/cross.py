"""A llama.cpp build for another machine, compiled on this controller with a cross compiler, into a pack.

`edgekit build TARGET --cross --cpu`: the device's facts choose the build exactly as a build on the device would
(`plan_build`: the same CPU level, defines and flags hash, so the pack has the id a native build would have);
Debian's cross toolchain (crossbuild-essential-arm64, with the arm64 libssl-dev) compiles it here through a CMake
toolchain file; the install tree is packed into the controller's pack cache (builds/<id>.tar.gz + .json, as a
fleet's builder leaves it); the device then installs that pack with the one verified pack step
(`packs.InstallPack`: its machine checked, uploaded, sha256-verified, unpacked, gated on the device, made current).

CPU only: a CUDA build for a Jetson needs the board's own JetPack toolkit, which no Debian package gives.
`plan_cross` is pure (the exact commands, which the dry run prints); `build_pack` runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edgekit import paths
from edgekit.digest import sha256_file
from edgekit.errors import RemoteCommandFailed, UsageError
from edgekit.facts.device import DeviceFacts
from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import BuildPlan, SourceInfo, plan_build
from edgekit.llamacpp.pack import check_pack
from edgekit.llamacpp.packs import store_pack
from edgekit.llamacpp.source import PUSH_EXCLUDES, fetch_commands
from edgekit.facts.build import parse_built_on
from edgekit.llamacpp.stamp import make_stamp
from edgekit.llamacpp.steps import linked_ggml
from edgekit.remote.command import q, sh


@dataclass(frozen=True)
class Toolchain:
    """A Debian cross toolchain for one machine (`uname -m`)."""

    machine: str            # aarch64
    triplet: str            # aarch64-linux-gnu: the compilers' prefix and the multiarch library directory
    deb_arch: str           # arm64
    packages: str           # what to apt-get install on the controller
    # The compiler's runtime libraries the build links that a device may lack, packed into lib/ (found there by the
    # build's RUNPATH $ORIGIN): ggml's OpenMP (a Jetson with JetPack has libgomp1; a bare image may not).
    runtime: tuple[str, ...] = ("libgomp.so.1",)

    @property
    def cc(self) -> str:
        return f"{self.triplet}-gcc"

    @property
    def cxx(self) -> str:
        return f"{self.triplet}-g++"

    def cmake_file(self, host_machine: str) -> str:
        """The CMake toolchain file: the cross compilers, and libraries (libssl) from the target's multiarch
        directory only: pkg-config reads the target's .pc files, and find_library skips the host's directory
        (else FindOpenSSL takes /usr/lib/x86_64-linux-gnu/libcrypto.so, and the link fails)."""
        return "\n".join([
            "# Written by edgekit (edgekit/llamacpp/cross.py): a cross build on the controller.",
            "set(CMAKE_SYSTEM_NAME Linux)",
            f"set(CMAKE_SYSTEM_PROCESSOR {self.machine})",
            f"set(CMAKE_C_COMPILER {self.cc})",
            f"set(CMAKE_CXX_COMPILER {self.cxx})",
            f"set(CMAKE_LIBRARY_ARCHITECTURE {self.triplet})",
            f"set(CMAKE_FIND_ROOT_PATH /usr/{self.triplet})",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
            f"set(CMAKE_IGNORE_PATH /usr/lib/{host_machine}-linux-gnu /lib/{host_machine}-linux-gnu)",
            f'set(ENV{{PKG_CONFIG_LIBDIR}} "/usr/lib/{self.triplet}/pkgconfig:/usr/share/pkgconfig")',
            'set(ENV{PKG_CONFIG_PATH} "")',
            "", ""])


TOOLCHAINS = {"aarch64": Toolchain("aarch64", "aarch64-linux-gnu", "arm64",
                                   "crossbuild-essential-arm64 libssl-dev:arm64 cmake ninja-build ccache")}


def toolchain_for(facts: DeviceFacts) -> Toolchain:
    tc = TOOLCHAINS.get(facts.arch or "")
    if tc is None:
        raise UsageError(f"no cross toolchain for {facts.target}'s machine ({facts.arch or 'unknown'})",
                         hint=f"cross builds are for: {', '.join(TOOLCHAINS)}; build on the device: "
                              f"`edgekit build {facts.target}`")
    return tc


@dataclass
class CrossPlan:
    """One cross build: the device's BuildPlan, built under `work` on this controller, packed as `plan.id`."""

    plan: BuildPlan
    source: SourceInfo
    toolchain: Toolchain
    work: Path
    jobs: int

    src_dir = property(lambda c: c.work / "src")
    build_dir = property(lambda c: c.work / "build")
    stage = property(lambda c: c.work / "stage" / c.plan.id, doc="the install tree, packed as <id>/")
    toolchain_file = property(lambda c: c.work / "toolchain.cmake")
    log = property(lambda c: c.work / "build.log")

    @property
    def env(self) -> dict[str, str]:
        """ccache shared by every cross build of this controller (CCACHE_DIR when set, else the edgekit cache)."""
        return {"CCACHE_DIR": os.environ.get("CCACHE_DIR") or str(paths.cache() / "ccache"),
                "CCACHE_BASEDIR": str(self.work.parent), "CCACHE_NOHASHDIR": "1",
                "CCACHE_COMPILERCHECK": "content", "CCACHE_MAXSIZE": "5G"}

    def commands(self) -> list[str]:
        """The commands, in order, as the dry run prints them and build_pack runs them."""
        p, tc = self.plan, self.toolchain
        return [
            *self.source_commands(),
            sh("cmake", "-S", self.src_dir, "-B", self.build_dir, "-G", "Ninja",
               f"-DCMAKE_TOOLCHAIN_FILE={self.toolchain_file}", *p.defines),
            sh("cmake", "--build", self.build_dir, "--target", *p.targets, "-j", self.jobs),
            f"rm -rf {q(self.stage)} && mkdir -p {q(self.stage)}/bin {q(self.stage)}/lib && cp -a "
            + " ".join(q(self.build_dir / "bin" / t) for t in p.targets) + f" {q(self.stage)}/bin/ && "
            f"cp -a {q(self.build_dir)}/bin/*.so* {q(self.stage)}/lib/ && "
            + " && ".join(f"cp -L \"$({tc.cc} -print-file-name={lib})\" {q(self.stage)}/lib/"
                          for lib in tc.runtime),
            sh(f"{tc.triplet}-readelf", "-d", self.stage / "bin" / "llama-server"),
        ]

    def source_commands(self) -> list[str]:
        src = self.source
        if src.kind != "tarball":
            return fetch_commands(src, str(self.src_dir))     # a git clone runs the same here as on a device
        inner = src.inner
        strip = len([p for p in inner.split("/") if p]) if inner else 0
        excludes = " ".join(f"--exclude={q(f'{inner}/{e}' if inner else e)}" for e in PUSH_EXCLUDES if e != ".git")
        return [f"rm -rf {q(self.src_dir)} && mkdir -p {q(self.src_dir)} && tar -xzf {q(src.local)} "
                f"-C {q(self.src_dir)} --strip-components={strip} {excludes} {q(inner) if inner else ''}".rstrip()]


def plan_cross(facts: DeviceFacts, build: S.BuildSpec, source: SourceInfo) -> CrossPlan:
    """Pure: the cross build of what `edgekit build` would build on the device (same plan, same id)."""
    if not build.cpu_only:
        raise UsageError("a cross build is CPU only: CUDA for a Jetson needs the board's JetPack toolkit",
                         hint=f"add --cpu, or build on the device: `edgekit build {facts.target}`")
    tc = toolchain_for(facts)
    plan = plan_build(facts, build, source)
    return CrossPlan(plan, source, tc, paths.cache() / "cross" / plan.id, build.jobs or os.cpu_count() or 1)


def cached_pack(cp: CrossPlan) -> Path | None:
    """The pack of this build already in the controller's pack cache (from an earlier cross build or a fleet)."""
    tarball = paths.cache() / "builds" / f"{cp.plan.id}.tar.gz"
    meta = tarball.with_name(f"{cp.plan.id}.json")
    if not (tarball.is_file() and meta.is_file()):
        return None
    try:
        recorded = json.loads(meta.read_text())
    except (ValueError, RecursionError):
        return None
    stamp = recorded.get("stamp") or {}
    ok = stamp.get("arch") == cp.plan.arch and recorded.get("sha256") == sha256_file(tarball)
    return tarball if ok else None


def missing_tools(tc: Toolchain) -> list[str]:
    return [t for t in (tc.cc, tc.cxx, f"{tc.triplet}-readelf", "cmake", "ninja", "tar") if not shutil.which(t)]


def build_pack(cp: CrossPlan, progress=lambda msg: None) -> Path:
    """Run the cross build, pack the install tree into the controller's pack cache; -> the pack's tarball."""
    tc = cp.toolchain
    missing = missing_tools(tc)
    if missing:
        raise UsageError(f"this controller lacks the {tc.machine} cross toolchain ({', '.join(missing)} not found)",
                         hint=f"apt-get install {tc.packages} (after adding {tc.deb_arch} to dpkg's "
                              "architectures: docs/aarch64-standin.md)")
    cp.work.mkdir(parents=True, exist_ok=True)
    cp.toolchain_file.write_text(tc.cmake_file(os.uname().machine))
    cp.log.write_text("")
    env = {**os.environ, **cp.env}
    Path(env["CCACHE_DIR"]).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    commands = cp.commands()
    outputs = []
    for n, command in enumerate(commands, 1):
        progress(f"[{n}/{len(commands)}] {command.split(' ', 1)[0]} {command.split(' ', 2)[1]}")
        with open(cp.log, "a") as log:
            log.write(f"$ {command}\n")
            log.flush()
            proc = subprocess.run(["bash", "-o", "pipefail", "-c", command], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env)
            log.write(proc.stdout)
        if proc.returncode != 0:
            raise RemoteCommandFailed(command, proc.returncode, proc.stdout,
                                      message=f"the {tc.machine} cross build failed (exit {proc.returncode}); "
                                              f"full log: {cp.log}",
                                      hint=f"read {cp.log}; missing arm64 libraries? apt-get install {tc.packages}")
        outputs.append(proc.stdout)
    seconds = time.monotonic() - start
    linked = linked_ggml("\n".join(needed_libraries(outputs[-1])))
    built_on = parse_built_on(socket.gethostname() + "\n" + _machine_id())
    stamp = make_stamp(cp.plan, cp.source, seconds, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       linked, built_on=built_on)
    stamp["cross"] = {"host": os.uname().machine, "compiler": _first_line([tc.cc, "--version"]),
                      "toolchain": tc.triplet}
    (cp.stage / S.STAMP_NAME).write_text(json.dumps(stamp, indent=2) + "\n")
    part = cp.work / f"{cp.plan.id}.tar.gz.partial"
    subprocess.run(["tar", "-C", str(cp.stage.parent), "--owner=0", "--group=0", "--numeric-owner", "-czf",
                    str(part), cp.plan.id], check=True)
    sha = sha256_file(part)
    check_pack(part, sha, cp.plan.id)
    tarball = store_pack(part, {"name": cp.plan.id, "sha256": sha, "stamp": stamp})
    shutil.rmtree(cp.work, ignore_errors=True)
    return tarball


def needed_libraries(readelf_dynamic: str) -> list[str]:
    """Pure: the NEEDED libraries in `readelf -d` output (`(NEEDED) Shared library: [libggml.so]`)."""
    out = []
    for line in readelf_dynamic.splitlines():
        if "(NEEDED)" in line and "[" in line and "]" in line:
            out.append(line[line.index("[") + 1:line.rindex("]")])
    return out


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return ""


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    return out.splitlines()[0].strip() if out.strip() else None
