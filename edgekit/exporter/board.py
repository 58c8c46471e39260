"""The board in the exposition: a Sample (edgekit.telemetry) -> families, and the thread that keeps one fresh.

The board is sampled in the background every `interval_s` (jtop, else tegrastats, else /proc: the telemetry
collector's sources and its choice), never per scrape: a scrape reads the latest sample. Every board series
carries the source as a label (`source="tegrastats"`), so a board whose jtop service died and fell back to
tegrastats shows it. A field the source does not know is left out, never written as zero.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Iterator, List, Optional, Tuple

from edgekit.exporter.textformat import Exposition
from edgekit.telemetry import collector
from edgekit.telemetry.sample import Sample
from edgekit.telemetry.tegrastats import INPUT_RAILS

MIB = 1024 * 1024


def _ratio(pct: Optional[float]) -> Optional[float]:
    return None if pct is None else pct / 100.0


def _scaled(value: Optional[float], scale: float) -> Optional[float]:
    return None if value is None else value * scale


def _bytes(mib: Optional[float]) -> Optional[float]:
    return None if mib is None else float(round(mib * MIB))


def add_board(exp: Exposition, sample: Optional[Sample], restarts: int = 0) -> None:
    """The board's families from the latest sample (none yet: only the sampler's own state)."""
    exp.counter("edgekit_board_sampler_restarts_total",
                "Times the board sampler's source failed and was started again.").add(restarts)
    if sample is None:
        return
    src = {"source": sample.source}

    def gauge(name: str, help_text: str, value: Optional[float], **labels: str) -> None:
        exp.gauge(name, help_text).add(value, {**src, **labels})

    gauge("edgekit_board_sample_timestamp_seconds", "When the latest board sample was taken (device clock).",
          sample.time)
    gauge("edgekit_gpu_load_ratio", "GPU (GR3D) load, 0 to 1.", _ratio(sample.gpu_load_pct))
    gauge("edgekit_gpu_frequency_hertz", "GPU clock.", _scaled(sample.gpu_freq_mhz, 1e6))
    gauge("edgekit_emc_load_ratio", "Memory controller (EMC) load, 0 to 1.", _ratio(sample.emc_load_pct))
    gauge("edgekit_emc_frequency_hertz", "Memory controller (EMC) clock.", _scaled(sample.emc_freq_mhz, 1e6))
    for i, load in enumerate(sample.cpu_load_pct):
        gauge("edgekit_cpu_load_ratio", "Load per online CPU core, 0 to 1.", _ratio(load), cpu=str(i))
    for i, freq in enumerate(sample.cpu_freq_mhz):
        gauge("edgekit_cpu_frequency_hertz", "Clock per online CPU core.", _scaled(freq, 1e6), cpu=str(i))
    gauge("edgekit_memory_used_bytes", "RAM in use (shared by CPU and GPU on a Jetson).",
          _bytes(sample.ram_used_mb))
    gauge("edgekit_memory_total_bytes", "RAM size.", _bytes(sample.ram_total_mb))
    gauge("edgekit_swap_used_bytes", "Swap in use.", _bytes(sample.swap_used_mb))
    gauge("edgekit_swap_total_bytes", "Swap size.", _bytes(sample.swap_total_mb))
    for sensor, celsius in sorted(sample.temps_c.items()):
        gauge("edgekit_temperature_celsius", "Temperature per thermal sensor.", celsius, sensor=sensor)
    rails = dict(sample.power_mw)
    if sample.power_total_mw is not None and sample.power_total_from in INPUT_RAILS:
        rails[sample.power_total_from] = sample.power_total_mw       # VDD_IN / POM_5V_IN is a rail too
    for rail, mw in sorted(rails.items()):
        gauge("edgekit_rail_power_watts", "Power per rail, VDD_IN included.", mw / 1000.0, rail=rail)
    gauge("edgekit_board_power_watts", "Board input power: the input rail (VDD_IN, POM_5V_IN), or the sum of "
          "the rails where the board has no input rail (`from` says which).",
          _scaled(sample.power_total_mw, 1e-3), **{"from": sample.power_total_from or ""})
    if sample.power_mode:
        gauge("edgekit_power_mode_info", "The nvpmodel power mode (1 for the current one).", 1, mode=sample.power_mode)
    if sample.jetson_clocks is not None:
        gauge("edgekit_clocks_pinned", "1 when jetson_clocks pins the clocks at their maximum.",
              float(sample.jetson_clocks))
    gauge("edgekit_llama_server_resident_bytes", "Resident memory of the llama-server process(es).",
          _bytes(sample.server_rss_mb))


class Sampler:
    """Keeps the latest board Sample, read in a background thread from the best source the device has.

    A source that fails (jtop refused us, tegrastats exited) is started again after a back-off (2 s doubling to
    60 s), a failed jtop falling back to tegrastats/procfs as the collector does; each is counted."""

    def __init__(self, interval_s: float = 5.0, source: Optional[str] = None,
                 stream: Optional[Callable[[str, int], Iterator[Sample]]] = None):
        self.interval_s = interval_s
        self.forced = source
        self.source: Optional[str] = None
        self.why: List[str] = []
        self.latest: Optional[Sample] = None
        self.restarts = 0
        self._stream = stream or collector.samples
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._mode: Tuple[float, Optional[str]] = (0.0, None)
        self.backoff_s = 2.0

    def start(self) -> "Sampler":
        self._thread = threading.Thread(target=self._run, name="edgekit-board-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _power_mode(self) -> Optional[str]:
        at, mode = self._mode
        if time.time() - at > 60:                  # nvpmodel -q is a process: once a minute is plenty
            self._mode = (time.time(), collector.read_power_mode())
        return self._mode[1]

    def _enrich(self, sample: Sample, ram_total: Optional[float]) -> Sample:
        if sample.ram_total_mb is None and ram_total:
            sample.ram_total_mb = ram_total
        if sample.time is None:
            sample.time = time.time()
        if sample.power_mode is None and sample.source != "procfs":
            sample.power_mode = self._power_mode()
        sample.server_rss_mb = collector.server_rss_mb()
        return sample

    def _run(self) -> None:
        interval_ms = max(100, int(self.interval_s * 1000))
        ram_total = collector._ram_total_mb()
        forced, backoff = self.forced, self.backoff_s
        while not self._stop.is_set():
            self.source, self.why = collector.choose_source(interval_ms, forced)
            stream = self._stream(self.source, interval_ms)
            try:
                for sample in stream:
                    self.latest = self._enrich(sample, ram_total)
                    backoff = self.backoff_s
                    if self._stop.is_set():
                        return
            except Exception as e:  # noqa: BLE001 - a source died: say so in the journal, count it, go on
                sys.stderr.write(f"edgekit-exporter: board source {self.source} failed: {type(e).__name__}: {e}\n")
                if self.source == "jtop":
                    forced = "tegrastats"             # as the collector does: the next best source
            finally:
                close = getattr(stream, "close", None)
                if close:
                    close()
            self.restarts += 1
            self._stop.wait(backoff)
            backoff = min(60.0, backoff * 2)
