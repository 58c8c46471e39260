"""Download one file over HTTP(S) with resume and sha256 verification (the helper's `fetch`, and the controller's).

Download to `<dest>.partial`; when it exists, hash its bytes and ask for the rest (`Range`): a 206 appends, a 200
restarts from zero; sha256 is computed while streaming; X-Linked-Etag/X-Linked-Size (from the first response,
before the CDN redirect) are checked against the expected values; only a file whose size and sha256 match is
renamed into place, with its sidecar (edgekit.device.files). A mismatched download is deleted, never installed.
Disk space is checked before anything is written (before connecting when the size is known, again once the
server has said it).

Token: `Authorization: Bearer <token>` goes only to the first URL's host and only over https; a redirect to
another host or to plain http drops it for the rest of the chain, and a plain-http URL never gets it
(a "warning" event says so, and a 401/403 then says why).
"""

import hashlib
import http.client
import os
import re
import time
import urllib.parse

from edgekit.device.files import (HEX64, FetchError, WriteFailed, check_space, hash_file, stream, write_failed,
                                  write_sidecar)


def _etag_sha(value):
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if HEX64.match(value) else None


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
        remote_size = int(linked_size) if linked_size and linked_size.isdecimal() else None
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
            total = int(length) if length and length.isdecimal() else (remote_size or expected_size)
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
