"""Jetson identity facts: device-tree model and compatible, L4T release, power mode, jtop service.

The telemetry agent carries this module (and base.py) to the device: Python 3.8's standard library only.
"""

from __future__ import annotations

import re

from edgekit.facts.base import Fact


def _dt(node: str) -> str:
    return f"cat /proc/device-tree/{node} 2>/dev/null || cat /sys/firmware/devicetree/base/{node}"


class DeviceModel(Fact):
    """The board's model string, e.g. 'NVIDIA Jetson Orin Nano Developer Kit' (NUL-terminated by the kernel)."""

    name = "dt_model"
    command = _dt("model")

    @staticmethod
    def parse(output: str) -> str | None:
        text = output.replace("\0", "").strip()
        return text or None


class DeviceCompatible(Fact):
    """Device-tree compatible entries, most specific first: ['nvidia,p3768-0000+p3767-0005', ..., 'nvidia,tegra234']."""

    name = "dt_compatible"
    command = _dt("compatible") + " | tr '\\0' '\\n'"

    @staticmethod
    def parse(output: str) -> list[str]:
        return [p.strip() for p in output.replace("\0", "\n").splitlines() if p.strip()]


_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)(?:.*?BOARD:\s*([\w-]+))?", re.I)


class JetsonRelease(Fact):
    """/etc/nv_tegra_release: '# R36 (release), REVISION: 4.3, ...' -> {'l4t': '36.4.3', 'board': 'generic'}."""

    name = "l4t"
    command = "head -n1 /etc/nv_tegra_release"

    @staticmethod
    def parse(output: str) -> dict | None:
        m = _RELEASE.search(output)
        if not m:
            return None
        revision = m[2].strip(".")
        if revision.count(".") == 0:
            revision += ".0"
        return {"l4t": f"{m[1]}.{revision}", "board": m[3]}


class PowerMode(Fact):
    """`nvpmodel -q`: 'NV Power Mode: 15W' then the mode id."""

    name = "power_mode"
    command = "nvpmodel -q 2>/dev/null || /usr/sbin/nvpmodel -q"

    @staticmethod
    def parse(output: str) -> dict | None:
        m = re.search(r"NV Power Mode:\s*(\S+)", output)
        if not m:
            return None
        after = output[m.end():].split()
        mode_id = next((int(tok) for tok in after if tok.isdecimal()), None)
        return {"name": m[1], "id": mode_id}


class JtopService(Fact):
    """Whether the jetson-stats service runs (jtop needs its socket /run/jtop.sock)."""

    name = "jtop_service"
    command = "systemctl is-active jtop.service; [ -S /run/jtop.sock ] && echo socket"

    @staticmethod
    def parse(output: str) -> dict:
        lines = output.split()
        return {"active": bool(lines) and lines[0] == "active", "socket": "socket" in lines}
