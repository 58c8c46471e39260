"""Jetson identity files planted in a stand-in, so the Jetson code paths of facts and planning run.

Only identity is planted (L4T release, device-tree model and compatible, and on an aarch64 stand-in the SoC's
/proc/cpuinfo): never CUDA, never a GPU. The boards
and their identity files are edgekit.facts.boards.BOARDS (those with a `release`).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.facts import boards
from edgekit.facts.boards import cpuinfo_text

# The slugs `sandbox up --jetson` offers: every board with identity files (older aliases are accepted too).
PROFILES: list[str] = [b.slug for b in boards.BOARDS if b.release]


def profile(slug: str) -> boards.Board | None:
    """The board a `--jetson` slug plants (an alias gives its board); None when it has no identity files."""
    board = boards.board(slug)
    return board if board is not None and board.release else None


TOOLS = Path(__file__).resolve().parent / "jetson_tools"
# The boards whose power modes edgekit has captured: their nvpmodel.conf, played by the stand-in nvpmodel.
NVPMODEL_CONFS = {"orin-nano-8gb": "nvpmodel-p3767-0003-super.conf"}      # L4T R36.4.3+: the Super modes
NVPMODEL_SERVICE = """[Unit]
Description=nvpmodel (edgekit stand-in: applies the mode in /var/lib/nvpmodel/status at boot)

[Service]
Type=oneshot
ExecStart=/usr/sbin/nvpmodel

[Install]
WantedBy=multi-user.target
"""


def plant_tools(root: Path, slug: str) -> bool:
    """Install the stand-in nvpmodel and jetson_clocks (edgekit/sandbox/jetson_tools, the real command-line
    contract) with the board's captured /etc/nvpmodel.conf and an nvpmodel.service; False when none is captured."""
    conf = NVPMODEL_CONFS.get(slug)
    if conf is None:
        return False
    for name, dest in (("nvpmodel", "usr/sbin/nvpmodel"), ("jetson_clocks", "usr/bin/jetson_clocks")):
        (root / dest).write_bytes((TOOLS / name).read_bytes())
        (root / dest).chmod(0o755)
    (root / "etc/nvpmodel.conf").write_bytes((TOOLS / conf).read_bytes())
    (root / "var/lib/nvpmodel").mkdir(parents=True, exist_ok=True)
    (root / "etc/systemd/system/nvpmodel.service").write_text(NVPMODEL_SERVICE)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "nvpmodel.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/nvpmodel.service")
    return True


CPUINFO = "etc/edgekit-standin/cpuinfo"
# systemd-nspawn cannot bind a file over /proc/cpuinfo (its custom mounts are made before it mounts the container's
# /proc, which covers them): the stand-in binds the planted file itself, early at boot.
CPUINFO_SERVICE = f"""[Unit]
Description=edgekit stand-in: the planted board's /proc/cpuinfo (docs/aarch64-standin.md)
DefaultDependencies=no
Before=sysinit.target
ConditionPathExists=/{CPUINFO}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount --bind /{CPUINFO} /proc/cpuinfo

[Install]
WantedBy=sysinit.target
"""


def plant_cpuinfo(root: Path, slug: str, machine: str) -> bool:
    """Plant the board's /proc/cpuinfo (bound over the stand-in's own at boot) when the stand-in has the board's
    architecture (aarch64): an x86 stand-in keeps its real CPU, whose features its builds must match.
    False when nothing was planted."""
    board = profile(slug)
    text = cpuinfo_text(boards.module(board.part).soc, os.cpu_count() or 1) if board else None
    if machine != "aarch64" or text is None:
        return False
    (root / CPUINFO).parent.mkdir(parents=True, exist_ok=True)
    (root / CPUINFO).write_text(text)
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    unit = root / "etc/systemd/system/edgekit-standin-cpuinfo.service"
    unit.write_text(CPUINFO_SERVICE)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    return True


def plant(root: Path, firmware: Path, slug: str) -> None:
    """Write /etc/nv_tegra_release into the rootfs and a device tree to bind over the guest's /sys/firmware."""
    board = profile(slug)
    if board is None:
        raise KeyError(slug)
    (root / "etc/nv_tegra_release").write_text(board.release + "\n")
    base = firmware / "devicetree" / "base"
    base.mkdir(parents=True, exist_ok=True)
    # The kernel's device-tree strings end in NUL, which the parsers must cope with.
    (base / "model").write_bytes(board.dt_model.encode() + b"\0")
    (base / "compatible").write_bytes(b"".join(c.encode() + b"\0" for c in board.dt_compatible))
    plant_tools(root, board.slug)
