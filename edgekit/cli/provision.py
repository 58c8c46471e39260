"""`edgekit provision`, `status`, `logs`, `uninstall`, `rollback`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgekit import lockfile
from edgekit import provision as prov
from edgekit import rollback as back
from edgekit import uninstall as remove
from edgekit import state as controller_state
from edgekit.cli.app import app
from edgekit.llamacpp.stamp import describe as describe_stamp
from edgekit.cli.common import Forks, Inventory, Json, Login, fleet_for, hosts_for, is_fleet, logs_in, run_on_fleet
from edgekit.cli.options import DryRun, Target, takes_settings
from edgekit.console import DataTable, StepPrinter, emit_json, err, say
from edgekit.fleet.deploy import provision_fleet
from edgekit.fleet.runner import raise_for_failures
from edgekit.layout import UNIT_NAME
from edgekit.remote.plan import Context
from edgekit.healthy import describe as describe_healthy
from edgekit.healthy import describe_rollback


@app.command()
@logs_in
@takes_settings
def provision(
    targets: list[str] = typer.Argument(..., help="Hosts: [user@]host[:port], ssh_config aliases, inventory names, "
                                                  "@group, @all, or `local`."),
    flags: dict = None,                    # every setting's option, from edgekit/settings.py (takes_settings)
    dry_run: DryRun = False,
    json_out: bool = Json,
    inventory: Optional[Path] = Inventory,
    forks: int = Forks,
    serial: Optional[int] = typer.Option(None, "--serial", help="Rolling: provision this many hosts per batch."),
    max_fail_percent: float = typer.Option(100.0, "--max-fail-percent",
                                           help="Stop later batches once more than this share of hosts failed."),
    build_on: Optional[str] = typer.Option(None, "--build-on", help="Fleet: the host that builds for its kind."),
    login: Login = Login(),
) -> None:
    """Build llama.cpp, fetch a model and run it as a hardened systemd service; idempotent."""
    hosts = hosts_for(targets, inventory)
    inventory_file = inventory or (Path("edgekit.toml") if Path("edgekit.toml").is_file() else None)
    if "lock_file" not in flags and inventory_file is not None:
        flags["lock_file"] = str(lockfile.for_inventory(inventory_file))
    opts = {h.name: prov.options_for(flags, h) for h in hosts}       # every host validated before any connects
    if is_fleet(targets, hosts):
        _provision_fleet(hosts, opts, dry_run, json_out, login, forks, serial, max_fail_percent, build_on)
        return
    target = hosts[0].target
    with login.open(target, hosts[0].identity) as t:
        context = Context(t, dry_run=dry_run, reporter=StepPrinter())
        results = prov.provision(context, opts[hosts[0].name])
    changed = [r for r in results if r.status in ("changed", "would-change")]
    trips = f"{t.round_trips} remote round trip(s)"
    if json_out:
        emit_json({"target": target, "dry_run": dry_run, "changed": len(changed), "round_trips": t.round_trips,
                   "steps": [r.to_json() for r in results], "answer": context.run.smoke_answer})
    if dry_run:
        say(f"dry run: {len(changed)} step(s) would change {target}; nothing was changed ({trips})")
        return
    saved = controller_state.load(t.name) or {}
    if not changed:
        say(("no changes", "green"), f": everything was already in place ({trips})")
    else:
        say((f"{len(changed)} step(s) changed", "yellow"), f" ({trips})")
    say(f"serving {saved.get('model')} at {saved.get('url')}  (unit {UNIT_NAME})")
    if context.run.api_key_new:
        say(f"API key (shown once; kept in {saved.get('api_key_file')}): {context.run.api_key_new}")
    key = "-H \"Authorization: Bearer $(cat " + saved["api_key_file"] + ")\" " if saved.get("api_key_file") else ""
    say(f"try: curl {saved.get('url')}/v1/chat/completions {key}-H 'Content-Type: application/json' "
        "-d '{\"messages\":[{\"role\":\"user\",\"content\":\"介绍一下北京\"}]}'")


def _provision_fleet(hosts, opts, dry_run, json_out, login: Login, forks, serial, max_fail_percent, build_on) -> None:
    fleet = fleet_for(hosts, login, forks)
    out = provision_fleet(fleet, opts, dry_run=dry_run, build_on=build_on, serial=serial,
                          max_fail_percent=max_fail_percent)
    builds = {key[1]: {"builder": b["builder"], "seconds": round(b["seconds"], 1),
                       "tarball": str(b["tarball"]) if b["tarball"] else None} for key, b in out["builds"].items()}
    if json_out:
        emit_json({"dry_run": dry_run, "builds": builds,
                   "facts": [r.to_json() for r in out["facts"]],
                   "build": [r.to_json() for r in out["build_results"]],
                   "hosts": [r.to_json() for r in out["deploy"]]})
    for build_id, b in builds.items():
        say(f"build {build_id}: ", f"built on {b['builder']} in {b['seconds']}s" if b["builder"]
            else "taken from the controller cache")
    raise_for_failures(out["deploy"])  # hosts that failed earlier phases fail here too, with the reason


@app.command()
@logs_in
def status(targets: list[str] = typer.Argument(..., help="Hosts, inventory names, @group, or `local`."),
           json_out: bool = Json, inventory: Optional[Path] = Inventory, forks: int = Forks,
           login: Login = Login()) -> None:
    """Show the service: state, model, build, uptime, health, slots."""
    hosts = hosts_for(targets, inventory)
    if is_fleet(targets, hosts):
        def job(t):
            info = prov.status(t)
            model = (info["model"] or "-").rsplit("/", 1)[-1]
            return f"{info['active']}, health {info['health']}, {model}", info

        run_on_fleet(hosts, job, title="status", json_out=json_out, forks=forks, login=login)
        return
    target = hosts[0].target
    with login.open(target, hosts[0].identity) as t:
        info = prov.status(t)
    if json_out:
        emit_json(info)
        return
    table = DataTable(title=f"{UNIT_NAME} on {target}", show_header=False, title_justify="left")
    build = info["build"] or {}
    rows = [("state", f"{info['active']} ({info['sub']}), {info['enabled']}, PID {info['pid']}, "
                      f"{info['restarts']} restart(s)"),
            ("since", info["since"] or "-"), ("listen", info["listen"] or "-"),
            ("model", info["model"] or "-"), ("ctx", info["ctx"] or "-"),
            *([("draft", info["draft"])] if info.get("draft") else []),
            *([("speculation", info["spec_type"])] if info.get("spec_type") else []),
            *([("lora", ", ".join(info["lora"]))] if info.get("lora") else []),
            *([("models", ", ".join(f"{m['id']} ({m['status']}" + (f", {m['rss_bytes'] / 2**20:.0f} MiB"
                                                                   if m.get("rss_bytes") else "") + ")"
                                    for m in info["models"])
                + f"; at most {info['models_max']} loaded")] if info.get("models") else []),
            ("build", describe_stamp(build) if build else "-"),
            ("health", info["health"] or "-"),
            ("deployed", f"{info['state']}" + (f" ({describe_healthy(info['last_healthy'])})"
                                               if info.get("last_healthy") else "")),
            ("slots", f"{info['slots']['busy']}/{info['slots']['total']} busy" if info["slots"] else "-"),
            *([("last rollback", describe_rollback(info["last_rollback"]))] if info.get("last_rollback") else [])]
    for row in rows:
        table.add_row(*row)
    err.print(table)


@app.command()
@logs_in
def logs(target: Target, follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
         lines: int = typer.Option(100, "--lines", "-n", help="How many recent lines."),
         login: Login = Login()) -> None:
    """Print the service's journal (journalctl)."""
    with login.open(target) as t:
        cmd = f"journalctl -u {UNIT_NAME} -n {int(lines)} --no-pager -o short-iso" + (" -f" if follow else "")
        t.sudo(cmd, on_line=lambda line: print(line, file=sys.stdout, flush=True), check=False)


@app.command()
@logs_in
def uninstall(target: Target,
              purge_models: bool = typer.Option(False, "--purge-models", help="Also delete downloaded models."),
              dry_run: DryRun = False, json_out: bool = Json, login: Login = Login()) -> None:
    """Remove the service, its user, settings and builds (models too with --purge-models)."""
    with login.open(target) as t:
        context = Context(t, dry_run=dry_run, reporter=StepPrinter())
        results = remove.uninstall(context, purge_models)
    _said(target, "uninstall", results, dry_run, json_out)


@app.command()
@logs_in
def rollback(target: Target, dry_run: DryRun = False, json_out: bool = Json, login: Login = Login()) -> None:
    """Switch back to the previous llama.cpp build and server settings (model, ctx), restart, check it answers."""
    with login.open(target) as t:
        context = Context(t, dry_run=dry_run, reporter=StepPrinter())
        results = back.rollback(context)
    _said(target, "rollback", results, dry_run, json_out)
    health = next((r for r in results if r.step == back.AnswersAgain.name and r.status == "changed"), None)
    if health is not None:
        say(f"healthy after {health.detail.get('healthy_after_s')} s; recorded as the last healthy state")


def _said(target: str, what: str, results: list, dry_run: bool, json_out: bool) -> None:
    """A device command's steps: JSON on stdout with --json; the count of changes on stderr."""
    changed = [r for r in results if r.status in ("changed", "would-change")]
    if json_out:
        emit_json({"target": target, "dry_run": dry_run, "changed": len(changed),
                   "steps": [r.to_json() for r in results]})
    if dry_run:
        say(f"dry run: {len(changed)} step(s) of {what} would change {target}; nothing was changed")
    elif not changed:
        say(("no changes", "green"), f": nothing left to {what} on {target}")
