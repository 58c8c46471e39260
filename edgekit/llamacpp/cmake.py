"""Pure: from device facts, a BuildSpec and the source, the exact cmake command lines, job count and flags hash."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from edgekit.facts import isa
from edgekit.llamacpp import spec as S
from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.facts.cuda import parse_arch_override
from edgekit.facts.device import DeviceFacts
from edgekit.remote.command import sh

# Flags that never change what is built, only where it is described from (kept out of the flags hash).
_UNHASHED = ("CMAKE_CUDA_COMPILER", "LLAMA_BUILD_COMMIT", "LLAMA_BUILD_NUMBER")


@dataclass(frozen=True)
class SourceInfo:
    """Where the llama.cpp source comes from and which code it is."""

    kind: str                   # git | tarball
    version: str                # b<NNNN>, or src-<sha12> for an unknown tree
    commit: str | None          # full or short hash, None when unknown
    digest: str                 # git: the tag; tarball: its sha256
    local: str | None = None    # tarball on the controller
    inner: str = ""             # path of llama.cpp inside the tarball ("" = its root)
    url: str | None = None      # git repository

    def to_json(self) -> dict:
        return {"kind": self.kind, "version": self.version, "commit": self.commit, "digest": self.digest,
                **({"url": self.url} if self.url else {}), **({"inner": self.inner} if self.inner else {})}


@dataclass
class BuildPlan:
    version: str
    commit: str | None
    backend: str                # cuda | cpu
    cuda_arch: str | None
    cuda_version: str | None
    nvcc: str | None
    defines: list[str]
    flags_hash: str
    jobs: int
    jobs_note: str
    targets: tuple[str, ...] = S.TARGETS
    notes: list[str] = field(default_factory=list)
    cpu_level: str | None = None        # edgekit.facts.isa level; None = native (asked for explicitly)
    cpu_requires: list[str] = field(default_factory=list)   # CPU flags a device must advertise to run it
    arch: str | None = None             # the device's machine (uname -m)

    # Where the build lives on the device: installed under INSTALL_ROOT, built under BUILD_ROOT, by its id.
    id = property(lambda p: f"{p.version}-{p.flags_hash}", doc="<version>-<flags hash>: names every path below")
    prefix = property(lambda p: f"{S.INSTALL_ROOT}/{p.id}", doc="the install directory (`current` points here)")
    bin_dir = property(lambda p: f"{p.prefix}/bin")
    work_dir = property(lambda p: f"{S.BUILD_ROOT}/{p.id}", doc="source and build tree (removed after install)")
    src_dir = property(lambda p: f"{p.work_dir}/src")
    build_dir = property(lambda p: f"{p.work_dir}/build")
    log = property(lambda p: f"{S.LOG_DIR}/build-{p.id}.log")

    @property
    def env(self) -> dict[str, str]:
        """ccache shared by every build: paths under BUILD_ROOT are hashed relative, so prefixes share hits."""
        return {"CCACHE_DIR": S.CCACHE_DIR, "CCACHE_BASEDIR": S.BUILD_ROOT, "CCACHE_NOHASHDIR": "1",
                "CCACHE_COMPILERCHECK": "content", "CCACHE_MAXSIZE": "5G"}

    def configure_command(self) -> str:
        return sh("cmake", "-S", self.src_dir, "-B", self.build_dir, "-G", "Ninja", *self.defines)

    def build_command(self) -> str:
        return sh("cmake", "--build", self.build_dir, "--target", *self.targets, "-j", self.jobs)

    def flags_summary(self) -> str:
        cpu = f"CPU {self.cpu_level or 'native'}"
        return f"CUDA sm_{self.cuda_arch}, {cpu}" if self.backend == "cuda" else f"CPU-only, {cpu}"


def build_number(version: str) -> str | None:
    m = re.fullmatch(r"b(\d+)", version)
    return m[1] if m else None


def jobs_for(facts: DeviceFacts, cuda: bool, requested: int | None = None) -> tuple[int, str]:
    """min(cpus, available RAM / per-job need); nvcc needs far more per job than plain C++."""
    cpus = facts.cpus or 1
    avail = (facts.memory or {}).get("available_bytes") or 0
    swap = (facts.memory or {}).get("swap_total_bytes") or 0
    per_job = S.PER_JOB_CUDA if cuda else S.PER_JOB_CPP
    by_ram = max(1, avail // per_job) if avail else cpus
    auto = max(1, min(cpus, by_ram))
    note = f"{auto} jobs ({cpus} CPUs, {avail / S.GIB:.1f} GiB available, {per_job / S.GIB:g} GiB per " \
           f"{'nvcc' if cuda else 'C++'} job)"
    if by_ram < cpus:
        note += "; RAM limits parallelism" + ("" if swap else " and there is no swap: adding swap "
                                              "(e.g. 8 GiB swapfile) avoids OOM-killed cc1plus/nvcc")
    if requested is not None:
        if requested < 1:
            raise UsageError(f"--jobs must be at least 1 (got {requested})", hint="omit --jobs to size it from RAM")
        note = f"{requested} jobs (asked; facts suggest {auto})"
        return requested, note
    return auto, note


def cuda_target(facts: DeviceFacts, build: S.BuildSpec) -> tuple[str | None, dict | None]:
    """Decide CPU or CUDA: (arch, toolkit) for CUDA, (None, None) for CPU; refuse a silent CPU fallback."""
    if build.cpu_only:
        return None, None
    where = _describe(facts)
    if not facts.cuda:
        raise UnsuitableDevice(
            f"no CUDA toolkit on {where}: refusing to build a CPU-only llama.cpp by accident",
            hint="install the CUDA toolkit (on a Jetson: `sudo apt install nvidia-jetpack`) and check with "
                 f"`edgekit facts {facts.target}`, or pass --cpu to build CPU-only on purpose")
    try:
        arch = parse_arch_override(build.cuda_arch)
    except ValueError:
        raise UsageError(f"cannot read CUDA architecture {build.cuda_arch!r}",
                         hint="use a form like 87, compute_87, sm_87 or 8.7") from None
    arch = arch or facts.cuda_arch
    if not arch:
        raise UsageError(f"cannot tell the GPU architecture of {where} (CUDA {facts.cuda['version']} found, "
                         "but not a known Jetson)", hint="pass --cuda-arch (e.g. 87 for Orin, 90 for H100)")
    return arch, facts.cuda


def disk_need(cuda: bool) -> int:
    return S.DISK_NEED_CUDA if cuda else S.DISK_NEED_CPU


def check_disk(facts: DeviceFacts, cuda: bool) -> None:
    free = (facts.disk or {}).get("free_bytes")
    need = disk_need(cuda)
    if free is not None and free < need:
        raise UnsuitableDevice(
            f"not enough disk on {_describe(facts)}: {free / S.GIB:.1f} GiB free at {facts.disk.get('path')}, "
            f"a {'CUDA' if cuda else 'CPU'} build needs {need / S.GIB:.0f} GiB",
            hint=f"free space under /opt (old builds: {S.INSTALL_ROOT}, {S.BUILD_ROOT}) or use a bigger disk")


def plan_build(facts: DeviceFacts, build: S.BuildSpec, source: SourceInfo) -> BuildPlan:
    """The whole build, decided from facts alone (pure)."""
    arch, toolkit = cuda_target(facts, build)
    cuda = arch is not None
    check_disk(facts, cuda)
    jobs, note = jobs_for(facts, cuda, build.jobs)
    defines = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=ON",
        "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
        "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib;$ORIGIN",   # bin/ finds lib/ once installed, and bin/ in the tree
        "-DGGML_CCACHE=ON",
        # offline and lean: no web UI download (or npm), no tests/examples, no unified app binary
        "-DLLAMA_BUILD_UI=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_APP=OFF",
        "-DLLAMA_BUILD_TOOLS=ON",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DLLAMA_OPENSSL=ON",
        "-DGGML_RPC=OFF",                                  # never build the RPC backend (unauthenticated)
    ]
    level = isa.choose(facts.arch, facts.cpu_flags, set(facts.cpu_refused), build.cpu_level)
    defines += isa.defines_for(level, facts.arch)
    if cuda:
        defines += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
                    f"-DCMAKE_CUDA_COMPILER={toolkit['nvcc']}"]
        if facts.jetson and not any(f.startswith("-DGGML_CUDA_NO_VMM") for f in build.extra_flags):
            # CUDA's VMM pool reserves 32 GB of address space up front, which fails on 8 GB Orin boards
            # (docs/jetson-settings.md has the reports); --cmake-flag -DGGML_CUDA_NO_VMM=OFF puts it back
            defines.append("-DGGML_CUDA_NO_VMM=ON")
    else:
        defines += ["-DGGML_CUDA=OFF"]
    for flag in build.extra_flags:
        if not re.fullmatch(r"-D[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?=.*", flag):
            raise UsageError(f"not a cmake definition: {flag!r}", hint="pass --cmake-flag -DNAME=VALUE")
        defines.append(flag)
    number = build_number(source.version)
    if number:
        defines.append(f"-DLLAMA_BUILD_NUMBER={number}")
    if source.commit:
        defines.append(f"-DLLAMA_BUILD_COMMIT={source.commit[:7]}")
    cuda_version = toolkit["version"] if toolkit else None
    notes = []
    if not cuda:
        notes.append("CPU-only build (asked with --cpu)")
    if facts.cpu_refused:
        notes.append(f"CPU level(s) {', '.join(facts.cpu_refused)} failed the build gate on this device earlier")
    return BuildPlan(version=source.version, commit=source.commit, backend="cuda" if cuda else "cpu",
                     cuda_arch=arch, cuda_version=cuda_version, nvcc=toolkit["nvcc"] if toolkit else None,
                     defines=defines, jobs=jobs, jobs_note=note, notes=notes, arch=facts.arch,
                     cpu_level=level.name if level else None,
                     cpu_requires=sorted(level.requires) if level else sorted(facts.cpu_flags),
                     flags_hash=flags_hash(source.version, defines, cuda_version))


def flags_hash(version: str, defines: list[str], cuda_version: str | None, targets=S.TARGETS) -> str:
    hashed = sorted(d for d in defines if not d.startswith(tuple(f"-D{k}=" for k in _UNHASHED)))
    blob = json.dumps({"version": version, "defines": hashed, "cuda": cuda_version, "targets": list(targets)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


_PROGRESS = re.compile(r"^\[\s*(\d+)\s*/\s*(\d+)\s*\]\s*(.*)$")


def parse_progress(line: str) -> tuple[int, int, str] | None:
    """Ninja's `[ n/total ] Building CXX object ...` -> (n, total, what)."""
    m = _PROGRESS.match(line.strip())
    return (int(m[1]), int(m[2]), m[3]) if m else None


def _describe(facts: DeviceFacts) -> str:
    j = facts.jetson
    if j:
        return f"{facts.target} ({j.get('module') or j.get('model')}, L4T R{j.get('l4t')})"
    return f"{facts.target} ({(facts.os or {}).get('pretty_name') or 'Linux'}, {facts.arch})"
