"""Pure parser of one `tegrastats` line (JetPack 4 to 7, every Jetson family) into a Sample.

Shapes handled, all seen in real captures (tests/fixtures/captured.py):
- an optional `MM-DD-YYYY HH:MM:SS` prefix (JetPack 5+); time itself comes from the caller's clock
- `CPU [38%@1497,off,...]` (off = core powered down), `EMC_FREQ 61%@2133` or `EMC_FREQ 0%` (not root)
- `GR3D_FREQ 0%@76`, `99%@[612]`, `14%@[407,407]` (one clock per GPC), `0%` (not root)
- temperatures `cpu@57.1C` (JP6 lower case), `CPU@47.9C` (JP4/5), `cpu@50.7C/50.7C` (JP7 cur/max);
  -256C is a sensor that is switched off and is left out
- rails `VDD_IN 16321mW/11204mW` (cur/avg), `VDD_IN 6140/5510` (JP4, no unit), three values (JP7),
  `NC 0mW/0mW` (not connected, ignored) and AGX Xavier's bare `GPU 0/0 CPU 311/311` (same words as temps)
- total power: the input rail (VDD_IN, POM_5V_IN) when present, else the sum of the rails (AGX Orin/Xavier)
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from edgekit.errors import ParseError
from edgekit.telemetry.sample import Sample

_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?(?![\w])")
# A rail: NAME cur[mW]/avg[mW][/max[mW]], ending at whitespace or end of line (so 'RAM 1/2MB' never matches).
_RAIL = re.compile(r"(?<![\w@])([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
OFF_SENSOR_C = -256.0


def parse_line(line: str, time: Optional[float] = None) -> Sample:
    """Parse one tegrastats line; raise ParseError (a ValueError) when it is not one (no RAM field)."""
    line = " ".join(line.split())
    ram = _RAM.search(line)
    if not ram:
        raise ParseError(f"not a tegrastats line: {line[:80]!r}", hint="run `tegrastats` on the device to see its output")
    sample = Sample(source="tegrastats", time=time, ram_used_mb=float(ram[1]), ram_total_mb=float(ram[2]))
    swap = _SWAP.search(line)
    if swap:
        sample.swap_used_mb, sample.swap_total_mb = float(swap[1]), float(swap[2])
    cpu = _CPU.search(line)
    if cpu:
        sample.cpu_load_pct, sample.cpu_freq_mhz = _cpus(cpu[1])
    emc = _EMC.search(line)
    if emc:
        sample.emc_load_pct = float(emc[1])
        sample.emc_freq_mhz = float(emc[2]) if emc[2] else None
    gpu = _GR3D.search(line)
    if gpu:
        sample.gpu_load_pct = float(gpu[1])
        clocks = [int(f) for f in gpu[2].split(",") if f] if gpu[2] else []
        if clocks:
            sample.gpu_freq_mhz = float(max(clocks))
    for name, value in _TEMP.findall(line):
        celsius = float(value)
        if celsius > OFF_SENSOR_C:
            sample.temps_c[name.lower()] = celsius
    rails = {}
    for name, cur, _avg, _max in _RAIL.findall(line):
        if name in _NOT_RAILS or name == "NC":
            continue
        rails[name] = float(cur)
    total_rail = next((r for r in INPUT_RAILS if r in rails), None)
    if total_rail:
        sample.power_total_mw = rails.pop(total_rail)
        sample.power_total_from = total_rail
    elif rails:
        sample.power_total_mw = float(sum(rails.values()))
        sample.power_total_from = "sum of rails"
    sample.power_mw = rails
    return sample


def _cpus(text: str) -> Tuple[List[Optional[float]], List[Optional[float]]]:
    loads: List[Optional[float]] = []
    freqs: List[Optional[float]] = []
    for core in text.split(","):
        core = core.strip()
        m = re.match(r"(\d+)%(?:@(\d+))?$", core)
        if not m:  # 'off' (core powered down) or something unknown
            loads.append(None)
            freqs.append(None)
            continue
        loads.append(float(m[1]))
        freqs.append(float(m[2]) if m[2] else None)
    return loads, freqs
