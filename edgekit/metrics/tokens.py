"""The exporter's bearer token per target on the controller: $EDGEKIT_HOME/targets/<target>.exporter-token (0600),
next to the target's API key and kept the same way (edgekit.state). Prometheus reads it through `credentials_file:`
(edgekit.metrics.scrape).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from edgekit import state

KIND = "exporter-token"


def token_path(target: str) -> Path:
    return state.secret_path(target, KIND)


def new_token() -> str:
    return "ekm-" + secrets.token_urlsafe(32)


def save_token(target: str, token: str) -> Path:
    return state.save_secret(target, KIND, token)


def read_token(target: str) -> str | None:
    return state.read_secret(target, KIND)
