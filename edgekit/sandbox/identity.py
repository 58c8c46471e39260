"""Jetson identity files planted in a stand-in, so the Jetson code paths of facts and planning run.

Only identity is planted (L4T release, device-tree model and compatible): never CUDA, never a GPU.
"""

from __future__ import annotations

from pathlib import Path

# name -> (nv_tegra_release first line, device-tree model, device-tree compatible entries)
PROFILES: dict[str, tuple[str, str, list[str]]] = {
    "orin-nano-8gb": (
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025",
        "NVIDIA Jetson Orin Nano Developer Kit",
        ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
    ),
    "orin-nano-4gb": (
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025",
        "NVIDIA Jetson Orin Nano Developer Kit",
        ["nvidia,p3768-0000+p3767-0004", "nvidia,p3767-0004", "nvidia,tegra234"],
    ),
    "agx-orin": (
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
        "DATE: Tue Aug  1 19:57:35 UTC 2023",
        "Jetson AGX Orin Developer Kit",
        ["nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234"],
    ),
    "xavier-nx": (
        "# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, "
        "DATE: Tue Feb 20 04:46:31 UTC 2024",
        "NVIDIA Jetson Xavier NX Developer Kit",
        ["nvidia,p3509-0000+p3668-0001", "nvidia,p3668-0001", "nvidia,tegra194"],
    ),
    "nano": (
        "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, "
        "DATE: Fri Jun  9 04:25:08 UTC 2023",
        "NVIDIA Jetson Nano Developer Kit",
        ["nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210"],
    ),
}


def plant(root: Path, firmware: Path, profile: str) -> None:
    """Write /etc/nv_tegra_release into the rootfs and a device tree to bind over the guest's /sys/firmware."""
    release, model, compatible = PROFILES[profile]
    (root / "etc/nv_tegra_release").write_text(release + "\n")
    base = firmware / "devicetree" / "base"
    base.mkdir(parents=True, exist_ok=True)
    # The kernel's device-tree strings end in NUL, which the parsers must cope with.
    (base / "model").write_bytes(model.encode() + b"\0")
    (base / "compatible").write_bytes(b"".join(c.encode() + b"\0" for c in compatible))
