"""What edgekit knows about Jetson modules, boards and L4T releases (data, no I/O).

Sources: NVIDIA's Jetson module data sheets (memory bandwidth), NVIDIA's nvpmodel.conf files (each power mode's
memory clock cap, hence its bandwidth), the CUDA GPU compute capability table, the L4T/JetPack release notes, and
captured output of real boards (tests/fixtures/captured.py).

`BOARDS` is the one table of boards users name by slug: `edgekit models fit --board SLUG` reads its RAM and
`edgekit sandbox up --jetson SLUG` plants its identity files.
"""

from __future__ import annotations

from dataclasses import dataclass


# Peak LPDDR5 bandwidth at the two memory clocks the Orin Nano/NX power modes cap the EMC at: 2133 MHz and
# 3199 MHz, x2 (double data rate) x the bus width (128 bit on Orin NX and Orin Nano 8GB, 64 bit on the 4GB).
# The caps are NVIDIA's, in each mode's `EMC MAX_FREQ` of the module's nvpmodel.conf (JetPack 6.2 *_super.conf
# files as copied into github.com/LineageOS/android_device_nvidia_concord, nvpmodel/, commit 370b63a8; the
# p3767-0003 one is edgekit/sandbox/jetson_tools/nvpmodel-p3767-0003-super.conf): Orin Nano 8GB 15W 2133 MHz, 25W
# 3199, MAXN_SUPER uncapped (3199); Orin Nano 4GB 10W 2133, 25W 3199, MAXN_SUPER uncapped; Orin NX 16GB 10W 2133,
# the others uncapped. Before JetPack 6.2 an Orin Nano ran its memory at 2133 MHz at most (7W and 15W: 68 GB/s).
_NANO_8GB_MODES = (("7W", 68.0), ("15W", 68.0), ("25W", 102.0), ("MAXN_SUPER", 102.0))
_NANO_4GB_MODES = (("10W", 34.0), ("25W", 51.0), ("MAXN_SUPER", 51.0))
_NX_MODES = (("10W", 68.0),)


@dataclass(frozen=True)
class Module:
    part: str               # module part number prefix as it appears in device-tree compatible, e.g. p3767-0005
    name: str
    family: str             # orin, xavier, nano, tx2, thor
    soc: str
    compute_capability: str
    memory_gb: float
    bandwidth_gbs: float    # peak LPDDR bandwidth in a power mode `mode_bandwidth_gbs` does not name
    # (power mode name, GB/s) where a mode's memory clock cap sets another bandwidth than `bandwidth_gbs`
    mode_bandwidth_gbs: tuple[tuple[str, float], ...] = ()

    def bandwidth_in(self, power_mode: str | None) -> float:
        """The peak memory bandwidth in this power mode (by name, without case); `bandwidth_gbs` for a mode the
        table does not name or an unknown one."""
        wanted = (power_mode or "").strip().upper()
        return next((gbs for name, gbs in self.mode_bandwidth_gbs if name.upper() == wanted), self.bandwidth_gbs)

    @property
    def max_bandwidth_gbs(self) -> float:
        """The highest bandwidth any of its power modes gets."""
        return max([self.bandwidth_gbs, *(gbs for _, gbs in self.mode_bandwidth_gbs)])


MODULES: list[Module] = [
    Module("p3767-0000", "Jetson Orin NX 16GB", "orin", "tegra234", "8.7", 16, 102.4, _NX_MODES),
    Module("p3767-0001", "Jetson Orin NX 8GB", "orin", "tegra234", "8.7", 8, 102.4),
    Module("p3767-0003", "Jetson Orin Nano 8GB", "orin", "tegra234", "8.7", 8, 68.0, _NANO_8GB_MODES),
    Module("p3767-0004", "Jetson Orin Nano 4GB", "orin", "tegra234", "8.7", 4, 34.0, _NANO_4GB_MODES),
    Module("p3767-0005", "Jetson Orin Nano 8GB (developer kit)", "orin", "tegra234", "8.7", 8, 68.0, _NANO_8GB_MODES),
    Module("p3701-0000", "Jetson AGX Orin 32GB", "orin", "tegra234", "8.7", 32, 204.8),
    Module("p3701-0004", "Jetson AGX Orin 32GB", "orin", "tegra234", "8.7", 32, 204.8),
    Module("p3701-0005", "Jetson AGX Orin 64GB", "orin", "tegra234", "8.7", 64, 204.8),
    Module("p3701-0008", "Jetson AGX Orin Industrial 64GB", "orin", "tegra234", "8.7", 64, 204.8),
    Module("p3668-0000", "Jetson Xavier NX", "xavier", "tegra194", "7.2", 8, 59.7),
    Module("p3668-0001", "Jetson Xavier NX", "xavier", "tegra194", "7.2", 8, 59.7),
    Module("p3668-0003", "Jetson Xavier NX 16GB", "xavier", "tegra194", "7.2", 16, 59.7),
    Module("p2888-0001", "Jetson AGX Xavier 16GB", "xavier", "tegra194", "7.2", 16, 136.5),
    Module("p2888-0004", "Jetson AGX Xavier 32GB", "xavier", "tegra194", "7.2", 32, 136.5),
    Module("p2888-0005", "Jetson AGX Xavier 64GB", "xavier", "tegra194", "7.2", 64, 136.5),
    Module("p2888-0008", "Jetson AGX Xavier Industrial", "xavier", "tegra194", "7.2", 32, 136.5),
    Module("p3448-0000", "Jetson Nano 4GB", "nano", "tegra210", "5.3", 4, 25.6),
    Module("p3448-0002", "Jetson Nano 4GB (eMMC)", "nano", "tegra210", "5.3", 4, 25.6),
    Module("p3448-0003", "Jetson Nano 2GB", "nano", "tegra210", "5.3", 2, 25.6),
    Module("p3310", "Jetson TX2", "tx2", "tegra186", "6.2", 8, 59.7),
    Module("p3636", "Jetson TX2 NX", "tx2", "tegra186", "6.2", 4, 51.2),
    Module("p3834", "Jetson AGX Thor", "thor", "tegra264", "11.0", 128, 273.0),
]

def module(part: str) -> Module:
    """The module with this exact part number (KeyError when unknown)."""
    found = next((m for m in MODULES if m.part == part), None)
    if found is None:
        raise KeyError(part)
    return found


# SoC -> compute capability, for boards whose module part number is unknown.
SOC_COMPUTE = {"tegra234": "8.7", "tegra194": "7.2", "tegra186": "6.2", "tegra210": "5.3", "tegra264": "11.0"}
MIN_COMPUTE = (7, 2)  # llama.cpp's CUDA backend and current JetPacks: Xavier (sm_72) and newer

# L4T (major, minor, patch) -> JetPack. Patch None matches any patch of that minor.
L4T_TO_JETPACK: list[tuple[tuple[int, int, int | None], str]] = [
    ((38, 2, None), "7.0"),
    ((36, 4, 4), "6.2.1"), ((36, 4, 3), "6.2"), ((36, 4, 0), "6.1"), ((36, 3, None), "6.0"),
    ((36, 2, None), "6.0 DP"),
    ((35, 6, None), "5.1.4"), ((35, 5, None), "5.1.3"), ((35, 4, None), "5.1.2"), ((35, 3, None), "5.1.1"),
    ((35, 2, None), "5.1"), ((35, 1, None), "5.0.2"),
    ((34, 1, None), "5.0.1 DP"),
    ((32, 7, 6), "4.6.6"), ((32, 7, 5), "4.6.5"), ((32, 7, 4), "4.6.4"), ((32, 7, 3), "4.6.3"),
    ((32, 7, 2), "4.6.2"), ((32, 7, 1), "4.6.1"), ((32, 6, None), "4.6"), ((32, 5, None), "4.5"),
    ((32, 4, None), "4.4"),
]


def jetpack_for(l4t: str | None) -> str | None:
    """Map an L4T version like '36.4.3' to its JetPack release ('6.2'), or None when unknown."""
    if not l4t:
        return None
    try:
        parts = [int(p) for p in l4t.split(".")]
    except ValueError:
        return None
    major, minor, patch = (parts + [0, 0, 0])[:3]
    for (ma, mi, pa), jetpack in L4T_TO_JETPACK:
        if ma == major and mi == minor and (pa is None or pa == patch):
            return jetpack
    return None


def module_for(compatible: list[str], model: str | None = None) -> Module | None:
    """Find the module from device-tree compatible strings (most specific first), else from the model name."""
    for entry in compatible:
        for piece in entry.replace("nvidia,", "").split("+"):
            for m in MODULES:
                if piece == m.part or piece.startswith(m.part + "-"):
                    return m
    text = (model or "").lower()
    guesses = [("orin nano", "p3767-0005"), ("orin nx", "p3767-0000"), ("agx orin", "p3701-0005"),
               ("xavier nx", "p3668-0001"), ("agx xavier", "p2888-0001"), ("jetson nano", "p3448-0000"),
               ("tx2", "p3310"), ("thor", "p3834")]
    for needle, part in guesses:
        if needle in text:
            return module(part)
    return None


# (CPU implementer, CPU part) in an Arm /proc/cpuinfo -> the core's name.
ARM_CORES = {("0x41", "0xd42"): "Cortex-A78AE", ("0x41", "0xd07"): "Cortex-A57", ("0x41", "0xd08"): "Cortex-A72",
             ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd05"): "Cortex-A55", ("0x41", "0xd0c"): "Neoverse-N1",
             ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd4f"): "Neoverse-V2", ("0x4e", "0x004"): "Carmel"}

# One CPU's block of /proc/cpuinfo on each SoC's cores, as an L4T kernel prints it: Orin's Cortex-A78AE (dot
# product, half precision), Xavier's Carmel (half precision, no dot product), the Nano's Cortex-A57. Written from
# the cores' documented features (Arm's and NVIDIA's), not captured on a board: `sandbox up --arch arm64 --jetson`
# shows them to the stand-in as its /proc/cpuinfo.
SOC_CPUINFO = {
    "tegra234": ("BogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                 "asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg\nCPU implementer\t: 0x41\n"
                 "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd42\nCPU revision\t: 1\n"),
    "tegra194": ("BogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                 "asimdrdm dcpop\nCPU implementer\t: 0x4e\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                 "CPU part\t: 0x004\nCPU revision\t: 0\n"),
    "tegra210": ("BogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\n"
                 "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd07\n"
                 "CPU revision\t: 1\n"),
}


def cpuinfo_text(soc: str, cpus: int) -> str | None:
    """Pure: /proc/cpuinfo of `cpus` cores of a SoC (None when edgekit has no block for it)."""
    block = SOC_CPUINFO.get(soc)
    return "".join(f"processor\t: {n}\n{block}\n" for n in range(max(1, cpus))) if block else None


MiB = 2**20
# First lines of /etc/nv_tegra_release, one per L4T release a board below was captured on.
_R36_4_3 = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
            "DATE: Wed Jan  8 01:49:37 UTC 2025")
_R35_4_1 = ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
            "DATE: Tue Aug  1 19:57:35 UTC 2023")
_R35_5_0 = ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, "
            "DATE: Tue Feb 20 04:46:31 UTC 2024")
_R32_7_4 = ("# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64, "
            "DATE: Fri Jun  9 04:25:08 UTC 2023")


@dataclass(frozen=True)
class Board:
    """A board users name by its slug: its module, the RAM its kernel reports, and its identity files."""

    slug: str
    part: str                            # Module.part of the board's module
    ram_bytes: int | None = None         # total RAM as the kernel reports it on a real one (None: not captured)
    release: str | None = None           # /etc/nv_tegra_release's first line (None: no stand-in identity)
    dt_model: str = ""                   # /proc/device-tree/model
    dt_compatible: tuple[str, ...] = ()  # /proc/device-tree/compatible, most specific first

    @property
    def name(self) -> str:
        """The product name ('Jetson Orin Nano 8GB'), without the module table's carrier-board note."""
        return module(self.part).name.removesuffix(" (developer kit)")


BOARDS: list[Board] = [
    # RAM: tegrastats "RAM 6185/7620MB" on an Orin Nano 8GB developer kit, JetPack 6 (TEGRASTATS_ORIN_NANO_JP6_*)
    Board("orin-nano-8gb", "p3767-0005", 7620 * MiB, _R36_4_3, "NVIDIA Jetson Orin Nano Developer Kit",
          ("nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234")),
    # RAM: jtop memory RAM tot 3688892 kB on an Orin Nano 4GB, JetPack 6.2 (JTOP_MEMORY_ORIN_NANO_4GB_JP6)
    Board("orin-nano-4gb", "p3767-0004", 3688892 * 1024, _R36_4_3, "NVIDIA Jetson Orin Nano Developer Kit",
          ("nvidia,p3768-0000+p3767-0004", "nvidia,p3767-0004", "nvidia,tegra234")),
    # RAM: tegrastats "RAM 6334/15388MB" on an Orin NX 16GB, JetPack 5 (TEGRASTATS_ORIN_NX_16GB_JP5)
    Board("orin-nx-16gb", "p3767-0000", 15388 * MiB),
    # RAM: tegrastats "RAM 1282/62795MB" on an AGX Orin 64GB, JetPack 5 (TEGRASTATS_AGX_ORIN_64GB_JP5_IDLE)
    Board("agx-orin-64gb", "p3701-0005", 62795 * MiB, _R35_4_1, "Jetson AGX Orin Developer Kit",
          ("nvidia,p3737-0000+p3701-0005", "nvidia,p3701-0005", "nvidia,tegra234")),
    Board("xavier-nx-8gb", "p3668-0001", None, _R35_5_0, "NVIDIA Jetson Xavier NX Developer Kit",
          ("nvidia,p3509-0000+p3668-0001", "nvidia,p3668-0001", "nvidia,tegra194")),
    Board("nano-4gb", "p3448-0000", None, _R32_7_4, "NVIDIA Jetson Nano Developer Kit",
          ("nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,jetson-nano", "nvidia,tegra210")),
]
# Slugs accepted before the tables were one (`sandbox up --jetson agx-orin` keeps working).
BOARD_ALIASES = {"agx-orin": "agx-orin-64gb", "xavier-nx": "xavier-nx-8gb", "nano": "nano-4gb"}


def board(slug: str) -> Board | None:
    """The board a slug (or an older alias of one) names; None when unknown."""
    slug = BOARD_ALIASES.get(slug, slug)
    return next((b for b in BOARDS if b.slug == slug), None)
