"""Facts about llama.cpp builds on a device: an installed build's stamp and `current` (installed_command,
parse_installed, parse_stamp), the host that built it (BUILT_ON_COMMAND, parse_built_on: systemd's app-specific
machine id, never the raw one) and the gate's record of a build (read_record_command, parse_record). Commands and
pure parsers; edgekit.llamacpp makes and judges the builds. Also the environment names a build's llama-server
knows (parse_env_names: the `(env: NAME)` notes of its --help; edgekit.llamacpp.server_env checks them)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid

from edgekit import layout as L
from edgekit.remote.command import q

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


def parse_stamp(text: str) -> dict | None:
    """A stamp's JSON, or None when missing/unreadable (a half-written or foreign file is not a build)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not {"version", "flags_hash", "backend"} <= data.keys():
        return None
    return data


# A fact: the stamp of one prefix, whether its llama-server is there, and where `current` points.
def installed_command(prefix: str) -> str:
    return (f"echo \"@@current $(readlink {q(L.CURRENT)} 2>/dev/null)\"; "
            f"if [ -x {q(prefix)}/bin/llama-server ]; then echo @@server yes; fi; "
            f"echo @@stamp; cat {q(prefix)}/{L.STAMP_NAME} 2>/dev/null")


def parse_installed(output: str) -> dict:
    """-> {'current': target or None, 'server': bool, 'stamp': dict or None}."""
    head, _, stamp_text = output.partition("@@stamp")
    current = None
    for line in head.splitlines():
        if line.startswith("@@current "):
            current = line[len("@@current "):].strip() or None
    return {"current": current, "server": "@@server yes" in head, "stamp": parse_stamp(stamp_text.strip())}


def read_record_command(prefix: str) -> str:
    return f"cat /etc/machine-id; echo @@gate; cat {q(prefix)}/{L.GATE_NAME} 2>/dev/null"


def parse_record(output: str) -> dict | None:
    """Pure: the gate record of a build, or None when missing or written on another machine (a pack)."""
    machine, _, text = output.partition("@@gate")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("machine_id") != machine.strip():
        return None
    return data


ENV_NOTE = re.compile(r"\(env: ([A-Z][A-Z0-9_]*)\)")


def parse_env_names(help_text: str) -> frozenset[str]:
    """Pure: the environment names a `llama-server --help` lists (`(env: LLAMA_ARG_PORT)` after each option)."""
    return frozenset(ENV_NOTE.findall(help_text if isinstance(help_text, str) else ""))
