"""Steps that install and start the llama-server service, each a no-op when the device already matches.

Reads from ctx.state: "facts" (DeviceFacts), "build" ({"prefix", "bin_dir", "stamp"}), "model" ({"name", "path",
"entry", "ctx", ...}), "service" (the ServiceOptions). Writes ctx.state["api_key"] and ctx.state["endpoint"].
daemon-reload and restart run only when the unit, env, build or model changed in this run.
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
from dataclasses import dataclass

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.remote.plan import Change, Context, Noop
from edgekit.service import probe
from edgekit.service.settings import (API_KEY_PATH, DEFAULTS, ENV_PATH, UNIT_NAME, UNIT_PATH, render_env,
                                      render_unit, service_variables)

USER = DEFAULTS["edgekit_service_user"]


@dataclass
class ServiceOptions:
    port: int = 8080
    host: str = "0.0.0.0"
    api_key: bool = True
    ctx: int | None = None
    parallel: int = 2
    threads: int | None = None
    cache_type_kv: str | None = None
    health_timeout: float = 600.0
    smoke_prompt: str = "Say hello in one short sentence."
    rollback: bool = True             # restore the last healthy state when a change leaves the service unhealthy


def probe_host(host: str) -> str:
    """Where to reach a server bound to `host` from the device itself (wildcards -> loopback, IPv6 bracketed)."""
    if host in ("", "0.0.0.0", "0", "0x0"):
        return "127.0.0.1"
    if host in ("::", "::0"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _read(ctx: Context, path: str) -> str | None:
    res = ctx.sudo(f"cat {shlex.quote(path)}", check=False)
    return res.stdout if res.ok else None


def uses_gpu(stamp: dict) -> bool:
    """Whether the installed build offloads to the GPU (its stamp says which ggml backend it was built for)."""
    return stamp.get("backend") == "cuda"


def _variables(ctx: Context) -> dict:
    opts: ServiceOptions = ctx.state["service"]
    model, build = ctx.state["model"], ctx.state.get("build") or {}
    entry = model.get("entry") or {}
    stamp = build.get("stamp") or {}
    return service_variables(
        model_name=model["name"], model_path=model["path"], ctx=opts.ctx or model.get("ctx") or 4096,
        port=opts.port, host=opts.host, gpu=uses_gpu(stamp), api_key=opts.api_key,
        parallel=opts.parallel, threads=opts.threads, chat_template=entry.get("chat_template"),
        cache_type_kv=opts.cache_type_kv, groups=ctx.state.get("service_groups", []))


class ServiceUser:
    name = "service user"

    def plan(self, ctx: Context):
        groups_present = [g for g in ctx.transport.run("getent group video render | cut -d: -f1", check=False).stdout.split()
                      if g in L.GPU_GROUPS]   # only the names asked for reach a command
        ctx.state["service_groups"] = groups_present
        have = ctx.transport.run(f"id -nG {USER}", check=False)
        missing = [g for g in groups_present if g not in have.stdout.split()]
        if have.ok and not missing:
            return Noop(f"user {USER} exists" + (f" (groups {', '.join(groups_present)})" if groups_present else ""))
        commands = [] if have.ok else [
            f"useradd --system --user-group --no-create-home --home-dir /var/lib/{UNIT_NAME} "
            f"--shell /usr/sbin/nologin {USER}"]
        if missing:
            commands.append(f"usermod -aG {','.join(missing)} {USER}")
        return Change(f"create system user {USER}" if not have.ok else f"add {USER} to {', '.join(missing)}",
                      commands)


class ApiKey:
    """An API key on the device (0600, owned by the service user) and on the controller (0600)."""

    name = "api key"

    def plan(self, ctx: Context):
        opts: ServiceOptions = ctx.state["service"]
        target = ctx.transport.name
        if not opts.api_key:
            return Noop("no API key (--no-api-key): the server answers anyone who can reach "
                        f"{opts.host}:{opts.port}")
        on_device = ctx.sudo(f"stat -c '%U %a' {API_KEY_PATH}", check=False)
        if on_device.ok and on_device.stdout.split() == [USER, "600"]:
            if controller_state.read_api_key(target) is None and not ctx.dry_run:
                controller_state.save_api_key(target, (_read(ctx, API_KEY_PATH) or "").strip())
            return Noop(f"{API_KEY_PATH} present (0600, {USER})")

        def apply(c: Context) -> None:
            key = (_read(c, API_KEY_PATH) or "").strip() if on_device.ok else ""
            key = key or "ek-" + secrets.token_urlsafe(32)
            c.sudo("install -d -m 0755 /etc/edgekit")
            c.transport.put_text(key + "\n", API_KEY_PATH, sudo=True, mode="0600", owner=USER, group=USER)
            controller_state.save_api_key(target, key)
            c.state["api_key_new"] = key

        return Change(f"write {API_KEY_PATH} (0600) and keep a copy on the controller",
                      [f"install -m 0600 -o {USER} <generated key> {API_KEY_PATH}"], apply)


class _RenderedFile:
    """A root-owned file whose content is rendered from a template; keeps the previous one as <path>.previous."""

    name = ""
    path = ""
    mode = "0644"

    def content(self, ctx: Context) -> str:
        raise NotImplementedError

    def plan(self, ctx: Context):
        want = self.content(ctx)
        have = _read(ctx, self.path)
        if have == want:
            return Noop(f"{self.path} up to date")
        path = self.path

        def apply(c: Context) -> None:
            c.sudo(f"install -d -m 0755 {shlex.quote(path.rsplit('/', 1)[0])}")
            if have is not None:
                c.sudo(f"cp -p {shlex.quote(path)} {shlex.quote(path)}.previous")
            c.transport.put_text(want, path, sudo=True, mode=self.mode)

        verb = "update" if have is not None else "write"
        return Change(f"{verb} {path}", [f"install -m {self.mode} <rendered {self.name}> {path}"], apply,
                      detail={"diff": _diff(have or "", want, path)})


class EnvFile(_RenderedFile):
    name = "server settings"
    path = ENV_PATH

    def content(self, ctx: Context) -> str:
        return render_env(_variables(ctx))


class UnitFile(_RenderedFile):
    name = "systemd unit"
    path = UNIT_PATH

    def content(self, ctx: Context) -> str:
        return render_unit(_variables(ctx))


class DaemonReload:
    name = "daemon-reload"

    def plan(self, ctx: Context):
        if UnitFile.name not in ctx.changed:
            return Noop("unit unchanged")
        return Change("systemctl daemon-reload", ["systemctl daemon-reload"])


def unit_properties(transport) -> dict[str, str]:
    """The service's state as systemd reports it (ActiveState, MainPID, UnitFileState, ...)."""
    res = transport.run(f"systemctl show {UNIT_NAME} -p ActiveState -p SubState -p MainPID -p UnitFileState "
                        "-p NRestarts -p ActiveEnterTimestamp -p LoadState", check=False)
    return dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)


class PortFree:
    """The chosen port must be free, or held by this very service."""

    name = "port"

    def plan(self, ctx: Context):
        port = ctx.state["service"].port
        res = ctx.sudo(f"ss -Hltnp 'sport = :{port}'", check=False)
        if not res.stdout.strip():
            return Noop(f"port {port} is free")
        main_pid = unit_properties(ctx.transport).get("MainPID", "0")
        if main_pid != "0" and f"pid={main_pid}," in res.stdout:
            return Noop(f"port {port} is served by {UNIT_NAME} (PID {main_pid})")
        user = res.stdout.split("users:")[-1].strip() if "users:" in res.stdout else res.stdout.strip()
        raise UnsuitableDevice(f"port {port} on {ctx.transport.name} is already in use by {user}",
                               hint="choose another with --port, or stop that program")


class ServiceRunning:
    """Enabled and active; restarted once when anything it runs with (build, model, env, unit, key) changed."""

    name = "service"
    not_triggers = {"service user", DaemonReload.name, "preflight", "build-deps", "port", "llama-gate"}

    def plan(self, ctx: Context):
        show = unit_properties(ctx.transport)
        enabled = show.get("UnitFileState") == "enabled"
        active = show.get("ActiveState") == "active"
        why = sorted(ctx.changed - self.not_triggers)
        if active and not why and self._stale_binary(ctx, show.get("MainPID") or "0"):
            why = ["llama-current (the running server is an older build than current)"]
        if active and enabled and not why:
            return Noop(f"{UNIT_NAME} active (PID {show.get('MainPID')}), enabled")
        if not active:
            summary = f"start {UNIT_NAME}"
        elif why:
            summary = f"restart {UNIT_NAME} ({', '.join(why)} changed)"
        else:
            summary = f"enable {UNIT_NAME}"
        commands = [f"systemctl enable {UNIT_NAME}"] if not enabled else []
        if why or not active:
            commands.append(f"systemctl restart {UNIT_NAME}")
        return Change(summary, commands)

    @staticmethod
    def _stale_binary(ctx: Context, main_pid: str) -> bool:
        """`current` moved (edgekit build, a fleet builder) while the service kept the binary it started with."""
        if not main_pid.isdigit() or main_pid == "0":
            return False
        out = ctx.sudo(f"readlink -f /proc/{main_pid}/exe; readlink -f {shlex.quote(L.CURRENT)}/bin/llama-server",
                       check=False).stdout.split()
        return len(out) == 2 and out[0] != out[1]


def wait_healthy(ctx: Context, port: int, host: str, key: str | None, timeout: float,
                 smoke_prompt: str = "Say hello in one short sentence.") -> tuple[float, float, str]:
    """Wait for /health 200, then one real chat completion. Raises on a crash loop, a timeout or a failed
    completion; returns (seconds to healthy, seconds for the completion, the answer)."""
    base = f"http://{probe_host(host)}:{port}"
    start = time.monotonic()
    restarts0 = int(unit_properties(ctx.transport).get("NRestarts") or 0)
    status, body = 0, ""
    while time.monotonic() - start < timeout:
        status, body = probe.request(ctx.transport, f"{base}/health", timeout=5)
        if status == 200:
            break
        state = "loading model" if status == 503 else "starting"
        ctx.progress(f"{state} ({time.monotonic() - start:.0f}s)")
        show = unit_properties(ctx.transport)
        restarts = int(show.get("NRestarts") or 0) - restarts0
        if show.get("ActiveState") == "failed" or restarts >= 2:
            logs = ctx.sudo(f"journalctl -u {UNIT_NAME} -n 25 --no-pager -o cat", check=False).stdout
            what = "failed to start" if show.get("ActiveState") == "failed" else f"is crash-looping ({restarts} restarts)"
            raise RemoteCommandFailed(f"systemctl start {UNIT_NAME}", 1, logs, message=f"{UNIT_NAME} {what}",
                                      hint=f"see `edgekit logs {ctx.transport.name}`")
        time.sleep(1)
    if status != 200:
        raise RemoteCommandFailed(f"GET {base}/health", status, body,
                                  message=f"llama-server did not become healthy in {timeout:g}s",
                                  hint=f"see `edgekit logs {ctx.transport.name}`")
    loaded = time.monotonic() - start
    t0 = time.monotonic()
    status, body = probe.request(ctx.transport, f"{base}/v1/chat/completions", key=key, timeout=300, body={
        "messages": [{"role": "user", "content": smoke_prompt}], "max_tokens": 32, "temperature": 0})
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
        opts: ServiceOptions = ctx.state["service"]
        key = controller_state.read_api_key(ctx.transport.name) if opts.api_key else None
        loaded, took, answer = wait_healthy(ctx, opts.port, opts.host, key, opts.health_timeout, opts.smoke_prompt)
        ctx.state["smoke_answer"] = answer
        ctx.state["health"] = {"loaded_s": round(loaded, 2), "smoke_s": round(took, 2)}
        return Noop(f"healthy after {loaded:.1f}s; smoke completion in {took:.1f}s: {answer[:60]!r}")


def service_steps() -> list:
    from edgekit.service.healthy import RecordHealthy

    return [ApiKey(), EnvFile(), UnitFile(), DaemonReload(), ServiceRunning(), Healthy(), RecordHealthy()]


def _diff(old: str, new: str, path: str) -> str:
    import difflib

    return "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path))
