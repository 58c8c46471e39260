"""The exporter's bearer token per target on the controller: $EDGEKIT_HOME/targets/<target>.exporter-token (0600).

Next to the target's API key (edgekit.state), written the same way (a fresh temp file, 0600, renamed into place).
Prometheus reads it through `credentials_file:` (edgekit.metrics.scrape).
"""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

from edgekit import state


def token_path(target: str) -> Path:
    return state.targets_dir() / f"{state._slug(target)}.exporter-token"


def new_token() -> str:
    return "ekm-" + secrets.token_urlsafe(32)


def save_token(target: str, token: str) -> Path:
    path = token_path(target)
    state._write_private(path, token + "\n")
    return path


def read_token(target: str) -> str | None:
    """The saved token; a file readable by others is made 0600 first."""
    path = token_path(target)
    if not path.is_file():
        return None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    return path.read_text().strip() or None
