"""Model files on the device's disk: free space, the .partial written while hashing, the sha256 sidecar.

A verified file has a sidecar `<dest>.sha256` ("sha size mtime_ns") so that a later run can skip it without
rehashing. Space: a write must leave MARGIN free; a full disk (ENOSPC/EDQUOT) removes the `.partial` so that the
disk is not left full. Both are FetchError kind "space"; any other write error is kind "write".
"""

import errno
import hashlib
import os
import queue
import re
import threading

CHUNK = 4 << 20          # the reused buffers of stream(): readinto, hash and write without a copy or an allocation
BUFFERS = 3
MARGIN = 64 << 20        # left free after a download, so that logs and the system keep working
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class FetchError(Exception):
    """A download or a file check failed: kind (checksum|size|http|io|etag|space|write) and a message."""

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
    if st.st_size == int(size) and st.st_mtime_ns == int(mtime) and HEX64.match(sha):
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


def check(dest, expected_sha256=None, record=True):
    """Status of an installed file: {"state": "missing|verified|mismatch", "sha256", "size"}. A sha256 computed
    here is recorded in the sidecar (next time is quick) unless `record` is false (a dry run writes nothing)."""
    if not os.path.isfile(dest):
        return {"state": "missing"}
    sha = verified_sha256(dest)
    if sha is None:
        sha = hash_file(dest).hexdigest()
        if record and (not expected_sha256 or sha == expected_sha256):
            write_sidecar(dest, sha)
    size = os.path.getsize(dest)
    if expected_sha256 and sha != expected_sha256:
        return {"state": "mismatch", "sha256": sha, "size": size}
    return {"state": "verified", "sha256": sha, "size": size}


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
