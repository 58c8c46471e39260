"""Fetch one file over HTTP(S) with resume and sha256 verification. Python 3 standard library only.

The same code runs on the controller (edgekit.models.download imports it) and on the device, where it is
uploaded to /tmp and run as `python3 device_fetch.py '<config json>' [--token-stdin]`: the config in argv
holds no secret; HF_TOKEN arrives on stdin only, so it never appears in a command line or an environment.
On the device it prints one JSON line per event, prefixed with "@@edgekit ", which the controller parses:
  {"event": "start", "pid": 123, "resume_from": 0, "total": 253113024, "remote_sha256": "..."}
  {"event": "progress", "done": 1048576, "total": 253113024, "rate": 1.2e8, "eta": 2.0}
  {"event": "done", "sha256": "...", "size": 253113024, "downloaded": 253113024, "resumed_from": 0}
  {"event": "warning", "message": "HF_TOKEN was not sent to http://mirror:8080: ..."}
  {"event": "error", "kind": "checksum|size|http|io|etag|space|write", "message": "..."}
  {"event": "space", "free": 9876543210, "need": 320221888}       (mode "space": would a file of that size fit?)

Behaviour: download to `<dest>.partial`; when it exists, hash its bytes and ask for the rest (`Range`);
a 206 appends, a 200 restarts from zero; sha256 is computed while streaming; X-Linked-Etag/X-Linked-Size
(from the first response, before the CDN redirect) are checked against the expected values; only a file
whose size and sha256 match is renamed into place, with a sidecar `<dest>.sha256` ("sha size mtime_ns")
so that a later run can skip it without rehashing. A mismatched download is deleted, never installed.

Disk: before anything is written the filesystem must have the bytes still to come plus MARGIN free (checked
before connecting when the size is known, again once the server has said it); the first failed write stops
the download, and a full disk (ENOSPC/EDQUOT) removes the `.partial` so that the disk is not left full.
Either is error kind "space", whose message says how much is needed and how much is free where; any other
write error is kind "write" (the partial stays for the next run to resume).

Token: `Authorization: Bearer <token>` goes only to the first URL's host and only over https; a redirect to
another host or to plain http drops it for the rest of the chain, and a plain-http URL never gets it
(a "warning" event says so, and a 401/403 then says why).
"""

import errno
import hashlib
import http.client
import json
import os
import queue
import re
import sys
import threading
import time
import urllib.parse

CHUNK = 4 << 20          # the reused buffers of stream(): readinto, hash and write without a copy or an allocation
BUFFERS = 3
MARGIN = 64 << 20        # left free after a download, so that logs and the system keep working
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
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h


def human(n):
    """Bytes as MiB or GiB, for messages."""
    return "%.2f GiB" % (n / 2.0 ** 30) if n >= 2 ** 30 else "%.1f MiB" % (n / 2.0 ** 20)


def free_space(path):
    """Bytes an unprivileged writer may still use in the filesystem of path (or of its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def check_space(dest, to_write, reclaim=0):
    """Raise FetchError("space") unless dest's filesystem has to_write + MARGIN bytes free; returns the free bytes.

    reclaim: bytes of an old .partial that the download truncates (they count as free).
    """
    directory = os.path.dirname(os.path.abspath(dest))
    free = free_space(directory) + reclaim
    need = to_write + MARGIN
    if free < need:
        raise FetchError("space", "not enough disk space for %s: need %s (%s to write + %s margin), free %s at %s"
                         % (os.path.basename(dest), human(need), human(to_write), human(MARGIN), human(free),
                            directory))
    return free


class _PartialFile:
    """The .partial file, written with os.write until each block is whole: the first error raises."""

    def __init__(self, path, append):
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self.fd = os.open(path, flags, 0o666)

    def write(self, view):
        while len(view):
            view = view[os.write(self.fd, view):]

    def close(self):
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


class WriteFailed(Exception):
    """stream() could not write: error is the OSError, written the bytes that reached the file before it."""

    def __init__(self, error, written):
        super().__init__(str(error))
        self.error = error
        self.written = written


def stream(readinto, partial, append, h, on_read=None):
    """Copy readinto(buffer) -> n (0 at the end) into partial, hashing into h; returns the bytes written.

    This thread reads into BUFFERS reused buffers while a second one hashes and writes them (recv, hashlib and
    os.write release the GIL): no allocation per block, and the next read overlaps the hash. The first failed
    write stops the reading too (WriteFailed); a read error propagates as it is, after the blocks already read
    were written.
    """
    try:
        out = _PartialFile(partial, append)
    except OSError as e:
        raise WriteFailed(e, 0)
    free, full = queue.Queue(), queue.Queue()
    for _ in range(BUFFERS):
        free.put(bytearray(CHUNK))
    state = {"written": 0, "error": None}

    def work():
        while True:
            item = full.get()
            if item is None:
                return
            buf, n = item
            if state["error"] is None:
                view = memoryview(buf)[:n]
                try:
                    h.update(view)
                    out.write(view)
                    state["written"] += n
                except Exception as e:     # noqa: BLE001 - any failure stops the reader, which reports it
                    state["error"] = e
                view.release()
            free.put(buf)

    worker = threading.Thread(target=work, name="edgekit-hash-write")
    worker.daemon = True
    worker.start()
    try:
        while True:
            buf = free.get()
            if state["error"] is not None:
                break
            n = readinto(buf)
            if not n:
                break
            full.put((buf, n))
            if on_read:
                on_read(n)
    finally:
        full.put(None)
        worker.join()
        out.close()
    if state["error"] is not None:
        raise WriteFailed(state["error"], state["written"])
    return state["written"]


def write_failed(e, partial, dest, written, total):
    """The FetchError for a failed write of partial. A full disk removes the partial: it would keep it full."""
    if getattr(e, "errno", None) not in (errno.ENOSPC, errno.EDQUOT):
        return FetchError("write", "cannot write %s: %s; stopped at %d bytes"
                          % (partial, getattr(e, "strerror", None) or e, written))
    try:
        os.unlink(partial)
    except OSError:
        pass
    directory = os.path.dirname(os.path.abspath(dest))
    free = free_space(directory)
    need = ("need %s (%s file + %s margin)" % (human(total + MARGIN), human(total), human(MARGIN)) if total
            else "need more than %s (the server did not say the size)" % human(written + MARGIN))
    return FetchError("space", "the disk filled up after %s of %s: %s, free %s at %s; the partial download "
                               "was removed" % (human(written), os.path.basename(dest), need, human(free),
                                                directory))


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


def _open(url, headers, timeout, token=None, max_redirects=8):
    """GET with manual redirects; returns (response, first_headers, connection, withheld).

    The token is sent as `Authorization: Bearer` to the first URL's host over https only; once a hop goes to
    another host or to plain http it is dropped for the rest of the chain. withheld: the plain-http
    scheme://host the token was kept from (None when it was not), so that the caller can say so.
    """
    first = None
    origin = urllib.parse.urlsplit(url).netloc.lower()
    withheld = None
    for _ in range(max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parts.netloc, timeout=timeout)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        send = dict(headers)
        if token and parts.scheme != "https":
            withheld = "%s://%s" % (parts.scheme, parts.netloc)
            token = None
        elif token and parts.netloc.lower() != origin:
            token = None
        if token:
            send["Authorization"] = "Bearer " + token
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
        return resp, first, conn, withheld
    raise FetchError("http", "too many redirects")


def fetch(url, dest, expected_sha256=None, expected_size=None, token=None, on_event=None, timeout=30.0,
          user_agent="edgekit"):
    """Download url to dest (see module doc). Returns the "done" event dict; raises FetchError."""
    emit = on_event or (lambda event: None)
    expected_sha256 = (expected_sha256 or "").lower() or None
    partial = dest + ".partial"
    have = os.path.getsize(partial) if os.path.isfile(partial) else 0
    if expected_size:
        # check, then change: nothing is written, not even the directory, when the file cannot fit
        kept = have if have <= expected_size else 0          # a partial longer than the file is dropped
        check_space(dest, expected_size - kept, reclaim=have - kept)
    directory = os.path.dirname(dest) or "."
    os.makedirs(directory, exist_ok=True)
    h = hashlib.sha256()
    if have:
        if expected_size and have > expected_size:
            os.unlink(partial)
            have = 0
        else:
            hash_file(partial, h)
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = "bytes=%d-" % have
    try:
        resp, first, conn, withheld = _open(url, headers, timeout, token)
    except (OSError, http.client.HTTPException) as e:
        raise FetchError("http", "cannot reach %s: %s" % (urllib.parse.urlsplit(url).netloc, e))
    if withheld:
        emit({"event": "warning", "message": "HF_TOKEN was not sent to %s: plain http is not encrypted "
                                             "(use an https:// endpoint to send it)" % withheld})
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
            if withheld:
                raise FetchError("http", "HTTP %d from %s, and HF_TOKEN was not sent: %s is plain http, "
                                         "not encrypted" % (resp.status, urllib.parse.urlsplit(url).netloc,
                                                            withheld))
            raise FetchError("http", "HTTP %d from %s: the repository is gated or private"
                             % (resp.status, urllib.parse.urlsplit(url).netloc))
        else:
            raise FetchError("http", "HTTP %d %s for %s" % (resp.status, resp.reason, _redact(url)))
        if total:
            check_space(dest, total - resumed_from, reclaim=have if mode == "wb" else 0)
        emit({"event": "start", "pid": os.getpid(), "resume_from": resumed_from, "total": total,
              "remote_sha256": remote_sha})
        count = {"done": resumed_from, "got": 0, "last": time.monotonic()}
        started = count["last"]

        def on_read(n):
            count["done"] += n
            count["got"] += n
            now = time.monotonic()
            if now - count["last"] >= 0.25:
                count["last"] = now
                rate = count["got"] / max(now - started, 1e-6)
                eta = (total - count["done"]) / rate if total and rate else None
                emit({"event": "progress", "done": count["done"], "total": total, "rate": rate, "eta": eta})

        try:
            got = stream(resp.readinto, partial, mode == "ab", h, on_read)
        except WriteFailed as e:
            raise write_failed(e.error, partial, dest, resumed_from + e.written, total)
        except (OSError, http.client.HTTPException) as e:
            raise FetchError("io", "download interrupted at %d bytes (%s); run again to resume" % (count["done"], e))
        done = resumed_from + got
        if total and done < total:
            raise FetchError("io", "connection closed at %d of %d bytes; run again to resume" % (done, total))
        return _finish(partial, dest, h, done, got, resumed_from, want_sha, expected_size or remote_size, emit)
    finally:
        conn.close()


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
    """Device entry point: config = {"mode": "fetch|check|adopt|space", "url", "dest", "sha256", "size", "token"}."""
    def emit(event):
        sys.stdout.write(PREFIX + json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        if config.get("mode") == "check":
            emit({"event": "check", **check(config["dest"], config.get("sha256"))})
        elif config.get("mode") == "space":
            # before a push (`<dest>.partial` from the controller): the whole file plus MARGIN must fit
            partial = config["dest"] + ".partial"
            have = os.path.getsize(partial) if os.path.isfile(partial) else 0
            free = check_space(config["dest"], int(config["size"]), reclaim=have)
            emit({"event": "space", "free": free, "need": int(config["size"]) + MARGIN})
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
