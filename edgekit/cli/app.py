"""The typer application object, shared by the command modules."""

import typer

app = typer.Typer(
    name="edgekit",
    help="Turn a Jetson (or a fleet) into a managed llama.cpp server, and measure how fast and hot it runs.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
