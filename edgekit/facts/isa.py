"""Pure: which CPU instruction set a llama.cpp build may use on a device, chosen from its facts.

`-DGGML_NATIVE=ON` compiles for whatever the build machine's CPU *advertises*. A VM can advertise what it cannot
run (Intel AMX on some hypervisors: the server then dies with SIGILL in ggml-cpu's AMX kernels), and a pack built
on one host must run on another. So edgekit never builds natively by default: it picks the highest *level* the
device advertises (x86-64-v4/v3/v2 as in the psABI, or an Arm architecture string), sets every ggml instruction
switch explicitly (cmake's defaults would turn some back on), never enables AMX, and records the level in the
build stamp. A level that fails the build gate on a device (SIGILL) is recorded there and the next lower one is
built instead (`edgekit.llamacpp.gate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.errors import UsageError

# Every x86 switch ggml-cpu has, so none is left to cmake's default (GGML_NATIVE=OFF turns AVX/AVX2/... ON).
X86_SWITCHES = ("SSE42", "AVX", "AVX_VNNI", "AVX2", "BMI2", "FMA", "F16C", "AVX512", "AVX512_VBMI",
                "AVX512_VNNI", "AVX512_BF16", "AMX_TILE", "AMX_INT8", "AMX_BF16")


@dataclass(frozen=True)
class Level:
    name: str
    requires: frozenset[str]                  # /proc/cpuinfo flags (x86) or Features (Arm) the CPU must list
    on: tuple[str, ...] = ()                  # x86: the GGML_<switch> set ON (all others OFF)
    arm_arch: str | None = None               # Arm: GGML_CPU_ARM_ARCH
    defines: tuple[str, ...] = field(default=(), compare=False)


_V3 = ("SSE42", "AVX", "AVX2", "BMI2", "FMA", "F16C")
LEVELS: dict[str, tuple[Level, ...]] = {
    "x86_64": (
        Level("x86-64-v4", frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx2", "fma",
                                      "f16c", "bmi2", "sse4_2"}), _V3 + ("AVX512",)),
        Level("x86-64-v3", frozenset({"avx", "avx2", "fma", "f16c", "bmi2", "sse4_2"}), _V3),
        Level("x86-64-v2", frozenset({"sse4_2"}), ("SSE42",)),
        Level("x86-64", frozenset()),
    ),
    "aarch64": (
        # Orin's Cortex-A78AE: dot product and half precision (Features: asimddp, fphp, asimdhp).
        Level("armv8.2-a+dotprod+fp16", frozenset({"asimddp", "fphp", "asimdhp"}),
              arm_arch="armv8.2-a+dotprod+fp16"),
        Level("armv8-a", frozenset(), arm_arch="armv8-a"),
    ),
}
NATIVE = "native"


def defines_for(level: Level | None, arch: str | None) -> list[str]:
    """The cmake definitions for a level (None: GGML_NATIVE=ON, only when asked for with --cpu-level native)."""
    if level is None:
        return ["-DGGML_NATIVE=ON"]
    out = ["-DGGML_NATIVE=OFF"]
    if arch == "x86_64":
        out += [f"-DGGML_{s}={'ON' if s in level.on else 'OFF'}" for s in X86_SWITCHES]
    elif level.arm_arch:
        out.append(f"-DGGML_CPU_ARM_ARCH={level.arm_arch}")
    return out


def levels_for(arch: str | None) -> tuple[Level, ...]:
    return LEVELS.get(arch or "", ())


def choose(arch: str | None, flags: set[str] | frozenset[str], refused: set[str] | frozenset[str] = frozenset(),
           requested: str | None = None) -> Level | None:
    """The level to build: `requested` if given (None means native), else the highest the CPU advertises that
    has not failed the gate on this device. Unknown architectures get a generic build (no level)."""
    levels = levels_for(arch)
    if requested == NATIVE:
        return None
    if requested:
        found = next((lv for lv in levels if lv.name == requested), None)
        if found is None:
            names = ", ".join([lv.name for lv in levels] + [NATIVE])
            raise UsageError(f"--cpu-level {requested!r} is not a level for {arch or 'this CPU'}",
                             hint=f"use one of: {names}")
        return found
    for level in levels:
        if level.requires <= set(flags) and level.name not in refused:
            return level
    if levels:
        return levels[-1]
    return Level("generic", frozenset())


def lower(arch: str | None, level: Level | None) -> Level | None:
    """The next level down (the fallback after a SIGILL), or None at the bottom."""
    levels = levels_for(arch)
    names = [lv.name for lv in levels]
    if level is None:
        return None
    if level.name not in names or names.index(level.name) + 1 >= len(names):
        return None
    return levels[names.index(level.name) + 1]


def missing(level_requires, flags) -> list[str]:
    return sorted(set(level_requires) - set(flags))
