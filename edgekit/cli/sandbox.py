"""`edgekit sandbox`: stand-in devices (systemd-nspawn, real systemd and sshd) to try edgekit without a Jetson."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgekit.cli.app import app
from edgekit.cli.common import Json
from edgekit.console import DataTable, StepPrinter, emit_json, err, say
from edgekit.sandbox import demo as demo_lib
from edgekit.sandbox import emulation, identity, rootfs, standin

sandbox_app = typer.Typer(help="Stand-in devices: real systemd and sshd in a container, no Jetson needed.",
                          no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("up")
def up(
    names: list[str] = typer.Argument(None, help="Names of the stand-ins (default: standin1)."),
    jetson: Optional[str] = typer.Option(
        None, "--jetson", help="Plant Jetson identity files: " + ", ".join(identity.PROFILES) + "."),
    arch: Optional[str] = typer.Option(
        None, "--arch", help="Debian architecture: " + ", ".join(emulation.ARCHES) + " (default: this machine's; "
                             "another runs under qemu-user emulation, see docs/aarch64-standin.md)."),
    suite: str = typer.Option(rootfs.SUITE, "--suite", help="Debian release: " + ", ".join(rootfs.SUITES) +
                              " (bullseye has Python 3.9)."),
    json_out: bool = Json,
) -> None:
    """Create and boot stand-in devices; print how to reach them."""
    made = [standin.up(name, jetson, log=lambda m: say((m, "dim")), suite=suite, arch=arch)
            for name in (names or ["standin1"])]
    if json_out:
        emit_json([s.describe() for s in made])
        return
    for s in made:
        say(("up", "green"), f" {s.name}: ssh {standin.LOGIN_USER}@{s.address} "
            f"(alias `{s.name}`; ssh -F {standin.write_ssh_config()} {s.name})")
    say(f"try: edgekit facts {made[0].name}")


@sandbox_app.command("down")
def down(names: list[str] = typer.Argument(None, help="Names to stop (default: all).")) -> None:
    """Stop stand-in devices and remove what they made (network namespace, tmpfs root)."""
    for name in names or [s.name for s in standin.list_standins()]:
        if standin.down(name):
            say(("down", "green"), f" {name}")
        else:
            say(f"{name}: no such stand-in")


@sandbox_app.command("status")
def status(json_out: bool = Json) -> None:
    """List stand-in devices."""
    rows = [s.describe() for s in standin.list_standins()]
    if json_out:
        emit_json(rows)
        return
    table = DataTable("name", "address", "debian", "jetson", "running", "ssh")
    for r in rows:
        table.add_row(r["name"], r["address"], f"{r['suite']} {r['arch']}", r["jetson"] or "-", str(r["running"]),
                      str(r["ssh"]))
    err.print(table)


@sandbox_app.command("demo")
def demo(
    name: str = typer.Argument("demo", help="Name of the stand-in to use (created if needed)."),
    question: str = typer.Option(demo_lib.QUESTION, "--question", "-q", help="What to ask the served model."),
    llama_src: Optional[str] = typer.Option(None, "--llama-src",
                                            help="llama.cpp source tarball/tree (default: llama-cpp-python's sdist)."),
) -> None:
    """The main job on a stand-in: boot it, provision llama.cpp + SmolLM2-135M-Instruct as a service, ask it."""
    run = demo_lib.run_demo(name, question, Path(llama_src) if llama_src else None, DemoPrinter())
    sys.stdout.write("\n")
    t, context = run.answer.timings or {}, run.context
    health = context.run.health or {}
    say((f"model load {health.get('loaded_s', 0):.1f} s · prompt {t.get('prompt_n', 0)} tokens at "
         f"{t.get('prompt_per_second', 0):.0f} tok/s · generation {t.get('predicted_n', 0)} tokens at "
         f"{t.get('predicted_per_second', 0):.1f} tok/s · stopped by {run.answer.finish_reason or '?'} "
         f"(2 CPU threads of a stand-in)", "dim"))
    say((f"next: edgekit chat {name} · edgekit bench {name} · edgekit status {name} · "
         f"edgekit sandbox down {name}", "dim"))


class DemoPrinter:
    """Prints the demo as it goes: phases and downloads on stderr, the model's answer on stdout."""

    def __init__(self) -> None:
        self.steps = StepPrinter("  ")

    def log(self, message: str) -> None:
        say((message, "dim"))

    def phase(self, number: int, text: str) -> None:
        say((f"{number}/{demo_lib.PHASES}", "bold"), f" {text}")

    def answer(self, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()
