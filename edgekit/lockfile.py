"""The controller's lock file `edgekit.lock`: the sha256 of every model and llama.cpp source the first time it is
fetched; every later install, on every device, must have the same bytes.

`check_or_record(kind, name, sha256, source)` records a name seen for the first time and refuses (LockMismatch,
exit 4, naming both hashes and the lock file) one whose bytes differ from the recorded ones; `check` is the same
without writing (plans and dry runs). Kinds used: "model" (name "<model>/<file>", as on the device) and
"sources" (a llama.cpp source tarball by URL, named by its URL). JSON, one object per kind, keys sorted so it diffs well under version control:

    {"version": 1,
     "model": {"chinese-alpaca-2-1.3b/ggml-model-q4_k.gguf":
               {"sha256": "…", "source": "https://huggingface.co/…", "recorded": "2025-05-01T10:00:00+00:00"}}}

Where: `path` when given (next to an inventory: `for_inventory(path)`), else paths.home()/edgekit.lock. Writers
(the hosts of a fleet, in threads or processes) hold an exclusive flock on `<lock file>.lock` while they read, add
and replace the file (temp file, fsync, rename): no entry is lost, and a killed run never leaves half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from edgekit import paths
from edgekit.errors import REMOTE, EdgekitError, ParseError, UsageError

FILE_NAME = "edgekit.lock"
VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KIND = re.compile(r"[a-z0-9][a-z0-9._-]*")


class LockMismatch(EdgekitError):
    """The bytes differ from the ones the lock file recorded the first time: nothing was installed."""

    exit_code = REMOTE


def default_path() -> Path:
    """<EDGEKIT_HOME or ~/.config/edgekit>/edgekit.lock."""
    return paths.home() / FILE_NAME


def for_inventory(inventory: str | Path) -> Path:
    """The lock file that goes with an inventory: edgekit.lock in the inventory's folder."""
    return Path(inventory).expanduser().resolve().parent / FILE_NAME


def location(path: str | Path | None = None) -> Path:
    """The lock file in use: `path` when given, else default_path()."""
    return Path(path).expanduser() if path else default_path()


def _norm(kind: str, name: str, sha256: str) -> str:
    if not _KIND.fullmatch(kind or "") or kind == "version":
        raise ValueError(f"lock file kind {kind!r} is not a lowercase word")
    if not name:
        raise ValueError("lock file entries need a name")
    sha = (sha256 or "").strip().lower()
    if not _SHA256.fullmatch(sha):
        raise ValueError(f"{kind} {name}: {sha256!r} is not a sha256 (64 hex digits)")
    return sha


def _load(path: Path) -> dict:
    repair = f"repair {path} (e.g. from version control) or remove it to record the hashes anew"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"version": VERSION}
    except OSError as e:
        raise UsageError(f"cannot read the lock file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ParseError(f"the lock file {path} is not UTF-8 text (byte {e.start})", hint=repair) from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ParseError(f"the lock file {path} is not valid JSON: {' '.join(str(e).split())}", hint=repair) from None
    except RecursionError:
        raise ParseError(f"the lock file {path} nests too deeply to be an edgekit lock file", hint=repair) from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for k, v in data.items() if k != "version"):
        raise ParseError(f"the lock file {path} is not an edgekit lock file", hint=repair)
    if data.get("version", VERSION) != VERSION:
        raise UsageError(f"the lock file {path} has version {data.get('version')!r}; this edgekit reads version "
                         f"{VERSION}", hint="upgrade edgekit: a newer edgekit wrote this lock file")
    return data


def _write(path: Path, data: dict) -> None:
    """Replace the file atomically: a temp file in the same folder, fsync, rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _entry(path: Path, data: dict, kind: str, name: str) -> dict | None:
    entry = data.get(kind, {}).get(name)
    if entry is not None and (not isinstance(entry, dict) or not _SHA256.fullmatch(str(entry.get("sha256", "")))):
        raise UsageError(f"the lock file {path} has a malformed entry for {kind} {name!r}: {entry!r}",
                         hint=f"fix or remove that entry in {path}")
    return entry


def _compare(path: Path, kind: str, name: str, sha: str, entry: dict) -> None:
    if entry["sha256"] != sha:
        first = ", ".join(x for x in (f"from {entry['source']}" if entry.get("source") else "",
                                       f"on {entry['recorded']}" if entry.get("recorded") else "") if x)
        raise LockMismatch(
            f"{kind} {name} has sha256 {sha}, but the lock file {path} recorded sha256 {entry['sha256']} when it "
            f"was first fetched{' (' + first + ')' if first else ''}; nothing was installed",
            hint=f"if the {kind} really changed (a new upstream revision), remove the \"{name}\" entry from {path} "
                 "and run again; otherwise check where the bytes came from (mirror, URL)")


def validate(path: str | Path | None = None) -> None:
    """Read the lock file in use and raise ParseError when it is not one (a run checks it before any device)."""
    lock = location(path)
    data = _load(lock)
    for kind, entries in data.items():
        if kind != "version":
            for name in entries:
                _entry(lock, data, kind, name)


def recorded(kind: str, name: str, path: str | Path | None = None) -> str | None:
    """The sha256 the lock file recorded for kind/name, or None."""
    lock = location(path)
    entry = _entry(lock, _load(lock), kind, name)
    return entry["sha256"] if entry else None


def check(kind: str, name: str, sha256: str, path: str | Path | None = None) -> None:
    """Refuse (LockMismatch) when the lock file recorded other bytes for kind/name; never writes."""
    sha = _norm(kind, name, sha256)
    lock = location(path)
    entry = _entry(lock, _load(lock), kind, name)
    if entry is not None:
        _compare(lock, kind, name, sha, entry)


def check_or_record(kind: str, name: str, sha256: str, source: str, path: str | Path | None = None) -> None:
    """Record kind/name's sha256 the first time it is seen; afterwards refuse (LockMismatch, exit 4) other bytes.

    `source` (a URL or path; any query string is dropped, it may hold a token) is kept for the error message."""
    sha = _norm(kind, name, sha256)
    lock = location(path)
    with _locked(lock):
        data = _load(lock)
        entry = _entry(lock, data, kind, name)
        if entry is not None:
            _compare(lock, kind, name, sha, entry)
            return
        data.setdefault(kind, {})[name] = {
            "sha256": sha, "source": (source or "").split("?", 1)[0],
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        data["version"] = VERSION
        _write(lock, data)
