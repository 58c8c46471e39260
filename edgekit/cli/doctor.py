"""`edgekit doctor`: check a device for the known pains of llama.cpp on a Jetson; read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit import doctor as checks
from edgekit.cli.app import app
from edgekit.cli.common import Inventory, Json, Login, hosts_for, logs_in
from edgekit.console import DataTable, emit_json, err, plain, say


@app.command()
@logs_in
def doctor(
    target: str = typer.Argument(..., help="[user@]host[:port], an ssh_config alias, an inventory name, or `local`."),
    json_out: bool = Json,
    inventory: Optional[Path] = Inventory,
    login: Login = Login(),
) -> None:
    """Check a device for known pains (L4T bugs, capped clocks, CUDA mix-ups, swap, disk, clock); changes nothing.

    Exit code: 0 nothing found, 7 warnings only, 8 at least one problem (docs/troubleshooting.md)."""
    host = hosts_for([target], inventory)[0]
    with login.open(host.target, host.identity) as t:
        facts = checks.read(t)
    findings = checks.examine(facts)
    if json_out:
        emit_json(checks.to_json(facts, findings))
    elif not findings:
        say((f"{facts.device.target}: none of the {len(checks.CHECKS)} known pains found", "green"))
    else:
        table = DataTable(title=f"edgekit doctor {facts.device.target}: {len(findings)} found "
                                f"({len(checks.CHECKS)} checks)", title_justify="left")
        for col in ("check", "", "found", "fix"):
            table.add_column(col)
        for x in findings:
            table.add_row(x.check, plain(x.severity, "red" if x.severity == checks.PROBLEM else "yellow"), x.found,
                          x.fix)
        err.print(table)
    raise typer.Exit(checks.exit_code(findings))
