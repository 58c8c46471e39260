"""The facts the tuning steps read (frozen dataclasses: `sudo`, `command`, a pure `parse`), for `ctx.fact`.

The parsers of edgekit.facts.tuning and edgekit.facts.jetson are reused where they exist (one parser per output:
`jetson_clocks --show`, `systemctl get-default`, /proc/swaps, the storage kind under a path); what is new here: the
conf with each mode's settings (modes.parse_conf, which facts.tuning.NvpmodelConf also reads through), the status file
and boot id next to `nvpmodel -q`, the desktop session's memory, the device a path is stored on, a swap file's state,
and the original values edgekit recorded on the device (layout.TUNING_DIR).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgekit import layout as L
from edgekit.facts.jetson import PowerMode as _PowerModeQuery
from edgekit.facts.tuning import DefaultTarget, DesktopSession, JetsonClocksShow, Swaps, parse_backing
from edgekit.facts.tuning import DESKTOP_NAMES, storage_kind  # noqa: F401  (importable from here too)
from edgekit.remote.command import q
from edgekit.facts.power_modes import ModeTable, parse_conf, status_pmode


@dataclass(frozen=True)
class PowerModeTable:
    """The power modes of the device's own nvpmodel.conf (modes.ModeTable), None when it has none."""

    path: str = L.NVPMODEL_CONF
    sudo: bool = False

    @property
    def command(self) -> str:
        return f"cat {q(self.path)} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> ModeTable | None:
        return parse_conf(output)


@dataclass(frozen=True)
class CurrentPowerMode:
    """The mode in use: `nvpmodel -q`, the status file nvpmodel.service applies at boot, and this boot's id.

    -> {'name', 'id' (from -q, else the status file), 'status' (its text or None), 'status_id', 'boot_id'}"""

    sudo: bool = True
    command: str = (f"nvpmodel -q 2>/dev/null; echo @@status; cat {L.NVPMODEL_STATUS} 2>/dev/null; echo @@boot; "
                    "cat /proc/sys/kernel/random/boot_id")

    @staticmethod
    def parse(output: str) -> dict:
        query, _, rest = output.partition("@@status")
        status, _, boot = rest.partition("@@boot")
        mode = _PowerModeQuery.parse(query) or {}
        status = status.strip("\n") or None
        status_id = status_pmode(status)
        return {"name": mode.get("name"), "id": mode.get("id") if mode.get("id") is not None else status_id,
                "status": status + "\n" if status else None, "status_id": status_id,
                "boot_id": boot.strip() or None}


class ClocksState(JetsonClocksShow):
    """`jetson_clocks --show` run as root, as the real script requires (through the transport's sudo, which honours
    --ask-become-pass): JetsonClocksShow's dict, the EMC pinned by its FreqOverride flag; None without the tool."""

    sudo = True
    command = "jetson_clocks --show"


# Read by the tuning steps as they are (the one parser of each lives in edgekit.facts.tuning).
BootTarget = DefaultTarget            # `systemctl get-default`: 'graphical', 'multi-user', ... or None
DesktopMemory = DesktopSession        # {'bytes', 'processes'}: what booting headless frees, an upper estimate
SwapState = Swaps                     # /proc/swaps: [{'path', 'type', 'size_bytes', 'used_bytes', 'priority', 'zram'}]


@dataclass(frozen=True)
class BackingDevice:
    """Where a path is (or would be) stored: the mount source of its nearest existing directory (findmnt), the
    whole device under it (lsblk's parent kernel name) and, for an MMC device, whether the kernel calls it MMC
    (eMMC) or SD -> {'source', 'device', 'kind': 'eMMC' | 'SD' | 'eMMC or SD' | 'NVMe' | 'disk' | 'unknown'}."""

    path: str
    sudo: bool = False

    @property
    def command(self) -> str:
        return (f"d={q(self.path)}; while [ ! -e \"$d\" ] && [ \"$d\" != / ]; do d=$(dirname \"$d\"); done; "
                "src=$(findmnt -no SOURCE -T \"$d\" 2>/dev/null | head -n1); echo \"source=$src\"; "
                "dev=$(lsblk -no PKNAME \"$src\" 2>/dev/null | head -n1); [ -n \"$dev\" ] || dev=${src##*/}; "
                "echo \"device=$dev\"; echo \"mmc_type=$(cat /sys/block/\"$dev\"/device/type 2>/dev/null)\"")

    @staticmethod
    def parse(output: str) -> dict:
        return parse_backing(dict(line.split("=", 1) for line in output.splitlines() if "=" in line))


@dataclass(frozen=True)
class SwapFile:
    """A swap file's state: {'exists', 'size' (bytes), 'mode' ('600'), 'type' (blkid: 'swap'), 'fstab' (the type
    /etc/fstab gives the path, None when it has no line for it)}."""

    path: str
    sudo: bool = True

    @property
    def command(self) -> str:
        p = q(self.path)
        return (f"if [ -e {p} ]; then echo \"stat=$(stat -c '%s %a' {p})\"; "
                f"echo \"type=$(blkid -o value -s TYPE {p} 2>/dev/null)\"; fi; "
                f"echo \"fstab=$(awk -v p={p} '$1 == p {{print $3; exit}}' /etc/fstab 2>/dev/null)\"")

    @staticmethod
    def parse(output: str) -> dict:
        values = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
        stat = values.get("stat", "").split()
        return {"exists": "stat" in values, "size": int(stat[0]) if stat and stat[0].isdecimal() else None,
                "mode": stat[1] if len(stat) > 1 else None, "type": values.get("type", "").strip() or None,
                "fstab": values.get("fstab", "").strip() or None}


RECORDS = {"power_mode": "power-mode.json", "power_mode_pending": "pending-power-mode.json",
           "clocks": "clocks.json", "default_target": "default-target.json", "zram": "zram.json",
           "swap": "swap.json"}


def record_path(key: str) -> str:
    return f"{L.TUNING_DIR}/{RECORDS[key]}"


@dataclass(frozen=True)
class TuningRecords:
    """What edgekit recorded before changing a setting (one JSON file per setting in layout.TUNING_DIR):
    {'power_mode': {'id', 'name'}, 'default_target': 'graphical.target', ..., 'clocks_store': True when
    `jetson_clocks --store` saved the clocks}. Unreadable files are left out."""

    sudo: bool = True
    command: str = (f"for f in {L.TUNING_DIR}/*.json; do [ -f \"$f\" ] || continue; "
                    "echo \"@@file $(basename \"$f\")\"; cat \"$f\"; echo; done; "
                    f"[ -f {L.CLOCKS_STORE} ] && echo @@clocks-store; true")

    @staticmethod
    def parse(output: str) -> dict:
        by_file = {v: k for k, v in RECORDS.items()}
        records: dict = {}
        for chunk in output.split("@@file ")[1:]:
            name, _, body = chunk.partition("\n")
            body = body.split("@@clocks-store")[0]
            key = by_file.get(name.strip())
            if key is None:
                continue
            try:
                records[key] = json.loads(body)
            except (ValueError, RecursionError):
                continue
        if "@@clocks-store" in output:
            records["clocks_store"] = True
        return records
