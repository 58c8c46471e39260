"""Steps that install and start the llama-server service, each a no-op when the device already matches.

Reads ctx.run.facts, .build (BuildState), .model (ModelState) and .service (ServiceOptions); writes
ctx.run.service_groups, .api_key_new, .health and .smoke_answer. daemon-reload and restart run only when the
unit, env, build or model changed in this run.
"""

from __future__ import annotations

import difflib
import json
import secrets
import time
from dataclasses import dataclass

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.facts.deployed import (FileOwnerMode, FileText, GpuGroups, PortListener, RunningBinary, UnitState,
                                    UserGroups, read)
from edgekit.remote.command import Local, Upload, sh
from edgekit.remote.plan import Change, Context, Noop
from edgekit.service import probe
from edgekit.service.settings import render_env, render_preset, render_unit, router_model, service_variables
from edgekit.settings import DEFAULTS

USER = L.SERVICE_USER


@dataclass
class ServiceOptions:
    port: int = DEFAULTS["port"]
    host: str = DEFAULTS["host"]
    api_key: bool = DEFAULTS["api_key"]
    n_ctx: int | None = None          # the context window (None: the model's)
    parallel: int = DEFAULTS["parallel"]
    threads: int | None = None
    cache_type_kv: str | None = None
    health_timeout: float = 600.0
    smoke_prompt: str = "Say hello in one short sentence."
    rollback: bool = DEFAULTS["rollback"]   # restore the last healthy state when a change leaves it unhealthy
    sleep_idle_seconds: int | None = None   # unload the model after this long without requests (None: never)
    spec_type: str | None = None            # draft-free speculation (--spec-type ngram-...)
    cors_origin: str | None = DEFAULTS["cors_origin"]   # the one web origin browsers may call from (None: none)
    lora_scaled: str | None = None          # a LoRA adapter on the device and its scale, PATH:SCALE


def probe_host(host: str) -> str:
    """Where to reach a server bound to `host` from the device itself (wildcards -> loopback, IPv6 bracketed)."""
    if host in ("", "0.0.0.0", "0", "0x0"):
        return "127.0.0.1"
    if host in ("::", "::0"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def uses_gpu(stamp: dict | None) -> bool:
    """Whether the installed build offloads to the GPU (its stamp says which ggml backend it was built for)."""
    return (stamp or {}).get("backend") == "cuda"


def _variables(ctx: Context) -> dict:
    opts, model, build = ctx.run.service, ctx.run.model, ctx.run.build
    assert opts is not None and model is not None, "the model and service steps set these first"
    entry = model.entry or {}
    routed = [router_model(name=m.name, path=m.path, ctx=opts.n_ctx or m.n_ctx or 4096,
                           chat_template=(m.entry or {}).get("chat_template") or None,
                           sampling=(m.entry or {}).get("sampling") or {})
              for m in ctx.run.models.values()] if ctx.run.router else None
    return service_variables(
        model_name=model.name, model_path=model.path, ctx=opts.n_ctx or model.n_ctx or 4096,
        port=opts.port, host=opts.host, gpu=uses_gpu(build.stamp if build else None), api_key=opts.api_key,
        parallel=opts.parallel, threads=opts.threads, chat_template=entry.get("chat_template"),
        cache_type_kv=opts.cache_type_kv, groups=ctx.run.service_groups, models=routed,
        models_max=ctx.run.models_max or (len(routed) if routed else None), cache_ram_mib=ctx.run.cache_ram_mib,
        sleep_idle_seconds=opts.sleep_idle_seconds, spec_type=opts.spec_type,
        draft=ctx.run.drafts[model.draft].path if model.draft and not routed else None,
        cors_origin=opts.cors_origin, lora=opts.lora_scaled)


class ServiceUser:
    """The system user the service runs as, in the GPU groups the device has."""

    name = "service user"

    def plan(self, ctx: Context):
        groups_present = ctx.fact(GpuGroups())
        ctx.run.service_groups = groups_present
        have = ctx.fact(UserGroups(USER))
        missing = [g for g in groups_present if g not in (have or [])]
        if have is not None and not missing:
            return Noop(f"user {USER} exists" + (f" (groups {', '.join(groups_present)})" if groups_present else ""))
        commands = [] if have is not None else [sh(
            "useradd", "--system", "--user-group", "--no-create-home", "--home-dir", f"/var/lib/{L.UNIT_NAME}",
            "--shell", "/usr/sbin/nologin", USER)]
        if missing:
            commands.append(sh("usermod", "-aG", ",".join(missing), USER))
        return Change(f"create system user {USER}" if have is None else f"add {USER} to {', '.join(missing)}",
                      commands)


class ApiKey:
    """An API key on the device (0600, owned by the service user) and on the controller (0600)."""

    name = "api key"

    def plan(self, ctx: Context):
        opts = ctx.run.service
        target = ctx.transport.name
        if not opts.api_key:
            return Noop("no API key (--no-api-key): the server answers anyone who can reach "
                        f"{opts.host}:{opts.port}")
        owner_mode = ctx.fact(FileOwnerMode(L.API_KEY_PATH))
        if owner_mode == (USER, "600"):
            if controller_state.read_api_key(target) is None and not ctx.dry_run:
                controller_state.save_api_key(target, (ctx.fact(FileText(L.API_KEY_PATH)) or "").strip())
            return Noop(f"{L.API_KEY_PATH} present (0600, {USER})")
        # a key that is there with the wrong owner or mode is kept (clients may use it); else a new one
        key = ((ctx.fact(FileText(L.API_KEY_PATH)) or "") if owner_mode else "").strip() \
            or "ek-" + secrets.token_urlsafe(32)
        ops = [sh("install", "-d", "-m", "0755", L.ETC_DIR),
               Upload(L.API_KEY_PATH, key + "\n", mode="0600", owner=USER, group=USER, secret=True),
               Local(f"keep a copy in {controller_state.api_key_path(target)} (0600)")]

        def apply(c: Context) -> None:
            c.do(ops[0])
            c.do(ops[1])
            controller_state.save_api_key(target, key)
            c.run.api_key_new = key if not owner_mode else None

        return Change(f"write {L.API_KEY_PATH} (0600) and keep a copy on the controller", ops, apply)


class _RenderedFile:
    """A root-owned file whose content is rendered from a template; keeps the previous one as <path>.previous."""

    name = ""
    path = ""
    mode = "0644"

    def content(self, ctx: Context) -> str:
        raise NotImplementedError

    def plan(self, ctx: Context):
        want = self.content(ctx)
        have = ctx.fact(FileText(self.path))
        if have == want:
            return Noop(f"{self.path} up to date")
        path = self.path
        ops = [sh("install", "-d", "-m", "0755", path.rsplit("/", 1)[0])]
        if have is not None:
            ops.append(sh("cp", "-p", path, f"{path}.previous"))
        ops.append(Upload(path, want, mode=self.mode))
        verb = "update" if have is not None else "write"
        diff = "".join(difflib.unified_diff((have or "").splitlines(True), want.splitlines(True), path, path))
        return Change(f"{verb} {path}", ops, detail={"diff": diff})


class EnvFile(_RenderedFile):
    name = "server settings"
    path = L.ENV_PATH

    def content(self, ctx: Context) -> str:
        return render_env(_variables(ctx))


class PresetFile(_RenderedFile):
    """Router mode: the models' presets (llama-server --models-preset); none with a single model."""

    name = "model presets"
    path = L.PRESET_PATH

    def content(self, ctx: Context) -> str:
        return render_preset(_variables(ctx))

    def plan(self, ctx: Context):
        if ctx.run.router:
            return super().plan(ctx)
        if ctx.fact(FileText(self.path)) is None:
            return Noop("one model: no router presets")
        return Change(f"remove {self.path} (one model now: no router)", [sh("rm", "-f", self.path)])


class UnitFile(_RenderedFile):
    name = "systemd unit"
    path = L.UNIT_PATH

    def content(self, ctx: Context) -> str:
        return render_unit(_variables(ctx))


class DaemonReload:
    name = "daemon-reload"

    def plan(self, ctx: Context):
        if UnitFile.name not in ctx.changed:
            return Noop("unit unchanged")
        return Change("systemctl daemon-reload", ["systemctl daemon-reload"])


class PortFree:
    """The chosen port must be free, or held by this very service."""

    name = "port"

    def plan(self, ctx: Context):
        return Noop(port_held(ctx, ctx.run.service.port, L.UNIT_NAME, "choose another with --port"))


def port_held(ctx: Context, port: int, unit: str, choose: str) -> str:
    """'port N is free' or '... is served by UNIT (PID n)'; raises when another program holds it."""
    listener = ctx.fact(PortListener(port))
    if not listener:
        return f"port {port} is free"
    main_pid = ctx.fact(UnitState(unit)).get("MainPID", "0")
    if main_pid != "0" and f"pid={main_pid}," in listener:
        return f"port {port} is served by {unit} (PID {main_pid})"
    user = listener.split("users:")[-1].strip() if "users:" in listener else listener
    raise UnsuitableDevice(f"port {port} on {ctx.transport.name} is already in use by {user}",
                           hint=f"{choose}, or stop that program")


class ServiceRunning:
    """Enabled and active; restarted once when anything it runs with (build, model, env, unit, key) changed."""

    name = "service"
    not_triggers = {"service user", DaemonReload.name, "preflight", "build-deps", "port", "llama-gate"}

    def plan(self, ctx: Context):
        show = ctx.fact(UnitState())
        enabled = show.get("UnitFileState") == "enabled"
        active = show.get("ActiveState") == "active"
        why = sorted(ctx.changed - self.not_triggers)
        main_pid = show.get("MainPID") or "0"
        if active and not why and main_pid.isdecimal() and main_pid != "0":
            running = ctx.fact(RunningBinary(main_pid))   # `current` moved (edgekit build, a fleet builder)?
            if running and running[0] != running[1]:
                why = ["llama-current (the running server is an older build than current)"]
        if active and enabled and not why:
            return Noop(f"{L.UNIT_NAME} active (PID {main_pid}), enabled")
        if not active:
            summary = f"start {L.UNIT_NAME}"
        elif why:
            summary = f"restart {L.UNIT_NAME} ({', '.join(why)} changed)"
        else:
            summary = f"enable {L.UNIT_NAME}"
        commands = [f"systemctl enable {L.UNIT_NAME}"] if not enabled else []
        if why or not active:
            commands.append(f"systemctl restart {L.UNIT_NAME}")
        return Change(summary, commands)


def wait_healthy(ctx: Context, port: int, host: str, key: str | None, timeout: float,
                 smoke_prompt: str = "Say hello in one short sentence.", model: str | None = None
                 ) -> tuple[float, float, str]:
    """Wait for /health 200, then one real chat completion (to `model`: router mode routes by it). Raises on a
    crash loop, a timeout or a failed completion; returns (seconds to healthy, seconds for the completion, the
    answer)."""
    base = f"http://{probe_host(host)}:{port}"
    start = time.monotonic()
    restarts0 = int(ctx.fact(UnitState()).get("NRestarts") or 0)
    status, body = 0, ""
    while time.monotonic() - start < timeout:
        status, body = probe.request(ctx.transport, f"{base}/health", timeout=5)
        if status == 200:
            break
        state = "loading model" if status == 503 else "starting"
        ctx.progress(f"{state} ({time.monotonic() - start:.0f}s)")
        show = ctx.fact(UnitState())
        restarts = int(show.get("NRestarts") or 0) - restarts0
        if show.get("ActiveState") == "failed" or restarts >= 2:
            logs = ctx.read(f"journalctl -u {L.UNIT_NAME} -n 25 --no-pager -o cat").stdout
            what = "failed to start" if show.get("ActiveState") == "failed" else f"is crash-looping ({restarts} restarts)"
            raise RemoteCommandFailed(f"systemctl start {L.UNIT_NAME}", 1, logs, message=f"{L.UNIT_NAME} {what}",
                                      hint=f"see `edgekit logs {ctx.transport.name}`")
        time.sleep(1)
    if status != 200:
        raise RemoteCommandFailed(f"GET {base}/health", status, body,
                                  message=f"llama-server did not become healthy in {timeout:g}s",
                                  hint=f"see `edgekit logs {ctx.transport.name}`")
    loaded = time.monotonic() - start
    t0 = time.monotonic()
    status, body = probe.request(ctx.transport, f"{base}/v1/chat/completions", key=key, timeout=300, body={
        "messages": [{"role": "user", "content": smoke_prompt}], "max_tokens": 32, "temperature": 0,
        **({"model": model} if model else {})})
    if status != 200:
        raise RemoteCommandFailed(f"POST {base}/v1/chat/completions", status, body,
                                  message=f"smoke completion failed with HTTP {status}",
                                  hint=f"see `edgekit logs {ctx.transport.name}`")
    answer = json.loads(body)["choices"][0]["message"]["content"].strip()
    return loaded, time.monotonic() - t0, answer


class Healthy:
    """Wait for GET /health to answer 200 (503 while the model loads), then one real chat completion."""

    name = "health"

    def plan(self, ctx: Context):
        if ctx.dry_run:
            return Noop("would wait for /health and send one chat completion")
        opts = ctx.run.service
        key = controller_state.read_api_key(ctx.transport.name) if opts.api_key else None
        loaded, took, answer = wait_healthy(ctx, opts.port, opts.host, key, opts.health_timeout, opts.smoke_prompt,
                                            ctx.run.model.name if ctx.run.model else None)
        ctx.run.smoke_answer = answer
        ctx.run.health = {"loaded_s": round(loaded, 2), "smoke_s": round(took, 2)}
        return Noop(f"healthy after {loaded:.1f}s; smoke completion in {took:.1f}s: {answer[:60]!r}")


def unit_properties(transport) -> dict[str, str]:
    """The service's state as systemd reports it (ActiveState, MainPID, UnitFileState, ...)."""
    return read(transport, UnitState())
