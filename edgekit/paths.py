"""Where edgekit keeps its state on the controller (EDGEKIT_HOME, default ~/.config/edgekit and ~/.cache/edgekit)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The state directory: known hosts, API keys, settings. Not made here (a dry run asks where things are and
    writes nothing): whoever writes a file makes its folder."""
    env = os.environ.get("EDGEKIT_HOME")
    return Path(env) if env else Path.home() / ".config" / "edgekit"


def cache() -> Path:
    """The cache directory: downloaded models and packed builds (made by the writers, as home())."""
    env = os.environ.get("EDGEKIT_HOME")
    return Path(env) / "cache" if env else Path.home() / ".cache" / "edgekit"


def known_hosts() -> Path:
    return home() / "known_hosts"
