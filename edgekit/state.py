"""What the controller remembers per target: where its server listens, its API key (0600), its model.

Written by `edgekit provision`, read by `status`, `bench`, `chat` and `ask`:
$EDGEKIT_HOME/targets/<target>.json = {"target", "url", "api_key_file", "model", "port", "host"}.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from edgekit import paths


def _slug(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", target)


def targets_dir() -> Path:
    path = paths.home() / "targets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def state_path(target: str) -> Path:
    return targets_dir() / f"{_slug(target)}.json"


def load(target: str) -> dict | None:
    path = state_path(target)
    return json.loads(path.read_text()) if path.is_file() else None


def save(target: str, data: dict) -> Path:
    path = state_path(target)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"target": target, **data}, indent=2) + "\n")
    tmp.replace(path)
    return path


def forget(target: str) -> None:
    for path in (state_path(target), api_key_path(target)):
        path.unlink(missing_ok=True)


def api_key_path(target: str) -> Path:
    return targets_dir() / f"{_slug(target)}.api-key"


def save_api_key(target: str, key: str) -> Path:
    path = api_key_path(target)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    path.with_suffix(".tmp").replace(path)
    return path


def read_api_key(target: str) -> str | None:
    path = api_key_path(target)
    return path.read_text().strip() if path.is_file() else None
