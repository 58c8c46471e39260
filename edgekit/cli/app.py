"""The typer application object, shared by the command modules."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

import typer

app = typer.Typer(
    name="edgekit",
    help="Turn a Jetson (or a fleet) into a managed llama.cpp server, and measure how fast and hot it runs.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)


def version() -> str:
    """edgekit's installed version (the package metadata), or `unknown` when run from a tree that is not installed."""
    try:
        return dist_version("edgekit")
    except PackageNotFoundError:
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"edgekit {version()}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                      help="Print edgekit's version and exit."),
) -> None:
    """Turn a Jetson (or a fleet) into a managed llama.cpp server, and measure how fast and hot it runs."""
