"""`edgekit telemetry`: what the board is doing, live (rich), as JSON lines, or as Prometheus text."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.live import Live

from edgekit.cli.app import app
from edgekit.cli.common import Login, logs_in
from edgekit.cli.options import Target
from edgekit.console import DataTable, err, say
from edgekit.telemetry import prometheus
from edgekit.telemetry.remote import TelemetrySource, stream
from edgekit.telemetry.sample import Sample


def _fmt(value, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def sample_table(target: str, s: Sample, source: Optional[TelemetrySource]) -> DataTable:
    table = DataTable(title=f"telemetry: {target} (source: {s.source})", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    cpus = " ".join("off" if c is None else f"{c:.0f}%" for c in s.cpu_load_pct)
    table.add_row("CPU", cpus or "-")
    table.add_row("GPU", "not available from this source" if s.source == "procfs" else
                  f"{_fmt(s.gpu_load_pct, '%')} @ {_fmt(s.gpu_freq_mhz, ' MHz')}")
    table.add_row("EMC", "not available from this source" if s.source == "procfs" else
                  f"{_fmt(s.emc_load_pct, '%')} @ {_fmt(s.emc_freq_mhz, ' MHz')}")
    table.add_row("RAM", f"{_fmt(s.ram_used_mb)} / {_fmt(s.ram_total_mb)} MiB, swap {_fmt(s.swap_used_mb)} / "
                         f"{_fmt(s.swap_total_mb)} MiB")
    table.add_row("llama-server RSS", _fmt(s.server_rss_mb, " MiB") if s.server_rss_mb is not None else "not running")
    table.add_row("temperatures", "  ".join(f"{k} {v:.1f}C" for k, v in sorted(s.temps_c.items())) or "-")
    power = "  ".join(f"{k} {v / 1000:.2f}W" for k, v in sorted(s.power_mw.items()))
    table.add_row("power", (f"total {s.power_total_mw / 1000:.2f}W ({s.power_total_from})  " + power)
                  if s.power_total_mw is not None else "not available from this source")
    table.add_row("power mode", f"{s.power_mode or '-'}, jetson_clocks "
                                f"{'-' if s.jetson_clocks is None else ('on' if s.jetson_clocks else 'off')}")
    return table


@app.command()
@logs_in
def telemetry(
    target: Target,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON line per sample on stdout."),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between samples."),
    duration: Optional[float] = typer.Option(None, "--duration", min=0.1, help="Stop after this many seconds."),
    prom: bool = typer.Option(False, "--prometheus",
                              help="Print one sample in Prometheus text format and exit (node_exporter textfile)."),
    login: Login = Login(),
) -> None:
    """Show GPU/CPU load, memory, temperatures and power of a device, live (jtop > tegrastats > /proc)."""
    state: dict = {"source": None, "live": None}

    def on_item(item) -> None:
        if isinstance(item, TelemetrySource):
            state["source"] = item
            why = f" ({'; '.join(item.why)})" if item.why else ""
            say("telemetry source: ", (item.source, "bold"), why)
            if json_out:
                _line({"kind": "source", "source": item.source, "why": item.why})
            return
        if prom:
            sys.stdout.write(prometheus.render(item, device=target))
            sys.stdout.flush()
        elif json_out:
            _line(item.to_json())
        else:
            if state["live"] is None:
                state["live"] = Live(console=err, auto_refresh=False, transient=False)
                state["live"].start()
            state["live"].update(sample_table(target, item, state["source"]), refresh=True)

    with login.open(target) as t:
        try:
            result = stream(t, on_item, interval_ms=int(interval * 1000), duration=duration,
                            count=1 if prom else None)
        finally:
            if state["live"] is not None:
                state["live"].stop()
    for message in result.errors:
        say(("telemetry source failed:", "red"), " ", message)


def _line(data: dict) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()
