"""`edgekit sandbox`: stand-in devices (systemd-nspawn, real systemd and sshd) to try edgekit without a Jetson."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from edgekit.cli.app import app
from edgekit.cli.common import Json
from edgekit.console import emit_json, err
from edgekit.sandbox import identity, standin

sandbox_app = typer.Typer(help="Stand-in devices: real systemd and sshd in a container, no Jetson needed.",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("up")
def up(
    names: list[str] = typer.Argument(None, help="Names of the stand-ins (default: standin1)."),
    jetson: Optional[str] = typer.Option(
        None, "--jetson", help="Plant Jetson identity files: " + ", ".join(identity.PROFILES) + "."),
    json_out: bool = Json,
) -> None:
    """Create and boot stand-in devices; print how to reach them."""
    made = [standin.up(name, jetson, log=lambda m: err.print(f"[dim]{m}[/]")) for name in (names or ["standin1"])]
    if json_out:
        emit_json([s.describe() for s in made])
        return
    for s in made:
        err.print(f"[green]up[/] {s.name}: ssh {standin.LOGIN_USER}@{s.address} "
                  f"(alias `{s.name}`; ssh -F {standin.write_ssh_config()} {s.name})")
    err.print(f"try: edgekit facts {made[0].name}")


@sandbox_app.command("down")
def down(names: list[str] = typer.Argument(None, help="Names to stop (default: all).")) -> None:
    """Stop stand-in devices and remove what they made (network namespace, tmpfs root)."""
    for name in names or [s.name for s in standin.list_standins()]:
        if standin.down(name):
            err.print(f"[green]down[/] {name}")
        else:
            err.print(f"{name}: no such stand-in")


@sandbox_app.command("status")
def status(json_out: bool = Json) -> None:
    """List stand-in devices."""
    rows = [s.describe() for s in standin.list_standins()]
    if json_out:
        emit_json(rows)
        return
    table = Table("name", "address", "jetson", "running", "ssh")
    for r in rows:
        table.add_row(r["name"], r["address"], r["jetson"] or "-", str(r["running"]), str(r["ssh"]))
    err.print(table)
