"""The edgekit command line: thin typer commands; main() is the one place errors become messages and exit codes."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from edgekit import errors
from edgekit.cli import app as _app
from edgekit.cli import commands  # noqa: F401  (registers every command on the app)
from edgekit.console import err

app = _app.app


def main(argv: list[str] | None = None) -> None:
    """Entry point for the `edgekit` console script."""
    try:
        app(args=argv, standalone_mode=False)
    except errors.EdgekitError as e:
        _report(e)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(errors.INTERRUPTED)
    except typer.Abort:
        err.print("[red]aborted[/]")
        sys.exit(errors.INTERRUPTED)
    except _click_exceptions() as e:
        e.show()
        sys.exit(errors.USAGE)
    else:
        sys.exit(0)


def _report(e: errors.EdgekitError) -> None:
    # soft_wrap: one logical line stays one line (greppable, and a terminal still wraps it visually)
    err.print(f"[bold red]error:[/] {escape(e.message)}", soft_wrap=True)
    if e.hint:
        err.print(f"[dim]hint:[/] {escape(e.hint)}", soft_wrap=True)


def _click_exceptions():
    import click

    return (click.exceptions.UsageError, click.exceptions.BadParameter, click.exceptions.NoSuchOption)
