"""Fetch one file over HTTP(S) with resume and sha256 verification. Python 3 standard library only.

The same code runs on the controller (edgekit.models.download imports it) and on the device, where it is
uploaded to /tmp and run as `python3 device_fetch.py '<config json>' [--token-stdin]`: the config in argv
holds no secret; HF_TOKEN arrives on stdin only, so it never appears in a command line or an environment.
On the device it prints one JSON line per event, prefixed with "@@edgekit ", which the controller parses:
  {"event": "start", "pid": 123, "resume_from": 0, "total": 253113024, "remote_sha256": "..."}
  {"event": "progress", "done": 1048576, "total": 253113024, "rate": 1.2e8, "eta": 2.0}
  {"event": "done", "sha256": "...", "size": 253113024, "downloaded": 253113024, "resumed_from": 0}
  {"event": "error", "kind": "checksum|size|http|io|etag", "message": "..."}

Behaviour: download to `<dest>.partial`; when it exists, hash its bytes and ask for the rest (`Range`);
a 206 appends, a 200 restarts from zero; sha256 is computed while streaming; X-Linked-Etag/X-Linked-Size
(from the first response, before the CDN redirect) are checked against the expected values; only a file
whose size and sha256 match is renamed into place, with a sidecar `<dest>.sha256` ("sha size mtime_ns")
so that a later run can skip it without rehashing. A mismatched download is deleted, never installed.
"""

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.parse

CHUNK = 4 << 20
PREFIX = "@@edgekit "
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


def sidecar_path(dest):
    return dest + ".sha256"


def write_sidecar(dest, sha256):
    st = os.stat(dest)
    tmp = sidecar_path(dest) + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("%s %d %d\n" % (sha256, st.st_size, st.st_mtime_ns))
    os.replace(tmp, sidecar_path(dest))


def verified_sha256(dest):
    """The sha256 recorded in the sidecar when the file's size and mtime still match it; else None."""
    try:
        with open(sidecar_path(dest)) as fh:
            sha, size, mtime = fh.read().split()[:3]
        st = os.stat(dest)
    except (OSError, ValueError):
        return None
    if st.st_size == int(size) and st.st_mtime_ns == int(mtime) and _HEX64.match(sha):
        return sha
    return None


def hash_file(path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                break
            h.update(block)
    return h


def check(dest, expected_sha256=None):
    """Status of an installed file: {"state": "missing|verified|mismatch", "sha256", "size"}."""
    if not os.path.isfile(dest):
        return {"state": "missing"}
    sha = verified_sha256(dest)
    if sha is None:
        sha = hash_file(dest).hexdigest()
        if not expected_sha256 or sha == expected_sha256:
            write_sidecar(dest, sha)
    size = os.path.getsize(dest)
    if expected_sha256 and sha != expected_sha256:
        return {"state": "mismatch", "sha256": sha, "size": size}
    return {"state": "verified", "sha256": sha, "size": size}


def _etag_sha(value):
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if _HEX64.match(value) else None


def _open(url, headers, timeout, max_redirects=8):
    """GET with manual redirects; returns (response, first_headers). Auth is dropped on a host change."""
    first = None
    origin = urllib.parse.urlsplit(url).netloc
    for _ in range(max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.netloc, timeout=timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        send = dict(headers)
        if parts.netloc != origin:
            send.pop("Authorization", None)
        conn.request("GET", path, headers=send)
        resp = conn.getresponse()
        if first is None:
            first = resp.headers
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location")
            resp.read()
            conn.close()
            if not location:
                raise FetchError("http", "redirect without a Location header from %s" % parts.netloc)
            url = urllib.parse.urljoin(url, location)
            continue
        return resp, first, conn
    raise FetchError("http", "too many redirects")


def fetch(url, dest, expected_sha256=None, expected_size=None, token=None, on_event=None, timeout=30.0,
          user_agent="edgekit"):
    """Download url to dest (see module doc). Returns the "done" event dict; raises FetchError."""
    emit = on_event or (lambda event: None)
    expected_sha256 = (expected_sha256 or "").lower() or None
    partial = dest + ".partial"
    directory = os.path.dirname(dest) or "."
    os.makedirs(directory, exist_ok=True)
    h = hashlib.sha256()
    have = 0
    if os.path.isfile(partial):
        have = os.path.getsize(partial)
        if expected_size and have > expected_size:
            os.unlink(partial)
            have = 0
        elif have:
            hash_file(partial, h)
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    if token:
        headers["Authorization"] = "Bearer " + token
    if have:
        headers["Range"] = "bytes=%d-" % have
    try:
        resp, first, conn = _open(url, headers, timeout)
    except (OSError, http.client.HTTPException) as e:
        raise FetchError("http", "cannot reach %s: %s" % (urllib.parse.urlsplit(url).netloc, e))
    try:
        remote_sha = _etag_sha(first.get("X-Linked-Etag")) if first is not None else None
        linked_size = first.get("X-Linked-Size") if first is not None else None
        remote_size = int(linked_size) if linked_size and linked_size.isdigit() else None
        if expected_sha256 and remote_sha and remote_sha != expected_sha256:
            raise FetchError("etag", "the server says this file has sha256 %s, but %s was expected "
                                     "(the file changed upstream, or the wrong revision/mirror)"
                             % (remote_sha, expected_sha256))
        if expected_size and remote_size and remote_size != expected_size:
            raise FetchError("size", "the server says this file has %d bytes, but %d were expected"
                             % (remote_size, expected_size))
        want_sha = expected_sha256 or remote_sha
        if resp.status == 416 and have:
            # asked for bytes past the end: the partial may be whole already
            m = re.match(r"bytes \*/(\d+)", resp.getheader("Content-Range") or "")
            total = int(m.group(1)) if m else (expected_size or remote_size)
            resp.read()
            if total == have:
                return _finish(partial, dest, h, have, 0, have, want_sha, expected_size or remote_size, emit)
            os.unlink(partial)
            raise FetchError("http", "the server refused the resume range; the partial file was discarded, "
                                     "run again")
        if resp.status == 200:
            if have:
                h = hashlib.sha256()
            resumed_from = 0
            mode = "wb"
            length = resp.getheader("Content-Length")
            total = int(length) if length and length.isdigit() else (remote_size or expected_size)
        elif resp.status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.getheader("Content-Range") or "")
            if not m or int(m.group(1)) != have:
                raise FetchError("http", "the server answered a different range than asked (%s)"
                                 % resp.getheader("Content-Range"))
            resumed_from = have
            mode = "ab"
            total = int(m.group(3)) if m.group(3) != "*" else (remote_size or expected_size)
        elif resp.status in (401, 403):
            raise FetchError("http", "HTTP %d from %s: the repository is gated or private"
                             % (resp.status, urllib.parse.urlsplit(url).netloc))
        else:
            raise FetchError("http", "HTTP %d %s for %s" % (resp.status, resp.reason, _redact(url)))
        emit({"event": "start", "pid": os.getpid(), "resume_from": resumed_from, "total": total,
              "remote_sha256": remote_sha})
        done = resumed_from
        got = 0
        started = last = time.monotonic()
        sink = _Sink(partial, mode, h)
        try:
            with sink:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    sink.put(block)
                    done += len(block)
                    got += len(block)
                    now = time.monotonic()
                    if now - last >= 0.25:
                        last = now
                        rate = got / max(now - started, 1e-6)
                        eta = (total - done) / rate if total and rate else None
                        emit({"event": "progress", "done": done, "total": total, "rate": rate, "eta": eta})
        except (OSError, http.client.HTTPException) as e:
            raise FetchError("io", "download interrupted at %d bytes (%s); run again to resume" % (done, e))
        if sink.error is not None:
            raise FetchError("io", "cannot write %s: %s" % (partial, sink.error))
        if total and done < total:
            raise FetchError("io", "connection closed at %d of %d bytes; run again to resume" % (done, total))
        return _finish(partial, dest, h, done, got, resumed_from, want_sha, expected_size or remote_size, emit)
    finally:
        conn.close()


class _Sink:
    """Hash and write blocks on a second thread (hashlib and file writes release the GIL) while the
    caller keeps reading the socket: the download runs at network speed, not network + hash + disk."""

    def __init__(self, path, mode, h):
        import queue
        import threading

        self.fh = open(path, mode)
        self.h = h
        self.q = queue.Queue(maxsize=8)
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            block = self.q.get()
            if block is None:
                return
            if self.error is None:
                try:
                    self.h.update(block)
                    self.fh.write(block)
                except OSError as e:
                    self.error = e

    def put(self, block):
        self.q.put(block)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.q.put(None)
        self.thread.join()
        self.fh.close()
        return False


def _finish(partial, dest, h, size, got, resumed_from, want_sha, want_size, emit):
    sha = h.hexdigest()
    if want_size and size != want_size:
        os.unlink(partial)
        raise FetchError("size", "downloaded %d bytes but %d were expected; the file was discarded"
                         % (size, want_size))
    if want_sha and sha != want_sha:
        os.unlink(partial)
        raise FetchError("checksum", "sha256 mismatch: got %s, expected %s; the corrupt download was discarded"
                         % (sha, want_sha))
    os.replace(partial, dest)
    write_sidecar(dest, sha)
    event = {"event": "done", "sha256": sha, "size": size, "downloaded": got, "resumed_from": resumed_from,
             "verified_against": "expected" if want_sha else None}
    emit(event)
    return event


def _redact(url):
    return url.split("?", 1)[0]


def adopt(partial, dest, expected_sha256=None, expected_size=None):
    """Verify a pushed `<dest>.partial` and rename it into place; a mismatch deletes it."""
    size = os.path.getsize(partial)
    sha = hash_file(partial).hexdigest()
    if (expected_size and size != expected_size) or (expected_sha256 and sha != expected_sha256):
        os.unlink(partial)
        raise FetchError("checksum", "pushed file has %d bytes and sha256 %s, expected %s bytes and sha256 %s; "
                                     "it was discarded" % (size, sha, expected_size or "?", expected_sha256 or "?"))
    os.replace(partial, dest)
    write_sidecar(dest, sha)
    return {"event": "done", "sha256": sha, "size": size, "downloaded": 0, "resumed_from": 0}


def main(config):
    """Device entry point: config = {"mode": "fetch"|"check"|"adopt", "url", "dest", "sha256", "size", "token"}."""
    def emit(event):
        sys.stdout.write(PREFIX + json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        if config.get("mode") == "check":
            emit({"event": "check", **check(config["dest"], config.get("sha256"))})
        elif config.get("mode") == "adopt":
            emit(adopt(config["dest"] + ".partial", config["dest"], config.get("sha256"), config.get("size")))
        else:
            fetch(config["url"], config["dest"], config.get("sha256"), config.get("size"),
                  config.get("token"), emit)
    except FetchError as e:
        emit({"event": "error", "kind": e.kind, "message": e.message})
        sys.exit(3)
    except OSError as e:
        emit({"event": "error", "kind": "io", "message": str(e)})
        sys.exit(3)


if __name__ == "__main__":
    _config = json.loads(sys.argv[1])
    if "--token-stdin" in sys.argv[2:]:
        _config["token"] = sys.stdin.readline().strip()
    main(_config)
