"""Model checks and transfers on the device, through edgekit's device helper (edgekit.remote.helper).

`fetch_command` and `Fetch`'s adopt/space commands are the exact command lines a FetchModel change prints and runs;
`ModelFile`, `GgufOnDevice` and `TcpReachable` are facts read with the helper (tests hand them in).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgekit.device.files import FetchError
from edgekit.errors import RemoteCommandFailed
from edgekit.models import download
from edgekit.models.gguf_header import GGUFHeader
from edgekit.remote.command import Cmd
from edgekit.remote.helper import collect_events, helper_command, last_event, run_helper
from edgekit.service.probe import tcp_reachable


def fetch_args(config: dict, token: bool) -> list[str]:
    return [json.dumps(config)] + (["--token-stdin"] if token else [])


def fetch_command(transport, config: dict, token: bool) -> Cmd:
    """A device-side transfer (as the login user); the HF token, when there is one, goes on stdin only."""
    return Cmd(helper_command(transport, "fetch", fetch_args(config, token)))


def _result(command: str, events: list[dict], result, url: str = "") -> dict:
    last = last_event(events, result, "fetch")
    if last.get("event") == "error":
        raise download.translate(FetchError(last["kind"], last["message"]), url)
    if result.exit_code != 0:
        raise RemoteCommandFailed(command, result.exit_code, result.stdout + result.stderr)
    return last


def run_fetch(ctx, op: Cmd, token: str | None, url: str, on_event=None) -> dict:
    """Run a fetch op of a change (it writes the model file): -> the helper's last event."""
    events, result = collect_events(lambda c, **kw: ctx.do(Cmd(c), check=False, **kw), op.text,
                                    (token + "\n") if token else None, on_event)
    return _result(op.text, events, result, url)


def run_check(ctx, command: str) -> dict:
    """Run a helper check (room for a push): a read."""
    events, result = collect_events(lambda c, **kw: ctx.read(c, sudo=False, **kw), command)
    return _result(command, events, result)


@dataclass(frozen=True)
class ModelFile:
    """A fact: the model file at `dest` against `sha256` -> {"state": missing|verified|mismatch, "sha256", "size"}."""

    dest: str
    sha256: str | None
    sudo: bool = False

    def read(self, transport) -> dict:
        config = {"mode": "check", "dest": self.dest, "sha256": self.sha256,
                  **({"record": False} if getattr(transport, "read_only", False) else {})}
        events, result = run_helper(transport, "fetch", fetch_args(config, False))
        return _result("helper fetch check", events, result)


@dataclass(frozen=True)
class GgufOnDevice:
    """A fact: ("valid", GGUFHeader), ("missing", None) or ("invalid", the reason) for a GGUF file on the device."""

    path: str
    sudo: bool = False

    def read(self, transport) -> tuple[str, GGUFHeader | str | None]:
        events, result = run_helper(transport, "gguf", [self.path])
        last = last_event(events, result, "gguf")
        if last.get("event") == "gguf":
            return "valid", GGUFHeader.from_json(last)
        if last.get("event") == "missing":
            return "missing", None
        if last.get("event") == "error" and last.get("kind") == "gguf":
            return "invalid", str(last.get("message"))
        raise RemoteCommandFailed(f"helper gguf {self.path}", result.exit_code, result.stdout + result.stderr)


@dataclass(frozen=True)
class TcpReachable:
    """A fact: whether the device opens a TCP connection to host:port within 5 s (can it download itself?)."""

    host: str
    port: int
    sudo: bool = False

    def read(self, transport) -> bool:
        return tcp_reachable(transport, self.host, self.port, 5)
