"""`edgekit provision`: preflight, build llama.cpp, fetch the model, install and start the service, prove it answers.

Also the day-2 operations on the same layout: status, uninstall, rollback.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from edgekit import state as controller_state
from edgekit.build.spec import BuildSpec, CURRENT, INSTALL_ROOT, STAMP_NAME
from edgekit.build.steps import build_steps, switch_commands
from edgekit.errors import UnsuitableDevice
from edgekit.facts.device import read_facts, require_supported
from edgekit.models.steps import ModelRequest, model_steps
from edgekit.remote.plan import Context, Noop, run_steps
from edgekit.service import probe
from edgekit.service.settings import ENV_PATH, MODELS_DIR, PREFIX, UNIT_NAME, UNIT_PATH
from edgekit.service.steps import USER, ServiceOptions, service_steps, unit_properties


@dataclass
class ProvisionOptions:
    model: ModelRequest
    build: BuildSpec = field(default_factory=BuildSpec)
    service: ServiceOptions = field(default_factory=ServiceOptions)


class Preflight:
    """Read the device's facts; refuse devices edgekit cannot serve from, before touching anything."""

    name = "preflight"

    def plan(self, ctx: Context):
        facts = read_facts(ctx.transport, ctx.state.get("cuda_arch_override"))
        require_supported(facts)
        if not facts.systemd:
            raise UnsuitableDevice(f"{ctx.transport.name} does not run systemd as PID 1",
                                   hint="edgekit installs a systemd service; JetPack's Ubuntu has it")
        if facts.sudo == "none":
            raise UnsuitableDevice(f"{ctx.transport.user} on {ctx.transport.name} cannot use sudo",
                                   hint="log in as a user in the sudo group (e.g. the user made at first boot)")
        ctx.sudo("true")  # a password that is needed and missing, or wrong, fails here, before any change
        ctx.state["facts"] = facts
        j = facts.jetson
        board = f"{j['module'] or j['model']}, L4T R{j['l4t']}" if j else f"{facts.arch}, not a Jetson"
        return Noop(f"{facts.hostname}: {board}; {facts.cpus} CPUs, "
                    f"{(facts.memory or {}).get('total_bytes', 0) / 2**30:.1f} GiB RAM")


def provision_steps(opts: ProvisionOptions) -> list:
    return [Preflight(), *build_steps(opts.build), *model_steps(opts.model), *service_steps()]


def provision(ctx: Context, opts: ProvisionOptions):
    """Run every step; remember where the server listens on the controller. Returns the step results."""
    ctx.state["service"] = opts.service
    ctx.state["cuda_arch_override"] = opts.build.cuda_arch
    results = run_steps(ctx, provision_steps(opts))
    remember(ctx, opts)
    return results


def remember(ctx: Context, opts: ProvisionOptions) -> None:
    """Record on the controller where the server listens and where its API key is (for status, chat, bench)."""
    if ctx.dry_run:
        return
    host = ctx.transport.address if opts.service.host in ("0.0.0.0", "::") else opts.service.host
    controller_state.save(ctx.transport.name, {
        "url": f"http://{host}:{opts.service.port}", "host": opts.service.host, "port": opts.service.port,
        "model": ctx.state["model"]["name"],
        "api_key_file": str(controller_state.api_key_path(ctx.transport.name)) if opts.service.api_key else None,
    })


def status(transport) -> dict:
    """The service's state, model, build, uptime, health and slots, read from the device."""
    show = unit_properties(transport)
    env = _env(transport)
    stamp = transport.run(f"cat {CURRENT}/{STAMP_NAME}", check=False)
    out = {"unit": UNIT_NAME, "installed": show.get("LoadState") == "loaded", "active": show.get("ActiveState"),
           "sub": show.get("SubState"), "pid": int(show.get("MainPID") or 0), "enabled": show.get("UnitFileState"),
           "restarts": int(show.get("NRestarts") or 0), "since": show.get("ActiveEnterTimestamp") or None,
           "model": env.get("LLAMA_ARG_MODEL"), "ctx": env.get("LLAMA_ARG_CTX_SIZE"),
           "listen": f"{env.get('LLAMA_ARG_HOST')}:{env.get('LLAMA_ARG_PORT')}" if env else None,
           "build": json.loads(stamp.stdout) if stamp.ok else None, "health": None, "slots": None}
    if env.get("LLAMA_ARG_PORT") and out["active"] == "active":
        base = f"http://127.0.0.1:{env['LLAMA_ARG_PORT']}"
        code, body = probe.request(transport, f"{base}/health", timeout=5)
        out["health"] = {200: "ok", 503: "loading"}.get(code, f"HTTP {code}" if code else "no answer")
        key = controller_state.read_api_key(transport.name)
        code, body = probe.request(transport, f"{base}/slots", key=key, timeout=5)
        if code == 200:
            slots = json.loads(body)
            out["slots"] = {"total": len(slots), "busy": sum(1 for s in slots if s.get("is_processing"))}
    return out


def _env(transport) -> dict[str, str]:
    res = transport.sudo(f"cat {ENV_PATH}", check=False)
    pairs = (line.split("=", 1) for line in res.stdout.splitlines() if "=" in line and not line.startswith("#"))
    return dict(pairs) if res.ok else {}


def uninstall(transport, purge_models: bool = False) -> list[str]:
    """Remove the unit, user, settings, builds (and models with purge_models). Returns what was removed."""
    q = shlex.quote
    removed = []
    transport.sudo(f"systemctl disable --now {UNIT_NAME} 2>/dev/null; rm -f {UNIT_PATH} {UNIT_PATH}.previous; "
                   "systemctl daemon-reload; systemctl reset-failed 2>/dev/null; true")
    removed.append(UNIT_PATH)
    if transport.run(f"id {USER}", check=False).ok:
        transport.sudo(f"userdel {USER}")
        removed.append(f"user {USER}")
    paths = ["/etc/edgekit", f"/var/lib/{UNIT_NAME}", INSTALL_ROOT, f"{PREFIX}/build"]
    if purge_models:
        paths.append(MODELS_DIR)
    transport.sudo("rm -rf " + " ".join(q(p) for p in paths))
    transport.sudo(f"rmdir {q(PREFIX)} 2>/dev/null; true")
    removed += paths
    controller_state.forget(transport.name)
    return removed


def rollback(transport) -> dict:
    """Switch back to the previous build and the previous server settings (model, ctx), then restart."""
    done = {}
    links = transport.run(f"readlink -e {CURRENT}; echo @@; readlink -e {INSTALL_ROOT}/previous", check=False)
    current, _, previous = (part.strip() for part in links.stdout.partition("@@"))
    if previous and previous != current:
        for command in switch_commands(previous, current):
            transport.sudo(command)
        done["build"] = {"from": current.rsplit("/", 1)[-1], "to": previous.rsplit("/", 1)[-1]}
    if transport.sudo(f"test -f {ENV_PATH}.previous", check=False).ok:
        transport.sudo(f"cp -p {ENV_PATH} {ENV_PATH}.rollback && mv -f {ENV_PATH}.previous {ENV_PATH} && "
                       f"mv -f {ENV_PATH}.rollback {ENV_PATH}.previous")
        done["settings"] = _env(transport).get("LLAMA_ARG_MODEL")
    if not done:
        raise UnsuitableDevice(f"nothing to roll back to on {transport.name}: one build and one setting only",
                               hint=f"see `edgekit status {transport.name}`")
    transport.sudo(f"systemctl restart {UNIT_NAME}")
    return done

