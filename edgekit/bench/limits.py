"""The hardware limit for decoding: every generated token reads (about) every weight once, so
tok/s <= memory bandwidth / model bytes. Measured decode speed is reported as a share of this ceiling."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional


@dataclass
class Ceiling:
    bandwidth_gbs: Optional[float]
    bandwidth_from: str              # "jetson module table (…)", "--bandwidth", or why it is unknown
    model_bytes: Optional[int]
    decode_tps: Optional[float]

    def share(self, measured_tps: Optional[float]) -> Optional[float]:
        """Measured tok/s as % of the ceiling."""
        if measured_tps is None or not self.decode_tps:
            return None
        return 100.0 * measured_tps / self.decode_tps

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def decode_ceiling(bandwidth_gbs: float, model_bytes: int) -> float:
    """Upper bound on generated tokens per second (GB = 1e9 bytes, as data sheets give it)."""
    if bandwidth_gbs <= 0 or model_bytes <= 0:
        raise ValueError("bandwidth and model size must be positive")
    return bandwidth_gbs * 1e9 / model_bytes


def ceiling_for(model_bytes: Optional[int], jetson: Optional[Dict[str, Any]] = None,
                bandwidth_override: Optional[float] = None) -> Ceiling:
    """Pick the bandwidth: --bandwidth, else the Jetson module table (power-mode aware), else unknown."""
    if bandwidth_override is not None:
        bw, source = bandwidth_override, "--bandwidth"
    elif jetson and jetson.get("memory_bandwidth_gbs"):
        bw = float(jetson["memory_bandwidth_gbs"])
        source = (f"jetson module table ({jetson.get('module') or jetson.get('model')}, "
                  f"power mode {jetson.get('power_mode') or 'unknown'})")
    else:
        bw, source = None, ("unknown: not a known Jetson module - pass --bandwidth GB/s" if not jetson
                            else "unknown Jetson module - pass --bandwidth GB/s")
    tps = decode_ceiling(bw, model_bytes) if bw and model_bytes else None
    return Ceiling(bw, source, model_bytes, tps)
