"""`edgekit sandbox`: stand-in devices (systemd-nspawn, real systemd and sshd) to try edgekit without a Jetson."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgekit import provision as prov
from edgekit.chat.client import LlamaClient
from edgekit.chat.endpoint import resolve
from edgekit.chat.profile import profile_for
from edgekit.cli.app import app
from edgekit.cli.common import Json
from edgekit.console import DataTable, StepPrinter, emit_json, err, say
from edgekit.remote.plan import Context
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from edgekit.sandbox import demo as demo_lib
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
    made = [standin.up(name, jetson, log=lambda m: say((m, "dim"))) for name in (names or ["standin1"])]
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
    table = DataTable("name", "address", "jetson", "running", "ssh")
    for r in rows:
        table.add_row(r["name"], r["address"], r["jetson"] or "-", str(r["running"]), str(r["ssh"]))
    err.print(table)


@sandbox_app.command("demo")
def demo(
    name: str = typer.Argument("demo", help="Name of the stand-in to use (created if needed)."),
    question: str = typer.Option(demo_lib.QUESTION, "--question", "-q", help="What to ask the served model."),
    llama_src: Optional[str] = typer.Option(None, "--llama-src",
                                            help="llama.cpp source tarball/tree (default: llama-cpp-python's sdist)."),
) -> None:
    """The main job on a stand-in: boot it, provision llama.cpp + SmolLM2-135M-Instruct as a service, ask it."""
    def log(message: str) -> None:
        say((message, "dim"))

    sb = standin.up(name, None, log=log)
    say(("1/3", "bold"), f" stand-in {sb.name} up at {sb.address} (real systemd and sshd)")
    opts = demo_lib.demo_options(Path(llama_src) if llama_src else None, log)
    say(("2/3", "bold"), f" provisioning {sb.name}: build llama.cpp (CPU), gate it, push {demo_lib.MODEL}, "
        "start the service")
    with Transport(parse_target(sb.name)) as t:
        context = Context(t, reporter=StepPrinter("  "))
        prov.provision(context, opts)
    endpoint = resolve(sb.name)
    say(("3/3", "bold"), f" asking {demo_lib.MODEL} at {endpoint.url}: {question}")
    profile = profile_for(demo_lib.MODEL)
    messages = [{"role": "system", "content": profile.system_prompt}, {"role": "user", "content": question}]
    stream = LlamaClient(endpoint).chat(messages, profile.sampling.merged(max_tokens=256),
                                        stop=list(profile.stop) or None, stream=True)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    t = stream.result.timings or {}
    health = context.state.get("health") or {}
    say((f"model load {health.get('loaded_s', 0):.1f} s · prompt {t.get('prompt_n', 0)} tokens at "
         f"{t.get('prompt_per_second', 0):.0f} tok/s · generation {t.get('predicted_n', 0)} tokens at "
         f"{t.get('predicted_per_second', 0):.1f} tok/s · stopped by {stream.result.finish_reason or '?'} "
         f"(2 CPU threads of a stand-in)", "dim"))
    say((f"next: edgekit chat {name} · edgekit bench {name} · edgekit status {name} · "
         f"edgekit sandbox down {name}", "dim"))
