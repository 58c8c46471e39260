"""One HTTP request to llama-server on this device; its API key goes to edgekit's own server and nowhere else.

The key is sent only
- to the address given: no redirect is followed (http.client never follows one), so a `302` cannot carry it away;
- over a connection whose other end belongs to the service user: the server's side of this very TCP connection, as
  /proc/net/tcp(6) lists it, must have that user's uid (an accepted socket has its listener's owner), and, when
  systemd answers (`MainPID`), must be a socket of llama-server.service's main process (the exporter runs as the
  service user and can see its descriptors).

A foreign process on the port (llama-server down and someone else listening, or another user's listener) gets no
Authorization header: the answer is status 0 and the reason. The check is made on the connection the key then
travels on, so nothing can take the port between the check and the request. Standard library only (python3 >=
3.8): the exporter and the device helper carry it.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import socket
import subprocess
import sys
import time
import urllib.parse
from typing import Optional, Tuple

MAX_BODY = 4 * 1024 * 1024
UNIT = "llama-server.service"


def _endpoint(text: str) -> Tuple[bytes, int]:
    """'0100007F:1F90' -> (b'\\x7f\\x00\\x00\\x01', 8080): /proc/net/tcp prints each 32-bit word in host order."""
    addr, _, port = text.partition(":")
    raw = b"".join(int(addr[i:i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(addr), 8))
    return raw, int(port, 16)


def far_end(sock: socket.socket, proc: str = "/proc") -> Optional[Tuple[int, str]]:
    """(uid, socket inode) of the other end of a connected TCP socket when that end is on this host (its row in
    /proc/net/tcp or tcp6); None when no row matches (not a local peer)."""
    here, there = sock.getsockname(), sock.getpeername()
    family = sock.family
    want = ((socket.inet_pton(family, there[0]), there[1]), (socket.inet_pton(family, here[0]), here[1]))
    table = f"{proc}/net/tcp6" if family == socket.AF_INET6 else f"{proc}/net/tcp"
    try:
        with open(table) as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        f = row.split()
        try:
            if len(f) >= 10 and (_endpoint(f[1]), _endpoint(f[2])) == want:
                return int(f[7]), f[9]
        except ValueError:
            continue
    return None


def main_pid(unit: str = UNIT) -> Optional[int]:
    """The unit's main PID as systemd says (None when systemctl does not answer, or the unit has none)."""
    try:
        out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit], capture_output=True,
                             text=True, timeout=3).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out) if out.isdecimal() and int(out) > 0 else None


def holds_socket(pid: int, inode: str, proc: str = "/proc") -> Optional[bool]:
    """Whether process `pid` has the socket `inode` open; None when its descriptors cannot be read (another user's)."""
    try:
        fds = os.listdir(f"{proc}/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"{proc}/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


def not_edgekits(sock: socket.socket, owner: str, proc: str = "/proc") -> Optional[str]:
    """Why the other end of `sock` is not edgekit's server (None when it is): see the module doc."""
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        return f"there is no user {owner} on this device"
    found = far_end(sock, proc)
    for _ in range(40):                       # inode 0: the server has not accept()ed yet (wait up to 1 s)
        if found is None or found[1] != "0":
            break
        time.sleep(0.025)
        found = far_end(sock, proc)
    where = "%s port %s" % sock.getpeername()[:2]
    if found is None:
        return f"no process of this device answers on {where}"
    if found[0] != uid:
        return f"the process on {where} runs as uid {found[0]}, not as {owner}"
    pid = main_pid()
    if pid is not None and found[1] != "0" and holds_socket(pid, found[1], proc) is False:
        return f"the process on {where} is not {UNIT}'s main process (pid {pid})"
    return None


def request(url: str, key: Optional[str] = None, body: Optional[dict] = None, timeout: float = 10.0,
            owner: Optional[str] = None) -> Tuple[int, str]:
    """(status, body) of one GET (POST with a JSON body); status 0 and the reason when nothing answered, or when a
    key was given and the server is not edgekit's (`owner`: the service user; a key without one is never sent)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return 0, f"not an http:// URL: {url}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.connect()
        headers = {}
        if key:
            why = not_edgekits(conn.sock, owner) if owner else "no service user named to check the server against"
            if why:
                return 0, f"the API key was not sent: {why}"
            headers["Authorization"] = "Bearer " + key
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        conn.request("POST" if data is not None else "GET", path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(MAX_BODY).decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001 - refused, timed out, a broken answer: the caller sees status 0 and why
        return 0, str(e) or type(e).__name__
    finally:
        conn.close()
