"""Network checks made from the device: one HTTP request, one TCP connect."""

from __future__ import annotations

import socket
from typing import Optional

from edgekit.localhttp import request


def http_request(url: str, body: Optional[dict] = None, key: Optional[str] = None, timeout: float = 10,
                 owner: Optional[str] = None) -> dict:
    """{"status", "body"} of one request (POST with a JSON body when body is given); status 0 when none answered,
    or when a key was given and the server is not `owner`'s (edgekit.localhttp: the key reaches edgekit's server
    only)."""
    status, text = request(url, key, body, timeout, owner)
    return {"status": status, "body": text}


def tcp_connect(host: str, port: int, timeout: float = 5) -> Optional[str]:
    """None when a TCP connection to host:port opens within timeout seconds, else why it did not."""
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError as e:
        return str(e) or type(e).__name__
    return None
