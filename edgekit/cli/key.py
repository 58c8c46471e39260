"""`edgekit key rotate`: replace a device's API key and/or exporter token (edgekit.keys)."""

from __future__ import annotations

import typer

from edgekit import keys
from edgekit.cli.app import app
from edgekit.cli.common import Json, Login, logs_in
from edgekit.cli.options import DryRun, Target
from edgekit.cli.provision import _said
from edgekit.console import StepPrinter, say
from edgekit.errors import UsageError
from edgekit.remote.plan import Context

key_app = typer.Typer(help="The device's secrets: rotate the API key and the exporter token.", no_args_is_help=True,
                      pretty_exceptions_show_locals=False, rich_markup_mode=None)
app.add_typer(key_app, name="key")


@key_app.command("rotate")
@logs_in
def rotate(target: Target,
           api_key: bool = typer.Option(True, "--api-key/--no-api-key", help="Replace the API key (restarts "
                                                                               "llama-server)."),
           token: bool = typer.Option(True, "--token/--no-token", help="Replace the exporter's token (restarts "
                                                                       "the exporter)."),
           dry_run: DryRun = False, json_out: bool = Json, login: Login = Login()) -> None:
    """Replace the API key and/or the exporter token; restart only what reads them; update this controller's copies."""
    if not api_key and not token:
        raise UsageError("nothing to rotate: --no-api-key and --no-token together",
                         hint="drop one of them (`edgekit key rotate HOST` rotates both)")
    with login.open(target) as t:
        context = Context(t, dry_run=dry_run, reporter=StepPrinter())
        results = keys.rotate(context, api_key, token)
    _said(target, "key rotate", results, dry_run, json_out)
    if context.run.api_key_new and not json_out:
        say(f"new API key (shown once; kept on this controller): {context.run.api_key_new}")
