"""Options shared by commands that reach a device, and the one way to open a transport from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport

Identity = typer.Option(None, "--identity", "-i", help="SSH private key to log in with.")
AcceptNewHostKey = typer.Option(False, "--accept-new-host-key",
                                help="Trust and record the host key of a device seen for the first time.")
AskBecomePass = typer.Option(False, "--ask-become-pass", "-K",
                             help="Prompt for the sudo password (or set EDGEKIT_BECOME_PASS).")
Json = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


def open_transport(target: str, identity: Optional[Path] = None, accept_new_host_key: bool = False,
                   ask_become_pass: bool = False) -> Transport:
    return Transport(parse_target(target, identity), become_password=become_password(ask_become_pass),
                     accept_new_host_key=accept_new_host_key)

Inventory = typer.Option(None, "--inventory", envvar="EDGEKIT_INVENTORY",
                         help="edgekit.toml or an Ansible INI/YAML inventory (default: ./edgekit.toml if present).")
Forks = typer.Option(5, "--forks", help="Hosts worked on at once.")


def hosts_for(targets: list[str], inventory: Optional[Path]):
    """Expand names, @group and @all through the inventory into Hosts (plain targets pass through)."""
    from edgekit.fleet import inventory as inv

    return inv.load(inventory).select(targets)


def become_password(ask: bool) -> Optional[str]:
    if ask:
        return typer.prompt("sudo password", hide_input=True)
    return os.environ.get("EDGEKIT_BECOME_PASS")


def is_fleet(targets: list[str], hosts: list) -> bool:
    return len(hosts) > 1 or any(t.startswith("@") for t in targets)


def run_on_fleet(hosts, job, *, title: str, json_out: bool, forks: int, ask_become_pass: bool,
                 accept_new_host_key: bool, to_json=lambda value: value) -> None:
    """Run job(transport) -> (summary, value) on every host at once; print a table (or JSON rows); exit 6 on partial
    failure."""
    from edgekit.console import emit_json
    from edgekit.fleet.deploy import Fleet
    from edgekit.fleet.runner import raise_for_failures

    fleet = Fleet(hosts, become_password(ask_become_pass), accept_new_host_key, forks=forks)

    def one(host, row):
        with fleet.transport(host) as t:
            return job(t)

    results = fleet.run(one, title)
    if json_out:
        emit_json([{"host": r.host, "status": r.status, "message": r.message, "exit_code": r.exit_code,
                    "value": to_json(r.value) if r.value is not None else None} for r in results])
    raise_for_failures(results)
