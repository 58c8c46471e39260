"""A Sample in Prometheus text exposition format (for node_exporter's textfile collector or a scrape proxy)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from edgekit.telemetry.sample import Sample

Metric = Tuple[str, str, List[Tuple[Dict[str, str], float]]]


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


def render(sample: Sample, device: Optional[str] = None) -> str:
    """Gauges for every known field of the sample; unknown (None) fields are left out, never zero-filled."""
    base = {"device": device} if device else {}
    mb = 1024 * 1024

    def one(value: Optional[float], scale: float = 1.0) -> List[Tuple[Dict[str, str], float]]:
        return [] if value is None else [(dict(base), value * scale)]

    metrics: List[Metric] = [
        ("edgekit_gpu_load_percent", "GPU load.", one(sample.gpu_load_pct)),
        ("edgekit_gpu_frequency_hertz", "GPU clock.", one(sample.gpu_freq_mhz, 1e6)),
        ("edgekit_emc_load_percent", "Memory controller load.", one(sample.emc_load_pct)),
        ("edgekit_emc_frequency_hertz", "Memory controller clock.", one(sample.emc_freq_mhz, 1e6)),
        ("edgekit_memory_used_bytes", "RAM in use.", one(sample.ram_used_mb, mb)),
        ("edgekit_memory_total_bytes", "RAM size.", one(sample.ram_total_mb, mb)),
        ("edgekit_swap_used_bytes", "Swap in use.", one(sample.swap_used_mb, mb)),
        ("edgekit_swap_total_bytes", "Swap size.", one(sample.swap_total_mb, mb)),
        ("edgekit_cpu_load_percent", "Load per online CPU core.",
         [({**base, "cpu": str(i)}, v) for i, v in enumerate(sample.cpu_load_pct) if v is not None]),
        ("edgekit_temperature_celsius", "Temperature per sensor.",
         [({**base, "sensor": k}, v) for k, v in sorted(sample.temps_c.items())]),
        ("edgekit_power_watts", "Power per rail.",
         [({**base, "rail": k}, v / 1000) for k, v in sorted(sample.power_mw.items())]),
        ("edgekit_power_total_watts", "Total board power.",
         [] if sample.power_total_mw is None else
         [({**base, "from": sample.power_total_from or ""}, sample.power_total_mw / 1000)]),
        ("edgekit_jetson_clocks", "1 when jetson_clocks pins the clocks.",
         one(None if sample.jetson_clocks is None else float(sample.jetson_clocks))),
        ("edgekit_llama_server_resident_bytes", "Resident memory of llama-server.", one(sample.server_rss_mb, mb)),
        ("edgekit_telemetry_info", "Where the sample came from, and the power mode.",
         [({**base, "source": sample.source, "power_mode": sample.power_mode or ""}, 1.0)]),
    ]
    lines: List[str] = []
    for name, help_text, values in metrics:
        if not values:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f"{name}{_labels(labels)} {value:.12g}" for labels, value in values]
    return "\n".join(lines) + "\n"
