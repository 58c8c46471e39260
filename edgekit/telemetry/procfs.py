"""The fallback source for boards without jtop or tegrastats: /proc and /sys only (stdlib; no GPU, EMC or power).

Pure parsers (`parse_meminfo`, `parse_stat`, `cpu_loads`) plus `ProcfsReader`, which keeps the previous
/proc/stat reading to turn counters into per-CPU load.
"""

from __future__ import annotations

import glob
import os
from typing import Dict, List, Optional, Tuple

from edgekit.telemetry.sample import Sample

CpuTimes = Dict[int, Tuple[int, int]]   # cpu index -> (busy jiffies, total jiffies)


def parse_meminfo(text: str) -> Dict[str, int]:
    """/proc/meminfo -> {'MemTotal': kB, ...}."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdecimal():
            out[key.strip()] = int(parts[0])
    return out


def parse_stat(text: str) -> CpuTimes:
    """/proc/stat per-CPU lines -> {cpu: (busy, total)} jiffies (iowait counts as idle)."""
    out: CpuTimes = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        if not name[3:].isdecimal():
            continue
        if not all(v.isdecimal() for v in values[:8]):
            continue                     # not a kernel's line: left out, like an offline CPU
        nums = [int(v) for v in values[:8]] + [0] * max(0, 8 - len(values))
        idle = nums[3] + nums[4]
        total = sum(nums)
        out[int(name[3:])] = (total - idle, total)
    return out


def cpu_loads(before: CpuTimes, after: CpuTimes) -> List[Optional[float]]:
    """Per-CPU load % between two readings; None for a CPU missing from either (offline)."""
    if not after:
        return []
    loads: List[Optional[float]] = []
    for cpu in range(max(after) + 1):
        if cpu not in before or cpu not in after:
            loads.append(None)
            continue
        busy = after[cpu][0] - before[cpu][0]
        total = after[cpu][1] - before[cpu][1]
        loads.append(round(100.0 * busy / total, 1) if total > 0 else 0.0)
    return loads


def memory_fields(meminfo: Dict[str, int]) -> Dict[str, Optional[float]]:
    """MiB used/total for RAM (total - available, as `free` does) and swap."""
    def mb(kb: Optional[int]) -> Optional[float]:
        return None if kb is None else round(kb / 1024, 1)

    total, avail = meminfo.get("MemTotal"), meminfo.get("MemAvailable")
    stotal, sfree = meminfo.get("SwapTotal"), meminfo.get("SwapFree")
    return {
        "ram_total_mb": mb(total),
        "ram_used_mb": mb(total - avail) if total is not None and avail is not None else None,
        "swap_total_mb": mb(stotal),
        "swap_used_mb": mb(stotal - sfree) if stotal is not None and sfree is not None else None,
    }


def thermal_zones(root: str = "/sys/class/thermal") -> Dict[str, float]:
    """Temperatures from /sys/class/thermal/thermal_zone*/ (type -> C); empty in containers and most VMs."""
    temps: Dict[str, float] = {}
    for zone in sorted(glob.glob(os.path.join(root, "thermal_zone*"))):
        try:
            with open(os.path.join(zone, "type")) as fh:
                name = fh.read().strip().lower()
            with open(os.path.join(zone, "temp")) as fh:
                milli = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if milli > -256000:
            temps[name.replace("-thermal", "")] = milli / 1000.0
    return temps


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


class ProcfsReader:
    """Reads samples from /proc; the first call only primes the CPU counters (loads are over one interval)."""

    def __init__(self, proc: str = "/proc", sys_thermal: str = "/sys/class/thermal"):
        self.proc = proc
        self.sys_thermal = sys_thermal
        self._prev: Optional[CpuTimes] = None

    def read(self, time: Optional[float] = None) -> Sample:
        now = parse_stat(_read(os.path.join(self.proc, "stat")))
        loads = cpu_loads(self._prev, now) if self._prev is not None else [None] * (max(now) + 1 if now else 0)
        self._prev = now
        sample = Sample(source="procfs", time=time, cpu_load_pct=loads)
        for key, value in memory_fields(parse_meminfo(_read(os.path.join(self.proc, "meminfo")))).items():
            setattr(sample, key, value)
        sample.temps_c = thermal_zones(self.sys_thermal)
        return sample
