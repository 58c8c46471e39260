"""Options shared by commands that reach a device, and the one way to open a transport from them."""

from __future__ import annotations

import functools
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.live import Live

from edgekit.console import DataTable, Tracer, emit_json, err, plain
from edgekit.fleet.deploy import Fleet
from edgekit.fleet.inventory import load as load_inventory
from edgekit.fleet.runner import HostResult, raise_for_failures
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport

Identity = typer.Option(None, "--identity", "-i", help="SSH private key to log in with.")
AcceptNewHostKey = typer.Option(False, "--accept-new-host-key",
                                help="Trust and record the host key of a device seen for the first time.")
AskBecomePass = typer.Option(False, "--ask-become-pass", "-K",
                             help="Prompt for the sudo password (or set EDGEKIT_BECOME_PASS).")
Json = typer.Option(False, "--json", help="Print JSON on stdout instead of a table.")


Verbose = typer.Option(False, "--verbose", "-v", help="Print each remote command as it runs (secrets masked), "
                                                       "with its duration and exit code, and count them at the end.")


def open_transport(target: str, identity: Optional[Path] = None, accept_new_host_key: bool = False,
                   ask_become_pass: bool = False, tracer: Optional[Tracer] = None) -> Transport:
    return Transport(parse_target(target, identity), become_password=become_password(ask_become_pass),
                     accept_new_host_key=accept_new_host_key, on_trace=tracer)


@dataclass(frozen=True)
class Login:
    """How a command logs in to devices (--identity, --accept-new-host-key, --ask-become-pass, and -v's tracer),
    as one value."""

    identity: Optional[Path] = None
    accept_new_host_key: bool = False
    ask_become_pass: bool = False
    tracer: Optional[Tracer] = None

    def open(self, target: str, identity: str | Path | None = None) -> Transport:
        """A transport to `target`; `identity` (an inventory host's key) when --identity was not given."""
        key = self.identity or (Path(identity) if identity else None)
        return open_transport(target, key, self.accept_new_host_key, self.ask_become_pass, self.tracer)


_LOGIN_OPTIONS = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
                  for name, annotation, default in (("identity", Optional[Path], Identity),
                                                    ("accept_new_host_key", bool, AcceptNewHostKey),
                                                    ("ask_become_pass", bool, AskBecomePass),
                                                    ("verbose", bool, Verbose))]


def logs_in(command: Callable) -> Callable:
    """Give a command the login options once: its `login: Login` parameter becomes --identity/-i,
    --accept-new-host-key, --ask-become-pass/-K and --verbose/-v on the command line (typer reads
    `__signature__`). With -v every remote command is printed as it completes, and counted at the end."""
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "login"] + _LOGIN_OPTIONS

    @functools.wraps(command)
    def with_login(*args, identity: Optional[Path] = None, accept_new_host_key: bool = False,
                   ask_become_pass: bool = False, verbose: bool = False, **kwargs):
        tracer = Tracer() if verbose else None
        try:
            return command(*args, login=Login(identity, accept_new_host_key, ask_become_pass, tracer), **kwargs)
        finally:
            if tracer is not None:
                tracer.summary()

    with_login.__signature__ = signature.replace(parameters=params)
    with_login.__annotations__ = {p.name: p.annotation for p in params}
    return with_login


Inventory = typer.Option(None, "--inventory", envvar="EDGEKIT_INVENTORY",
                         help="edgekit.toml or an Ansible INI/YAML inventory (default: ./edgekit.toml if present).")
Forks = typer.Option(5, "--forks", help="Hosts worked on at once.")


def hosts_for(targets: list[str], inventory: Optional[Path]):
    """Expand names, @group and @all through the inventory into Hosts (plain targets pass through)."""
    return load_inventory(inventory).select(targets)


def become_password(ask: bool) -> Optional[str]:
    if ask:
        return typer.prompt("sudo password", hide_input=True)
    return os.environ.get("EDGEKIT_BECOME_PASS")


def is_fleet(targets: list[str], hosts: list) -> bool:
    return len(hosts) > 1 or any(t.startswith("@") for t in targets)


def run_on_fleet(hosts, job, *, title: str, json_out: bool, forks: int, login: Login, to_json=lambda value: value
                 ) -> None:
    """Run job(transport) -> (summary, value) on every host at once; print a table (or JSON rows); exit 6 on partial
    failure."""
    fleet = fleet_for(hosts, login, forks)

    def one(host, row):
        with fleet.transport(host) as t:
            return job(t)

    results = fleet.run(one, title)
    if json_out:
        emit_json([{"host": r.host, "status": r.status, "message": r.message, "exit_code": r.exit_code,
                    "value": to_json(r.value) if r.value is not None else None} for r in results])
    raise_for_failures(results)


def fleet_for(hosts, login: Login, forks: int) -> Fleet:
    """The fleet of `hosts`, logged in as `login` says, drawing its live table on stderr."""
    return Fleet(hosts, become_password(login.ask_become_pass), login.accept_new_host_key, forks=forks,
                 reporter=FleetTable(), on_trace=login.tracer)


STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "running": "cyan", "skipped": "dim"}


class FleetTable:
    """Draws a fleet run as a live table on stderr: a row per host with its status, changes, time and detail."""

    def __init__(self) -> None:
        self._live = None

    def update(self, title: str, results: list[HostResult]) -> None:
        if self._live is None:
            self._live = Live(fleet_table(title, results), console=err, refresh_per_second=4, transient=False)
            self._live.start()
        self._live.update(fleet_table(title, results))

    def finish(self, title: str, results: list[HostResult]) -> None:
        self.update(title, results)
        self._live.stop()
        self._live = None


def fleet_table(title: str, results: list[HostResult]) -> DataTable:
    table = DataTable("host", "status", "changed", "time", "detail", title=title, title_justify="left")
    for r in results:
        table.add_row(r.host, plain(r.status, STYLE.get(r.status, "white")), str(r.changed), f"{r.seconds:.1f}s",
                      r.message)
    return table
