"""Pure: jetson-stats' `jtop.stats` dict (plus optionally `jtop.memory` / `jtop.gpu`) -> one typed Sample.

jtop's stats dict is dynamic: keys like 'CPU1'..'CPUn', 'GPU', 'RAM' (a fraction in 4.x, kB in 2.x/3.x),
'SWAP', 'EMC', 'Temp gpu' (-256 = sensor off), 'Power VDD_SOC', 'Power TOT' (4.x) or 'power cur' (older),
'jetson_clocks' ('ON'/'OFF'), 'nvp model'; any value may be the string 'OFF'. This is the one boundary where
that dict becomes typed data.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Dict, Optional

from edgekit.telemetry.sample import Sample

OFF_SENSOR_C = -256.0


def _num(value: Any) -> Optional[float]:
    """A finite number, or None ('OFF' and friends, NaN, infinities, anything else)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value) if isinstance(value, (int, float)) else float(str(value).strip().rstrip("%"))
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _field(parent: Any, *keys: str) -> Optional[float]:
    """A number found at parent[key][key]...; None when any level is missing or not what jtop writes."""
    for key in keys:
        if not isinstance(parent, dict):
            return None
        parent = parent.get(key)
    return _num(parent)


def from_stats(stats: Dict[str, Any], memory: Optional[Dict[str, Any]] = None,
               gpu: Optional[Dict[str, Any]] = None, time: Optional[float] = None,
               ram_total_mb: Optional[float] = None) -> Sample:
    """Convert jtop's stats (and its memory/gpu dicts when given) into a Sample.

    jetson-stats 4.x gives RAM only as a used fraction in `stats`; MiB need `memory` or the caller's
    `ram_total_mb` (e.g. from /proc/meminfo)."""
    if time is None and isinstance(stats.get("time"), _dt.datetime):
        time = stats["time"].timestamp()
    s = Sample(source="jtop", time=time)
    cpus = sorted((int(k[3:]), v) for k, v in stats.items() if k.startswith("CPU") and k[3:].isdecimal())
    s.cpu_load_pct = [_num(v) for _, v in cpus]
    s.gpu_load_pct = _num(stats.get("GPU"))
    s.emc_load_pct = _num(stats.get("EMC")) if _is_percent(stats.get("EMC")) else None
    ram, swap = _num(stats.get("RAM")), _num(stats.get("SWAP"))
    mem = memory if isinstance(memory, dict) else {}
    if _field(mem, "RAM", "used") is not None and _field(mem, "RAM", "tot") is not None:
        s.ram_used_mb, s.ram_total_mb = _field(mem, "RAM", "used") / 1024, _field(mem, "RAM", "tot") / 1024
    elif ram is not None and ram > 1.0:      # jetson-stats 2.x/3.x: kB used
        s.ram_used_mb = ram / 1024
    elif ram is not None and ram_total_mb:   # 4.x fraction
        s.ram_used_mb, s.ram_total_mb = ram * ram_total_mb, ram_total_mb
    if _field(mem, "SWAP", "used") is not None and _field(mem, "SWAP", "tot") is not None:
        s.swap_used_mb, s.swap_total_mb = _field(mem, "SWAP", "used") / 1024, _field(mem, "SWAP", "tot") / 1024
    elif swap is not None and swap > 1.0:
        s.swap_used_mb = swap / 1024
    if _field(mem, "EMC", "cur"):
        s.emc_freq_mhz = _field(mem, "EMC", "cur") / 1000          # kHz
    if _field(gpu, "gpu", "freq", "cur") is not None:
        s.gpu_freq_mhz = _field(gpu, "gpu", "freq", "cur") / 1000  # kHz
    for key, value in stats.items():
        if key.startswith("Temp "):
            c = _num(value)
            if c is not None and c > OFF_SENSOR_C:
                s.temps_c[key[5:].lower()] = c
        elif key.startswith("Power ") and key != "Power TOT":
            mw = _num(value)
            if mw is not None:
                s.power_mw[key[6:]] = mw
    total = _num(stats.get("Power TOT"))
    if total is not None:
        s.power_total_mw, s.power_total_from = total, "Power TOT"
    elif _num(stats.get("power cur")) is not None:
        s.power_total_mw, s.power_total_from = _num(stats["power cur"]), "power cur"
    clocks = stats.get("jetson_clocks")
    if isinstance(clocks, str) and clocks.upper() in ("ON", "OFF"):
        s.jetson_clocks = clocks.upper() == "ON"
    mode = stats.get("nvp model")
    s.power_mode = str(mode) if mode not in (None, "") else None
    return s


def _is_percent(value: Any) -> bool:
    """jetson-stats 4.x reports EMC as a load %; 2.x/3.x printed a kB-sized number there."""
    n = _num(value)
    return n is not None and 0 <= n <= 100


def parse_old_api_as_printed(text: str) -> Dict[str, Any]:
    """Turn the `<key>, <value>` listing of an old (2.x/3.x) jtop.stats dump back into a dict (tests, logs)."""
    out: Dict[str, Any] = {}
    for line in text.splitlines():
        if ", " not in line or line.startswith("<key>"):
            continue
        key, value = line.split(", ", 1)
        n = _num(value)
        out[key] = value if n is None or key in ("time", "uptime") else (int(n) if n.is_integer() else n)
    return out
