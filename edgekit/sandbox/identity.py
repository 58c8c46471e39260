"""Jetson identity files planted in a stand-in, so the Jetson code paths of facts and planning run.

Only identity is planted (L4T release, device-tree model and compatible): never CUDA, never a GPU. The boards
and their identity files are edgekit.facts.boards.BOARDS (those with a `release`).
"""

from __future__ import annotations

from pathlib import Path

from edgekit.facts import boards

# The slugs `sandbox up --jetson` offers: every board with identity files (older aliases are accepted too).
PROFILES: list[str] = [b.slug for b in boards.BOARDS if b.release]


def profile(slug: str) -> boards.Board | None:
    """The board a `--jetson` slug plants (an alias gives its board); None when it has no identity files."""
    board = boards.board(slug)
    return board if board is not None and board.release else None


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
