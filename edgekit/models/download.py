"""Controller-side downloads: Hugging Face style URLs, mirrors, tokens, resume, sha256 while streaming.

URLs are `{endpoint}/{repo}/resolve/{revision}/{file}`; the endpoint is `--hf-endpoint`, else `HF_ENDPOINT`,
else https://huggingface.co. `HF_TOKEN` is sent as a Bearer header to that host over https only (never over
plain http, nor after a redirect to another host), and never logged or put in an error.
The resume/verify/rename and disk-space logic is edgekit.device (fetch, files: the same code runs on the device
in the helper); this module turns its events into `Progress` values and its failures into typed errors (a full disk is
UnsuitableDevice, exit 5). A local path or file:// URL is copied with the same checks and verification.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekit import errors, paths
from edgekit.layout import MODELS_DIR
from edgekit.device import fetch as device_fetch
from edgekit.device import files
from edgekit.models.catalog import DEFAULT_ENDPOINT


class DownloadError(errors.EdgekitError):
    """A download failed (network, HTTP status, size or checksum)."""

    exit_code = errors.REMOTE


class ChecksumError(DownloadError):
    """The bytes do not match the expected sha256 or size; nothing was installed."""


@dataclass
class Progress:
    done: int
    total: int | None
    rate: float          # bytes per second
    eta: float | None    # seconds

    def text(self) -> str:
        total = f"/{self.total / 2**20:.0f}" if self.total else ""
        eta = f", ETA {self.eta:.0f}s" if self.eta is not None else ""
        return f"{self.done / 2**20:.0f}{total} MiB at {self.rate / 2**20:.1f} MiB/s{eta}"


@dataclass
class Fetched:
    path: Path
    sha256: str
    size: int
    downloaded: int       # bytes that crossed the network this time (0 = nothing fetched)
    resumed_from: int
    warnings: list[str] = field(default_factory=list)    # e.g. HF_TOKEN withheld from a plain-http endpoint


def endpoint(explicit: str | None = None) -> str:
    return (explicit or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def token() -> str | None:
    return os.environ.get("HF_TOKEN") or None


def cache_path(model: str, file: str) -> Path:
    """Where the controller keeps a downloaded model: <cache>/models/<model>/<file>."""
    return paths.cache() / "models" / model / file          # its folder is made by `fetch`, when it downloads


def translate(e: files.FetchError, url: str) -> errors.EdgekitError:
    host = urllib.parse.urlsplit(url).netloc or url
    if e.kind == "space":
        return errors.UnsuitableDevice(e.message, hint=f"free at least that much at that path (models edgekit "
                                                       f"installed on a device are under {MODELS_DIR}), then run "
                                                       "the same command again")
    if e.kind == "write":
        return DownloadError(e.message, hint="check that disk (`dmesg` may say why), then run again")
    if e.kind in ("checksum", "size", "etag"):
        return ChecksumError(e.message, hint="the download was not installed; if the catalog is stale, pass "
                                             "--sha256 with the right value")
    if "HF_TOKEN was not sent" in e.message:
        return DownloadError(e.message, hint="use an https:// endpoint (--hf-endpoint or HF_ENDPOINT): HF_TOKEN is "
                                             "never sent over plain http")
    if "gated" in e.message:
        return DownloadError(e.message, hint="set HF_TOKEN to a token that has access (it is never logged)")
    return DownloadError(e.message, hint=f"check that {host} is reachable (or set HF_ENDPOINT to a mirror), "
                                         "then run again: the download resumes")


def fetch(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
          on_progress: Callable[[Progress], None] | None = None, timeout: float = 30.0) -> Fetched:
    """Download (or copy a local file) to dest, verified; skip when dest already matches sha256.

    Several callers may fill the same cache file at once (a fleet's hosts): an exclusive lock on <dest>.lock
    makes the others wait, then find the verified file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(str(dest) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_locked(url, dest, sha256, size, on_progress, timeout)


def _fetch_locked(url: str, dest: Path, sha256: str | None, size: int | None,
                  on_progress: Callable[[Progress], None] | None, timeout: float) -> Fetched:
    if dest.is_file():
        state = files.check(str(dest), sha256 or None)
        if state["state"] == "verified":
            return Fetched(dest, state["sha256"], state["size"], 0, 0)
        dest.unlink()   # a file that does not match is not kept where a verified one belongs
    if not _is_remote(url):
        return _copy_local(url, dest, sha256, size, on_progress)

    warnings: list[str] = []

    def on_event(event: dict) -> None:
        if on_progress and event["event"] == "progress":
            on_progress(Progress(event["done"], event["total"], event["rate"], event["eta"]))
        elif event["event"] == "warning":
            warnings.append(event["message"])

    try:
        done = device_fetch.fetch(url, str(dest), sha256, size, token(), on_event, timeout)
    except files.FetchError as e:
        raise translate(e, url) from None
    except KeyboardInterrupt:
        raise  # the .partial stays for the next run to resume
    return Fetched(dest, done["sha256"], done["size"], done["downloaded"], done["resumed_from"], warnings)


def _is_remote(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme in ("http", "https")


def _copy_local(src: str, dest: Path, sha256: str | None, size: int | None,
                on_progress: Callable[[Progress], None] | None) -> Fetched:
    path = Path(urllib.parse.urlsplit(src).path if src.startswith("file://") else src).expanduser()
    if not path.is_file():
        raise errors.UsageError(f"no such model file: {path}", hint="give a path to a .gguf file or an https:// URL")
    partial = Path(str(dest) + ".partial")
    h = hashlib.sha256()
    total, done, start = path.stat().st_size, 0, time.monotonic()
    old = partial.stat().st_size if partial.is_file() else 0

    def on_read(n: int) -> None:
        nonlocal done
        done += n
        if on_progress:
            rate = done / max(time.monotonic() - start, 1e-6)
            on_progress(Progress(done, total, rate, (total - done) / rate if rate else None))

    try:
        files.check_space(str(dest), total, reclaim=old)
        with open(path, "rb", buffering=0) as src_fh:
            try:
                done = files.stream(src_fh.readinto, str(partial), False, h, on_read)
            except files.WriteFailed as e:
                raise files.write_failed(e.error, str(partial), str(dest), e.written, total) from None
    except files.FetchError as e:
        raise translate(e, str(path)) from None
    digest = h.hexdigest()
    if (size and done != size) or (sha256 and digest != sha256.lower()):
        partial.unlink()
        raise ChecksumError(f"{path}: got {done} bytes with sha256 {digest}, expected "
                            f"{size or '?'} bytes with sha256 {sha256 or '?'}; nothing was installed",
                            hint="check the file, or pass the right --sha256")
    os.replace(partial, dest)
    files.write_sidecar(str(dest), digest)
    return Fetched(dest, digest, done, done, 0)
