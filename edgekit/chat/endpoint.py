"""Where a provisioned target's llama-server is, and its API key.

`edgekit provision` writes `$EDGEKIT_HOME/targets/<target>.json`:
`{"url": "http://host:port", "api_key_file": "<path, 0600>", "model": "<catalog name>"}`.
`endpoint_for()` reads it and applies `--url` / `--api-key` overrides.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit import state
from edgekit.chat.client import Endpoint, check_url
from edgekit.errors import UsageError

__all__ = ["Endpoint", "check_url", "load", "read_key_file", "endpoint_for", "state_path"]


def state_path(target: str) -> Path:
    """The file provision wrote for TARGET (edgekit.state owns the naming)."""
    return state.state_path(target)


def read_key_file(path: str | Path) -> str:
    p = Path(path).expanduser()
    try:
        key = p.read_text().strip()
    except FileNotFoundError:
        raise UsageError(f"API key file not found: {p}",
                         hint="re-run `edgekit provision TARGET` to store it again, or pass --api-key") from None
    except PermissionError:
        raise UsageError(f"cannot read the API key file {p} (permission denied)",
                         hint="run edgekit as the user who provisioned the target, or pass --api-key") from None
    if not key:
        raise UsageError(f"API key file {p} is empty", hint="re-run `edgekit provision TARGET`, or pass --api-key")
    return key


def load(target: str) -> Endpoint:
    """The endpoint that `edgekit provision TARGET` recorded; UsageError naming provision when there is none."""
    path = state_path(target)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no llama-server recorded for {target!r} (looked for {path})",
                         hint=f"run `edgekit provision {target}` first, or pass --url http://HOST:PORT") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON: {e}", hint=f"re-run `edgekit provision {target}`") from None
    if not isinstance(data, dict) or not data.get("url"):
        raise UsageError(f"{path} has no server url", hint=f"re-run `edgekit provision {target}`")
    key_file = data.get("api_key_file")
    return Endpoint(url=check_url(data["url"]), api_key=read_key_file(key_file) if key_file else None,
                    api_key_file=key_file, model=data.get("model"), target=target)


def endpoint_for(target: str | None, url: str | None = None, api_key: str | None = None) -> Endpoint:
    """TARGET's recorded endpoint with overrides, or just --url (then TARGET only labels it)."""
    if url:
        base = None
        if target:
            try:
                base = load(target)
            except UsageError:
                base = None
        return Endpoint(url=check_url(url), api_key=api_key or (base.api_key if base else None),
                        api_key_file=None if api_key else (base.api_key_file if base else None),
                        model=base.model if base else None, target=target)
    if not target:
        raise UsageError("no target given", hint="name a provisioned target, or pass --url http://HOST:PORT")
    found = load(target)
    if api_key:
        return Endpoint(url=found.url, api_key=api_key, api_key_file=None, model=found.model, target=target)
    return found
