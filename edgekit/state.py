"""What the controller remembers per target: where its server listens, its API key (0600), its model.

Written by `edgekit provision`, read by `status`, `bench`, `chat` and `ask`:
$EDGEKIT_HOME/targets/<target>.json = {"target", "url", "api_key_file", "model", "port", "host"}.
targets/ is 0700 and every file in it 0600, written through a fresh temp file (mkstemp) and renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path

from edgekit import paths


def _slug(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", target)


def targets_dir() -> Path:
    """The folder of what edgekit keeps per target (not made here: reading makes nothing; write_file makes it)."""
    return paths.home() / "targets"


def _make_private(folder: Path) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(folder.stat().st_mode) != 0o700:
        folder.chmod(0o700)          # made by an older edgekit with the umask's mode


def write_file(path: Path, text: str, mode: int = 0o600) -> None:
    """Write `path` atomically with `mode` whatever was there before: a new temp file (never a leftover one), renamed
    (a reader, Prometheus re-reading file_sd say, never sees half a file)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def state_path(target: str) -> Path:
    return targets_dir() / f"{_slug(target)}.json"


def load(target: str) -> dict | None:
    path = state_path(target)
    return json.loads(path.read_text()) if path.is_file() else None


def save(target: str, data: dict) -> Path:
    path = state_path(target)
    _make_private(path.parent)
    write_file(path, json.dumps({"target": target, **data}, indent=2) + "\n")
    return path


def set_model(target: str, model: str | None) -> None:
    """The default model recorded for a target (after a rollback or `models use`); nothing when none is saved."""
    saved = load(target)
    if saved and model:
        save(target, {**saved, "model": model})


def files(target: str) -> list[Path]:
    """The files kept for a target (where it serves, its API key, the exporter's token), there or not; makes
    nothing (a dry run asks)."""
    folder = targets_dir()
    return [folder / f"{_slug(target)}.json", *(folder / f"{_slug(target)}.{kind}" for kind in ("api-key",
                                                                                               "exporter-token"))]


def forget(target: str) -> None:
    for path in files(target):
        path.unlink(missing_ok=True)


def secret_path(target: str, kind: str) -> Path:
    """A secret of a target kept on the controller (0600): kind `api-key` (the server's), `exporter-token`."""
    return targets_dir() / f"{_slug(target)}.{kind}"


def save_secret(target: str, kind: str, value: str) -> Path:
    path = secret_path(target, kind)
    _make_private(path.parent)
    write_file(path, value + "\n")
    return path


def read_secret(target: str, kind: str) -> str | None:
    """The saved secret; a file readable by others (saved by an older edgekit) is made 0600 first."""
    path = secret_path(target, kind)
    if not path.is_file():
        return None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    return path.read_text().strip() or None


def api_key_path(target: str) -> Path:
    return secret_path(target, "api-key")


def save_api_key(target: str, key: str) -> Path:
    return save_secret(target, "api-key", key)


def read_api_key(target: str) -> str | None:
    return read_secret(target, "api-key")
