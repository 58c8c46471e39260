"""Jetson tuning facts: power modes, clock pinning, swap/zram (and the device each swap is stored on) and the boot
target.

Pure parsers, read with every device's facts (edgekit.facts.device.ALL_FACTS) and reused by the tuning steps'
facts (edgekit.tuning.facts): one parser per output. The mode in use (`nvpmodel -q`) is edgekit.facts.jetson.PowerMode.
"""

from __future__ import annotations

import re

from edgekit.facts.base import Fact
from edgekit.facts.jetson import PowerMode
from edgekit.facts.power_modes import parse_conf

class NvpmodelConf(Fact):
    """Power modes in /etc/nvpmodel.conf: {'modes': [{'id': 2, 'name': 'MAXN_SUPER'}, ...], 'default': 2}.

    Ids differ per module and JetPack release, so callers look a mode up by name here, never by a fixed id.
    The file is read by edgekit.facts.power_modes.parse_conf (the one parser of it, which also keeps each mode's
    settings): commented lines (the file's own format header) are skipped.
    """

    name = "nvpmodel_conf"
    command = "cat /etc/nvpmodel.conf"

    @staticmethod
    def parse(output: str) -> dict | None:
        table = parse_conf(output)
        if table is None:
            return None
        return {"modes": [{"id": m.id, "name": m.name} for m in table.modes], "default": table.default}


_CPU = re.compile(r"^cpu(\d+):\s*Online=(\d)\s.*?MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", re.M)
_UNIT = r"^{}\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)(?:\s+FreqOverride=(\d))?"
_GPU = re.compile(_UNIT.format("GPU"), re.M)
_EMC = re.compile(_UNIT.format("EMC"), re.M)


class JetsonClocksShow(Fact):
    """`jetson_clocks --show` (root only): whether CPU, GPU and EMC clocks are pinned, and their max frequencies.

    CPUs and the GPU are pinned when their MinFreq == MaxFreq. The EMC is pinned when `FreqOverride=1`:
    jetson_clocks locks the memory clock at its maximum through an override and leaves its MinFreq where it was
    (captured: JETSON_CLOCKS_SHOW_*_PINNED in tests/fixtures/captured.py); only output without the flag falls back
    to min == max. CPU frequencies are kHz (cpufreq), GPU and EMC Hz. A unit the output lacks is None, and
    `pinned` is True only when every unit present is pinned.
    """

    name = "jetson_clocks"
    command = "jetson_clocks --show 2>/dev/null || sudo -n jetson_clocks --show"

    @staticmethod
    def parse(output: str) -> dict | None:
        cpus = [m for m in _CPU.finditer(output) if m[2] == "1"]
        gpu, emc = _GPU.search(output), _EMC.search(output)
        if not cpus and not gpu and not emc:
            return None
        cpu_pinned = all(m[3] == m[4] for m in cpus) if cpus else None
        gpu_pinned = gpu[1] == gpu[2] if gpu else None
        emc_override = (emc[4] == "1") if emc and emc[4] is not None else None
        emc_pinned = (emc_override if emc_override is not None else emc[1] == emc[2]) if emc else None
        present = [p for p in (cpu_pinned, gpu_pinned, emc_pinned) if p is not None]
        mode = PowerMode.parse(output)
        return {
            "pinned": all(present),
            "cpu_pinned": cpu_pinned,
            "gpu_pinned": gpu_pinned,
            "emc_pinned": emc_pinned,
            "cpu_max_khz": max(int(m[4]) for m in cpus) if cpus else None,
            "gpu_max_hz": int(gpu[2]) if gpu else None,
            "emc_max_hz": int(emc[2]) if emc else None,
            "emc_override": emc_override,
            "power_mode": mode["name"] if mode else None,
        }


class Swaps(Fact):
    """/proc/swaps: [{'path', 'type' ('partition'/'file'), 'size_bytes', 'used_bytes', 'priority', 'zram'}].

    The kernel prints sizes in KiB and escapes spaces in paths as \\040.
    """

    name = "swaps"
    command = "cat /proc/swaps"

    @staticmethod
    def parse(output: str) -> list[dict]:
        swaps = []
        for line in output.splitlines():
            fields = line.split()
            if len(fields) < 5 or not all(re.fullmatch(r"-?\d+", f) for f in fields[-3:]):
                continue
            path = " ".join(fields[:-4]).replace("\\040", " ")
            swaps.append({
                "path": path,
                "type": fields[-4],
                "size_bytes": int(fields[-3]) * 1024,
                "used_bytes": int(fields[-2]) * 1024,
                "priority": int(fields[-1]),
                "zram": path.rsplit("/", 1)[-1].startswith("zram"),
            })
        return swaps


def storage_kind(device: str | None, mmc_type: str | None = None) -> str:
    """'eMMC', 'SD', 'NVMe', 'disk' or 'unknown' for a block device name (mmcblk0p1, nvme0n1p2, sda1); an MMC device
    whose kernel type is not known is 'eMMC or SD'."""
    name = (device or "").rsplit("/", 1)[-1]
    if name.startswith("mmcblk"):
        kind = (mmc_type or "").strip().upper()
        return "SD" if kind == "SD" else "eMMC" if kind == "MMC" else "eMMC or SD"
    if name.startswith("nvme"):
        return "NVMe"
    if re.match(r"^(sd|vd|xvd|hd)[a-z]", name):
        return "disk"
    return "unknown"


_PARTITION = re.compile(r"^(mmcblk\d+|nvme\d+n\d+|[a-z]+)(?:p?\d+)?$")


def parse_backing(values: dict[str, str]) -> dict:
    """{'source', 'device', 'kind'} from a backing probe's `source=` (mount source or partition), `device=` (lsblk's
    parent kernel name) and `mmc_type=` (/sys/block/DEV/device/type: MMC or SD) values."""
    source = (values.get("source") or "").strip() or None
    device = (values.get("device") or "").strip() or None
    if device is None and source:
        m = _PARTITION.match(source.rsplit("/", 1)[-1])
        device = m[1] if m else None
    return {"source": source, "device": device, "kind": storage_kind(device or source, values.get("mmc_type"))}


class SwapBacking(Fact):
    """The storage under every active swap that is not zram: {path: {'source', 'device', 'kind'}} (parse_backing).

    A swap partition is its own source; a swap file's is the mount source of its file system (findmnt). eMMC and
    SD cards wear out and are slow as swap, which is why the device view names the kind.
    """

    name = "swap_backing"
    command = ("tail -n +2 /proc/swaps | while read -r p t rest; do case \"$p\" in /dev/zram*) continue;; esac; "
               "if [ \"$t\" = partition ]; then src=$p; else src=$(findmnt -no SOURCE -T \"$p\" 2>/dev/null | head -n1); fi; "
               "dev=$(lsblk -no PKNAME \"$src\" 2>/dev/null | head -n1); [ -n \"$dev\" ] || dev=${src##*/}; "
               "echo \"@@swap $p\"; echo \"source=$src\"; echo \"device=$dev\"; "
               "echo \"mmc_type=$(cat /sys/block/\"$dev\"/device/type 2>/dev/null)\"; done")

    @staticmethod
    def parse(output: str) -> dict[str, dict]:
        found: dict[str, dict] = {}
        for chunk in output.split("@@swap ")[1:]:
            path, _, body = chunk.partition("\n")
            values = dict(line.split("=", 1) for line in body.splitlines() if "=" in line)
            if path.strip():
                found[path.strip()] = parse_backing(values)
        return found


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([BKMGTPE]?)")
_SIZE_COLUMNS = {"DISKSIZE": "disksize_bytes", "DATA": "data_bytes", "COMPR": "compr_bytes",
                 "TOTAL": "total_bytes", "MEM-LIMIT": "mem_limit_bytes", "MEM-USED": "mem_used_bytes"}
_TEXT_COLUMNS = {"NAME": "name", "ALGORITHM": "algorithm", "MOUNTPOINT": "mountpoint"}


def _size(cell: str | None) -> int | None:
    """'2.9G' -> bytes (zramctl's suffixes are powers of 1024; --bytes prints plain integers)."""
    m = _SIZE.fullmatch(cell or "")
    if not m:
        return None
    return int(float(m[1]) * 1024 ** "BKMGTPE".index(m[2] or "B"))


def _columns(header: str, row: str) -> dict[str, str]:
    """Split a libsmartcols table row by the header's column positions, so an empty cell stays empty.

    Each cell goes to the header word it overlaps most (right-aligned numbers end under their header's end);
    a cell that overlaps none goes to the nearest header word.
    """
    heads = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", header)]
    cells: dict[str, str] = {}
    for m in re.finditer(r"\S+", row):
        start, end = m.start(), m.end()
        best = max(heads, key=lambda h: min(end, h[2]) - max(start, h[1]))
        if min(end, best[2]) - max(start, best[1]) > 0:
            name = best[0]
        else:
            name = min(heads, key=lambda h: min(abs(start - h[1]), abs(end - h[2])))[0]
        cells[name] = f"{cells[name]} {m.group()}" if name in cells else m.group()
    return cells


class Zramctl(Fact):
    """`zramctl`: one dict per zram device (name, algorithm, sizes in bytes, streams, mountpoint).

    Reads the default table or the `--bytes --output ...` one; columns the output lacks are None.
    Human sizes ('2.9G') are rounded by zramctl, so their bytes are approximate.
    """

    name = "zramctl"
    command = "zramctl --bytes --output NAME,DISKSIZE,DATA,COMPR,ALGORITHM,TOTAL,STREAMS,MOUNTPOINT"

    @staticmethod
    def parse(output: str) -> list[dict]:
        lines = [line for line in output.splitlines() if line.strip()]
        if not lines or not re.match(r"\s*NAME\s", lines[0] + " "):
            return []
        devices = []
        for row in lines[1:]:
            cells = _columns(lines[0], row)
            if not cells.get("NAME", "").startswith("/dev/"):
                continue
            device: dict = {key: cells.get(col) for col, key in _TEXT_COLUMNS.items()}
            device.update({key: _size(cells.get(col)) for col, key in _SIZE_COLUMNS.items()})
            streams = cells.get("STREAMS")
            device["streams"] = int(streams) if streams and streams.isdecimal() else None
            devices.append(device)
        return devices


class DefaultTarget(Fact):
    """`systemctl get-default`: 'graphical', 'multi-user' or another target's name without '.target'."""

    name = "default_target"
    command = "systemctl get-default"

    @staticmethod
    def parse(output: str) -> str | None:
        m = re.search(r"^\s*([\w@:.-]+)\.target\s*$", output, re.M)
        return m[1] if m else None


# Processes of a desktop session (names as `ps -o comm` shows them: at most 15 characters).
DESKTOP_NAMES = ("Xorg", "Xwayland", "gnome-shell", "gdm3", "gdm-session-wor", "gdm-wayland-ses", "gdm-x-session",
                 "gnome-session-b", "gnome-session-c", "gnome-keyring-d", "gnome-software", "nautilus",
                 "nautilus-deskto", "unity-settings-", "compiz", "lightdm", "ibus-daemon", "ibus-x11",
                 "ibus-extension-", "evolution-alarm", "evolution-sourc", "evolution-calen", "evolution-addre",
                 "tracker-miner-f", "goa-daemon", "goa-identity-se", "xdg-desktop-por", "gsd-*", "at-spi*",
                 "mutter-x11-fram", "nm-applet", "update-notifier", "gvfs*", "pulseaudio", "pipewire*",
                 "wireplumber", "zeitgeist*", "snap-store")


def _is_desktop(name: str) -> bool:
    return any(name.startswith(n[:-1]) if n.endswith("*") else name == n for n in DESKTOP_NAMES)


class DesktopSession(Fact):
    """The resident memory of the desktop session's processes (DESKTOP_NAMES) from `ps -eo rss=,comm=`:
    {'bytes': total, 'processes': {name: bytes}}. RSS counts shared pages in each process, so the total is an
    upper estimate of what booting headless frees."""

    name = "desktop_memory"
    command = "ps -eo rss=,comm="

    @staticmethod
    def parse(output: str) -> dict:
        processes: dict[str, int] = {}
        for line in output.splitlines():
            parts = line.split(None, 1)
            if len(parts) != 2 or not parts[0].isdecimal():
                continue
            name = parts[1].strip()
            if _is_desktop(name):
                processes[name] = processes.get(name, 0) + int(parts[0]) * 1024
        return {"bytes": sum(processes.values()), "processes": processes}
