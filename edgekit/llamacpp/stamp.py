"""The build stamp (build-stamp.json next to an installed build): what was built, from what, how, how long."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid

from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import BuildPlan, SourceInfo
from edgekit.remote.command import q

STAMP_FORMAT = 1
# machine-id(5) asks that the raw id not leave the machine; a stamp travels with its pack, so it records the
# app-specific id systemd derives for this UUID (`systemd-id128 machine-id --app-specific=EDGEKIT_APP_ID` on the
# device prints the same value).
EDGEKIT_APP_ID = uuid.UUID("5f1a0e4c-9d3b-4c7a-8e21-6b0d4e9a7c35")

# A fact: the building host's name and machine-id.
BUILT_ON_COMMAND = "hostname; cat /etc/machine-id 2>/dev/null || cat /var/lib/dbus/machine-id 2>/dev/null"


def app_machine_id(machine_id: str) -> str | None:
    """systemd's app-specific id (sd_id128_get_machine_app_specific) of a machine-id for edgekit; None if invalid."""
    machine_id = machine_id.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", machine_id):
        return None
    h = bytearray(hmac.new(bytes.fromhex(machine_id), EDGEKIT_APP_ID.bytes, hashlib.sha256).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x40
    h[8] = (h[8] & 0x3F) | 0x80
    return h.hex()


def parse_built_on(output: str) -> dict:
    """BUILT_ON_COMMAND's output -> {'hostname': ..., 'machine_id': app-specific id or None}."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return {"hostname": lines[0] if lines else None,
            "machine_id": app_machine_id(lines[1]) if len(lines) > 1 else None}


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
