"""Where edgekit keeps its state on the controller (EDGEKIT_HOME, default ~/.config/edgekit and ~/.cache/edgekit)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state directory: known hosts, API keys, settings."""
    env = os.environ.get("EDGEKIT_HOME")
    path = Path(env) if env else Path.home() / ".config" / "edgekit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache() -> Path:
    """The cache directory: downloaded models and packed builds."""
    env = os.environ.get("EDGEKIT_HOME")
    path = Path(env) / "cache" if env else Path.home() / ".cache" / "edgekit"
    path.mkdir(parents=True, exist_ok=True)
    return path


def known_hosts() -> Path:
    return home() / "known_hosts"
