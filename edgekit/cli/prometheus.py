"""`edgekit prometheus`: a scrape config for the fleet's metrics exporters, for an existing Prometheus."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli.app import app
from edgekit.console import say
from edgekit.metrics.scrape import targets_from_state, write_scrape_config


@app.command("prometheus")
def prometheus(
    targets: list[str] = typer.Argument(..., help="Devices edgekit provisioned from this machine (their names)."),
    out: Path = typer.Option(Path("prometheus"), "--out", help="Folder for prometheus.yml, edgekit-scrape.yml "
                                                                "and edgekit-targets.json."),
    interval: str = typer.Option("5s", "--interval", help="Scrape interval, e.g. 5s or 1m."),
) -> None:
    """Write a Prometheus scrape config for these devices' metrics exporters (file_sd targets, token files)."""
    paths = write_scrape_config(out, targets_from_state(targets), interval)
    say(f"wrote {paths['config']} (a whole config: `prometheus --config.file={paths['config']}`)")
    say(f"wrote {paths['include']} (its scrape jobs, for `scrape_config_files:` in an existing Prometheus 2.43+)")
    say(f"wrote {paths['targets']} (the targets, with host labels; the tokens stay in their 0600 files)")
