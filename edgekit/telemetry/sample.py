"""The one typed telemetry sample. A field is None where the source does not know it; nothing is invented."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

NOT_MEASURED = {"pmic"}


@dataclass
class Sample:
    """One reading of the board. Units: %, MHz, MiB (as tegrastats' MB), degrees C, mW, seconds since the epoch."""

    source: str                                  # jtop | tegrastats | procfs
    time: Optional[float] = None                 # device clock, unix seconds
    gpu_load_pct: Optional[float] = None
    gpu_freq_mhz: Optional[float] = None
    ram_used_mb: Optional[float] = None
    ram_total_mb: Optional[float] = None
    swap_used_mb: Optional[float] = None
    swap_total_mb: Optional[float] = None
    cpu_load_pct: List[Optional[float]] = field(default_factory=list)   # per core; None = core offline
    cpu_freq_mhz: List[Optional[float]] = field(default_factory=list)
    emc_load_pct: Optional[float] = None
    emc_freq_mhz: Optional[float] = None
    temps_c: Dict[str, float] = field(default_factory=dict)              # sensor -> C (sensors that are off left out)
    power_mw: Dict[str, float] = field(default_factory=dict)             # rail -> current mW (input rail excluded)
    power_total_mw: Optional[float] = None
    power_total_from: Optional[str] = None        # the input rail (VDD_IN, POM_5V_IN, 'Power TOT') or 'sum of rails'
    power_mode: Optional[str] = None
    jetson_clocks: Optional[bool] = None
    server_rss_mb: Optional[float] = None

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "Sample":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def cpu_load_mean_pct(self) -> Optional[float]:
        online = [c for c in self.cpu_load_pct if c is not None]
        return sum(online) / len(online) if online else None

    @property
    def temp_max_c(self) -> Optional[float]:
        """Hottest real sensor. PMIC is left out: tegrastats prints a fixed trip value (50 or 100C) for it."""
        real = [v for k, v in self.temps_c.items() if k.lower() not in NOT_MEASURED]
        return max(real) if real else None
