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
