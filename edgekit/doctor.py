"""`edgekit doctor`: the known pains of a Jetson running llama.cpp, each one check of facts with a verdict that names
its fix (docs/troubleshooting.md is the same list, keyed by what edgekit prints). Read-only: facts only.

Each check is pure: Findings in, a Finding (what was found, why it hurts, the fix) or None out. A check whose facts
are missing (not a Jetson, no build installed, no sudo for jetson_clocks) finds nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from edgekit import errors
from edgekit.facts.base import gather
from edgekit.facts.device import ALL_FACTS, DeviceFacts, derive
from edgekit.facts.health import DOCTOR_FACTS

WARNING, PROBLEM = "warning", "problem"
# the exit code of `edgekit doctor` by its worst finding (0: none); docs/troubleshooting.md lists them
EXIT_CODES = {WARNING: errors.DOCTOR_WARNING, PROBLEM: errors.DOCTOR_PROBLEM}

NVMAP_BUG_L4T = ("36.4.7",)              # CUDA allocations fail in NvMap on this release
NON_SUPER_GPU_MAX_HZ = 624_750_000       # the Orin Nano's GPU cap without the Super configuration
SMALL_BOARD_BYTES = 8 * 2**30            # "8 GB" boards report ~7.4 GiB
DISK_FREE_MIN_BYTES = 2 * 2**30
DISK_FREE_MIN_SHARE = 0.05
CLOCK_SKEW_MAX_S = 60.0                  # TLS certificates and apt's Release files start failing well past this
ZRAM_SHARE_OF_RAM = 0.5                  # nvzramconfig's default: zram as large as half the RAM
SLOW_SWAP = ("eMMC", "SD", "eMMC or SD")


@dataclass
class DoctorFacts:
    device: DeviceFacts
    server: dict | None = None            # facts.health.InstalledServer
    login_cuda: dict = field(default_factory=dict)    # facts.health.LoginShellCuda
    clock_offset_s: float | None = None   # device clock minus this machine's (midpoint of the read)
    clock_uncertainty_s: float = 0.0      # half the round trip that read it


@dataclass
class Finding:
    check: str
    severity: str
    found: str
    fix: str


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def nvmap_release(f: DoctorFacts) -> Finding | None:
    l4t = (f.device.jetson or {}).get("l4t")
    if l4t in NVMAP_BUG_L4T:
        return Finding("nvmap-l4t", PROBLEM, f"L4T {l4t}: CUDA allocations fail in NvMap on this release "
                       "(NvMapMemAllocInternalTagged ... error 12; llama-server dies loading the model)",
                       "move off L4T 36.4.7: `sudo apt-get update && sudo apt-get dist-upgrade` to a later r36.4 "
                       "release (or reflash JetPack 6.2.1, L4T 36.4.4), then reboot")
    return None


def super_mode_capped(f: DoctorFacts) -> Finding | None:
    clocks = (f.device.tuning or {}).get("clocks") or {}
    mode = ((f.device.tuning or {}).get("power_mode") or {}).get("name") or clocks.get("power_mode")
    gpu_max = clocks.get("gpu_max_hz")
    if mode and "SUPER" in mode.upper() and gpu_max and gpu_max <= NON_SUPER_GPU_MAX_HZ:
        return Finding("super-capped", PROBLEM, f"power mode {mode}, but the GPU tops out at {gpu_max / 1e6:.0f} MHz "
                       "(Super mode runs it at 1020 MHz): the board was not flashed with the Super configuration",
                       "reflash with JetPack 6.2's Super configuration (jetson-orin-nano-devkit-super.conf), then "
                       f"`edgekit provision {f.device.target} --power-mode MAXN_SUPER`")
    return None


def cuda_runtime_mismatch(f: DoctorFacts) -> Finding | None:
    stamp = (f.server or {}).get("stamp") or {}
    built = stamp.get("cuda_version")
    if stamp.get("backend") != "cuda" or not built:
        return None
    loaded = (f.server or {}).get("cudart_version")
    if loaded and not (built == loaded or built.startswith(loaded + ".")):
        return Finding("cuda-runtime", PROBLEM, f"llama-server was built with CUDA {built} but loads the CUDA "
                       f"{loaded} runtime ({f.server['cudart']})",
                       "remove the other CUDA from the library path (LD_LIBRARY_PATH, /etc/ld.so.conf.d), or rebuild "
                       f"against it: `edgekit provision {f.device.target}`")
    shell = f.login_cuda.get("nvcc_version")
    if shell and shell != built:
        return Finding("cuda-runtime", WARNING, f"a login shell finds CUDA {shell} first ({f.login_cuda['nvcc']}) "
                       f"while the build used CUDA {built}: what you build or run by hand mixes toolkits",
                       f"point PATH and LD_LIBRARY_PATH in ~/.bashrc at /usr/local/cuda-{built} (or /usr/local/cuda)")
    return None


def cpu_only_build(f: DoctorFacts) -> Finding | None:
    server, jetson = f.server, f.device.jetson
    if not server or not jetson or not jetson.get("compute_capability"):
        return None
    stamp = server.get("stamp") or {}
    if stamp.get("backend") == "cpu" or (server.get("ggml") and "libggml-cuda" not in server["ggml"]):
        return Finding("cpu-only-build", PROBLEM, f"the installed llama.cpp ({stamp.get('version', '?')}) is "
                       "CPU-only on a Jetson with a GPU: it runs several times slower",
                       "install the CUDA toolkit (`sudo apt-get install nvidia-jetpack`), then "
                       f"`edgekit provision {f.device.target}` (without --cpu)")
    return None


def swap_on_card(f: DoctorFacts) -> Finding | None:
    slow = [s for s in (f.device.tuning or {}).get("swap") or [] if s.get("kind") in SLOW_SWAP]
    if slow:
        where = ", ".join(f"{s['path']} ({s['kind']})" for s in slow)
        return Finding("swap-on-card", WARNING, f"swap on {where}: a model that swaps there crawls, and it wears the "
                       "card", f"`sudo swapoff {slow[0]['path']}`, and a swap file on NVMe: `edgekit provision "
                       f"{f.device.target} --swap 8G --swap-path /mnt/nvme/swapfile`")
    return None


def zram_eats_ram(f: DoctorFacts) -> Finding | None:
    total = (f.device.memory or {}).get("total_bytes")
    zram = (f.device.tuning or {}).get("zram") or []
    if not total or not zram:
        return None
    disksize = sum(d.get("disksize_bytes") or 0 for d in zram)
    used = sum(d.get("total_bytes") or 0 for d in zram)
    if total <= SMALL_BOARD_BYTES and disksize >= ZRAM_SHARE_OF_RAM * total:
        return Finding("zram", WARNING, f"zram of {_gib(disksize)} on {_gib(total)} of RAM ({_gib(used)} in use): "
                       "what it compresses still lives in RAM, and the model cannot be swapped out to it",
                       "`sudo systemctl disable --now nvzramconfig` and reboot, then a swap file on NVMe: "
                       f"`edgekit provision {f.device.target} --swap 8G --swap-path /mnt/nvme/swapfile`")
    return None


def desktop_on_small_board(f: DoctorFacts) -> Finding | None:
    total = (f.device.memory or {}).get("total_bytes")
    tuning = f.device.tuning or {}
    desktop = tuning.get("desktop_bytes") or 0
    if f.device.jetson and total and total <= SMALL_BOARD_BYTES and tuning.get("headless") is False and desktop:
        return Finding("desktop", WARNING, f"the desktop runs on a {_gib(total)} board and holds {_gib(desktop)} "
                       "that the model could use", f"`edgekit provision {f.device.target} --headless` "
                       "(boots to multi-user.target from the next boot)")
    return None


def disk_nearly_full(f: DoctorFacts) -> Finding | None:
    disk = f.device.disk or {}
    free, size = disk.get("free_bytes"), disk.get("total_bytes")
    if free is None or not size:
        return None
    if free < DISK_FREE_MIN_BYTES or free < DISK_FREE_MIN_SHARE * size:
        return Finding("disk", PROBLEM, f"{_gib(free)} free of {_gib(size)} at {disk.get('path')}: builds (about "
                       "1 GiB each) and models do not fit", f"free space on the file system holding {disk.get('path')} "
                       "(`sudo du -xsh /opt/edgekit/* /var/cache/* | sort -h`; old builds are under /opt/edgekit/"
                       "llama.cpp)")
    return None


def clock_skew(f: DoctorFacts) -> Finding | None:
    offset = f.clock_offset_s
    if offset is None or abs(offset) - f.clock_uncertainty_s <= CLOCK_SKEW_MAX_S:
        return None
    side = "ahead of" if offset > 0 else "behind"
    return Finding("clock", PROBLEM, f"the device's clock is {abs(offset):,.0f} s {side} this machine's: TLS "
                   "downloads fail (certificate not yet valid / expired) and apt refuses its lists",
                   "`sudo timedatectl set-ntp true` on the device (or set the time by hand: `sudo date -s "
                   "'YYYY-MM-DD HH:MM:SS'`)")


CHECKS: list[Callable[[DoctorFacts], Finding | None]] = [
    nvmap_release, super_mode_capped, cuda_runtime_mismatch, cpu_only_build, swap_on_card, zram_eats_ram,
    desktop_on_small_board, disk_nearly_full, clock_skew]


def examine(facts: DoctorFacts) -> list[Finding]:
    """Pure: every check's finding, problems first."""
    found = [finding for check in CHECKS if (finding := check(facts)) is not None]
    return sorted(found, key=lambda x: x.severity != PROBLEM)


def exit_code(findings: list[Finding]) -> int:
    """0 when nothing was found, else the code of the worst finding."""
    return max((EXIT_CODES[x.severity] for x in findings), default=0)


def read(transport) -> DoctorFacts:
    """Every fact the checks need, in one round trip (read-only)."""
    before = time.time()
    raw = gather(lambda script: transport.run(script, check=False).stdout, [*ALL_FACTS, *DOCTOR_FACTS])
    after = time.time()
    device_clock = raw.get("device_clock")
    return DoctorFacts(device=derive(transport.name, raw), server=raw.get("installed_server"),
                       login_cuda=raw.get("login_shell_cuda") or {},
                       clock_offset_s=None if device_clock is None else device_clock - (before + after) / 2,
                       clock_uncertainty_s=(after - before) / 2)


def to_json(facts: DoctorFacts, findings: list[Finding]) -> dict[str, Any]:
    return {"target": facts.device.target, "checks": [c.__name__ for c in CHECKS],
            "findings": [asdict(x) for x in findings], "exit_code": exit_code(findings)}
