"""The build stamp (build-stamp.json next to an installed build): what was built, from what, how, how long."""

from __future__ import annotations

import json
import shlex

from edgekit.build import spec as S
from edgekit.build.cmake import BuildPlan, SourceInfo

STAMP_FORMAT = 1


def make_stamp(plan: BuildPlan, source: SourceInfo, duration_s: float, built_at: str, linked: list[str]) -> dict:
    return {
        "format": STAMP_FORMAT, "version": plan.version, "commit": plan.commit, "flags_hash": plan.flags_hash,
        "backend": plan.backend, "cuda_arch": plan.cuda_arch, "cuda_version": plan.cuda_version, "nvcc": plan.nvcc,
        "flags": plan.defines, "targets": list(plan.targets), "jobs": plan.jobs, "duration_s": round(duration_s, 1),
        "built_at": built_at, "source": source.to_json(), "libggml": linked, "prefix": plan.prefix,
        "arch": plan.arch, "cpu_level": plan.cpu_level, "cpu_requires": plan.cpu_requires,
    }


def parse_stamp(text: str) -> dict | None:
    """A stamp's JSON, or None when missing/unreadable (a half-written or foreign file is not a build)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not {"version", "flags_hash", "backend"} <= data.keys():
        return None
    return data


def stamp_matches(stamp: dict | None, plan: BuildPlan) -> bool:
    return bool(stamp) and stamp.get("version") == plan.version and stamp.get("flags_hash") == plan.flags_hash


# A fact: the stamp of one prefix, whether its llama-server is there, and where `current` points.
def installed_command(prefix: str) -> str:
    q = shlex.quote
    return (f"echo \"@@current $(readlink {q(S.CURRENT)} 2>/dev/null)\"; "
            f"if [ -x {q(prefix)}/bin/llama-server ]; then echo @@server yes; fi; "
            f"echo @@stamp; cat {q(prefix)}/{S.STAMP_NAME} 2>/dev/null")


def parse_installed(output: str) -> dict:
    """-> {'current': target or None, 'server': bool, 'stamp': dict or None}."""
    head, _, stamp_text = output.partition("@@stamp")
    current = None
    for line in head.splitlines():
        if line.startswith("@@current "):
            current = line[len("@@current "):].strip() or None
    return {"current": current, "server": "@@server yes" in head, "stamp": parse_stamp(stamp_text.strip())}


def describe(stamp: dict) -> str:
    flags = f"CUDA sm_{stamp.get('cuda_arch')}" if stamp.get("backend") == "cuda" else "CPU-only"
    if stamp.get("cpu_level") or "cpu_requires" in stamp:
        flags += f", CPU {stamp.get('cpu_level') or 'native'}"
    return f"llama.cpp {stamp.get('version')} ({flags}, flags {stamp.get('flags_hash')})"
