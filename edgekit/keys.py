"""`edgekit key rotate HOST`: a leaked API key or exporter token is replaced, as steps under the device lock.

- The API key (/etc/edgekit/api-key): a new one, 0600 and the service user's; llama-server reads it only at start,
  so it restarts (the one thing that must), answers /health again, and answers the new key (the old one gets 401).
  The controller's copy ($EDGEKIT_HOME/targets/<target>.api-key) is replaced; the target's state names that file,
  so nothing else changes.
- The exporter token (/etc/edgekit/exporter-token): a new one; the exporter reads it at start, so it restarts and
  must answer /metrics with the new token. The controller's copy is replaced; Prometheus reads it through
  `credentials_file:` at every scrape (edgekit.metrics.scrape), so the scrape config `edgekit prometheus` wrote
  stays as it is and keeps scraping with the new token.
Nothing else restarts. A dry run prints the same steps and changes nothing (the new secrets are made at apply).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.errors import RemoteCommandFailed
from edgekit.facts.deployed import FileOwnerMode, FileText, UnitState
from edgekit.metrics import tokens
from edgekit.metrics.steps import poll_command
from edgekit.remote.command import Check, Local, Upload, q
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Change, Context, Noop, StepResult, run_steps
from edgekit.service import probe
from edgekit.service.settings import parse_env
from edgekit.service.steps import USER, probe_host

HEALTHY_WITHIN_S = 300


def new_api_key() -> str:
    return "ek-" + secrets.token_urlsafe(32)


def _secret_upload(path: str) -> Upload:
    """The new secret's upload as planned: made when the step runs (a dry run makes none), never printed."""
    return Upload(path, mode="0600", owner=USER, group=USER, secret=True,
                  made_by_run="a new random secret, made when this runs, never printed")


@dataclass(frozen=True)
class ApiKeyRotated:
    """A new API key in place, llama-server restarted on it and answering it; the controller's copy replaced."""

    name = "rotate api key"

    def plan(self, ctx: Context):
        target = ctx.transport.name
        if not ctx.fact(FileOwnerMode(L.API_KEY_PATH)):
            return Noop(f"no {L.API_KEY_PATH} on {target} (provisioned with --no-api-key, or not at all): "
                        "no key to rotate")
        env = parse_env(ctx.fact(FileText(L.ENV_PATH)) or "")
        base = f"http://{probe_host(env.get('LLAMA_ARG_HOST', '127.0.0.1'))}:{env.get('LLAMA_ARG_PORT', '8080')}"
        active = ctx.fact(UnitState()).get("ActiveState") == "active"
        ops = [_secret_upload(L.API_KEY_PATH),
               *([f"systemctl restart {q(L.UNIT_NAME)}",
                  Check(f"{base}/health answers 200 within {HEALTHY_WITHIN_S} s, then {base}/models answers the "
                        "new key (200)")] if active else []),
               Local(f"replace the copy in {controller_state.api_key_path(target)} (0600)")]

        def apply(c: Context) -> None:
            key = new_api_key()
            c.do(ops[0].with_text(key + "\n"))
            controller_state.save_api_key(target, key)   # the device has the new key now: so must the controller
            if active:
                c.do(ops[1])
                _answers(c, base, key)
            c.run.api_key_new = key

        why = "llama-server reads it at start: it restarts" if active else f"{L.UNIT_NAME} is not running"
        return Change(f"replace the API key ({why})", ops, apply)


def _answers(ctx: Context, base: str, key: str) -> None:
    """/health 200 within HEALTHY_WITHIN_S, then the new key is accepted (/models 200)."""
    start, status, body = time.monotonic(), 0, ""
    while time.monotonic() - start < HEALTHY_WITHIN_S:
        status, body = probe.request(ctx.transport, f"{base}/health", timeout=5)
        if status == 200:
            break
        ctx.progress(f"waiting for {L.UNIT_NAME} ({time.monotonic() - start:.0f}s)")
        time.sleep(1)
    if status == 200:
        status, body = probe.request(ctx.transport, f"{base}/models", key=key, timeout=10)
    if status != 200:
        raise RemoteCommandFailed(f"GET {base}/models", status, body,
                                  message=f"{L.UNIT_NAME} does not answer the new API key (status {status})",
                                  hint=f"the new key is in {L.API_KEY_PATH} and on this controller; see "
                                       f"`edgekit logs {ctx.transport.name}`")


@dataclass(frozen=True)
class ExporterTokenRotated:
    """A new exporter token in place, the exporter restarted on it and answering it; the controller's copy
    replaced (Prometheus reads that file at every scrape)."""

    name = "rotate exporter token"

    def plan(self, ctx: Context):
        target = ctx.transport.name
        if not ctx.fact(FileOwnerMode(L.EXPORTER_TOKEN)):
            return Noop(f"no {L.EXPORTER_TOKEN} on {target} (no exporter, or one without a token): no token to "
                        "rotate")
        unit = ctx.fact(UnitState(L.EXPORTER_UNIT))
        active = unit.get("ActiveState") == "active"
        url = _exporter_url(ctx.fact(FileText(L.EXPORTER_UNIT_PATH)) or "")
        poll = poll_command(url, L.EXPORTER_TOKEN) if url else None
        ops = [_secret_upload(L.EXPORTER_TOKEN),
               *([f"systemctl restart {q(L.EXPORTER_UNIT)}",
                  Check(f"/metrics answers the new token (200) within 20 s: {poll}")] if active and poll else []),
               Local(f"replace the copy in {tokens.token_path(target)} (0600): Prometheus reads it at every scrape, "
                     "its scrape config stays as it is")]

        def apply(c: Context) -> None:
            token = tokens.new_token()
            c.do(ops[0].with_text(token + "\n"))
            tokens.save_token(target, token)
            if active and poll:
                c.do(ops[1])
                status = (c.read(poll).stdout.strip().splitlines() or ["0"])[-1]
                if status != "200":
                    raise RemoteCommandFailed(f"GET {url}", int(status) if status.isdecimal() else 1, "",
                                              message=f"{L.EXPORTER_UNIT} does not answer the new token "
                                                      f"(status {status})",
                                              hint=f"see `journalctl -u {L.EXPORTER_UNIT}` on the device")

        why = "the exporter reads it at start: it restarts" if active else f"{L.EXPORTER_UNIT} is not running"
        return Change(f"replace the exporter token ({why})", ops, apply)


def _exporter_url(unit_text: str) -> str | None:
    """The URL the exporter's unit serves /metrics on (its ExecStart's --host and --port), reached on the device."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            words = line.split()
            try:
                host, port = words[words.index("--host") + 1], words[words.index("--port") + 1]
            except (ValueError, IndexError):
                return None
            return f"http://{probe_host(host)}:{port}/metrics"
    return None


def rotate_steps(api_key: bool = True, token: bool = True) -> list:
    return [*([ApiKeyRotated()] if api_key else []), *([ExporterTokenRotated()] if token else [])]


def rotate(ctx: Context, api_key: bool = True, token: bool = True) -> list[StepResult]:
    """Replace the API key and/or the exporter token under the device lock (a dry run takes none, changes nothing)."""
    with device_lock(ctx.transport, "key rotate", enabled=not ctx.dry_run, on_wait=ctx.lock_wait):
        return run_steps(ctx, rotate_steps(api_key, token))
