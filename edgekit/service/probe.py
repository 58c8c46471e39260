"""Requests made ON the device through its helper: a server bound to 127.0.0.1 is reachable, and so is what the
device itself can reach (an HTTP request; a TCP connect). The API key travels on stdin, never in argv, and the
device sends it only to edgekit's own server (edgekit.localhttp)."""

from __future__ import annotations

import json

from edgekit import layout as L
from edgekit.errors import RemoteCommandFailed
from edgekit.remote.helper import last_event, run_helper


def request(transport, url: str, body: dict | None = None, key: str | None = None,
            timeout: float = 10) -> tuple[int, str]:
    """(status, body) of one HTTP request made on the device; status 0 when nothing answered."""
    req = {"url": url, "body": body, "key": key, "timeout": timeout, "owner": L.SERVICE_USER if key else None}
    payload = json.dumps({k: v for k, v in req.items() if v is not None}, separators=(",", ":"))
    events, result = run_helper(transport, "http", stdin=payload, timeout=timeout + 15)
    answer = _answer(events, result, "http")
    return answer["status"], answer["body"]


def tcp_reachable(transport, host: str, port: int, timeout: float = 5) -> bool:
    """Whether the device opens a TCP connection to host:port within timeout seconds."""
    events, result = run_helper(transport, "tcp", [host, str(port), f"{timeout:g}"], timeout=timeout + 15)
    return bool(_answer(events, result, "tcp")["reachable"])


def _answer(events: list[dict], result, subcommand: str) -> dict:
    event = last_event(events, result, subcommand)
    if event.get("event") != subcommand:
        raise RemoteCommandFailed(f"python3 helper.pyz {subcommand}", result.exit_code, result.stdout + result.stderr)
    return event
