"""Network checks made from the device: one HTTP request, one TCP connect."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Optional


def http_request(url: str, body: Optional[dict] = None, key: Optional[str] = None, timeout: float = 10) -> dict:
    """{"status", "body"} of one request (POST with a JSON body when body is given); status 0 when none answered."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = "Bearer " + key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return {"status": resp.status, "body": resp.read().decode("utf-8", "replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode("utf-8", "replace")}
    except Exception as e:  # noqa: BLE001 - refused, timed out, bad URL: the caller sees status 0 and why
        return {"status": 0, "body": str(e)}


def tcp_connect(host: str, port: int, timeout: float = 5) -> Optional[str]:
    """None when a TCP connection to host:port opens within timeout seconds, else why it did not."""
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError as e:
        return str(e) or type(e).__name__
    return None
