"""The build stamp (build-stamp.json next to an installed build): what was built, from what, how, how long. Reading
one from a device, and the building host, are facts (edgekit.facts.build)."""

from __future__ import annotations

from edgekit.llamacpp.cmake import BuildPlan, SourceInfo

STAMP_FORMAT = 1


def make_stamp(plan: BuildPlan, source: SourceInfo, duration_s: float, built_at: str, linked: list[str], *,
               built_on: dict | None = None, source_sha256: str | None = None) -> dict:
    """The stamp of a build. `built_on`: parse_built_on of the building host; `source_sha256`: the source
    archive's sha256 (default: a tarball source's digest, which is its sha256; None for a git clone)."""
    src = source.to_json()
    src["sha256"] = source_sha256 or (source.digest if source.kind == "tarball" else None)
    return {
        "format": STAMP_FORMAT, "version": plan.version, "commit": plan.commit, "flags_hash": plan.flags_hash,
        "backend": plan.backend, "cuda_arch": plan.cuda_arch, "cuda_version": plan.cuda_version, "nvcc": plan.nvcc,
        "flags": plan.defines, "targets": list(plan.targets), "jobs": plan.jobs, "duration_s": round(duration_s, 1),
        "built_at": built_at, "built_on": built_on, "source": src, "libggml": linked, "prefix": plan.prefix,
        "arch": plan.arch, "cpu_level": plan.cpu_level, "cpu_requires": plan.cpu_requires,
    }


def stamp_matches(stamp: dict | None, plan: BuildPlan) -> bool:
    return bool(stamp) and stamp.get("version") == plan.version and stamp.get("flags_hash") == plan.flags_hash


def describe(stamp: dict) -> str:
    flags = f"CUDA sm_{stamp.get('cuda_arch')}" if stamp.get("backend") == "cuda" else "CPU-only"
    if stamp.get("cpu_level") or "cpu_requires" in stamp:
        flags += f", CPU {stamp.get('cpu_level') or 'native'}"
    return f"llama.cpp {stamp.get('version')} ({flags}, flags {stamp.get('flags_hash')})"
