"""HTTP requests made ON the device (python3 stdlib), so the server is reachable even when bound to 127.0.0.1.

The request (and the API key) travels on the remote command's stdin, never in its argv.
"""

from __future__ import annotations

import json

from edgekit.errors import RemoteCommandFailed

_SCRIPT = r'''
import json, sys, urllib.request, urllib.error
req = json.load(sys.stdin)
headers = {"Content-Type": "application/json"}
if req.get("key"):
    headers["Authorization"] = "Bearer " + req["key"]
data = json.dumps(req["body"]).encode() if req.get("body") is not None else None
r = urllib.request.Request(req["url"], data=data, headers=headers)
try:
    with urllib.request.urlopen(r, timeout=req.get("timeout", 10)) as resp:
        out = {"status": resp.status, "body": resp.read().decode("utf-8", "replace")}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "body": e.read().decode("utf-8", "replace")}
except Exception as e:
    out = {"status": 0, "body": str(e)}
print(json.dumps(out))
'''


def request(transport, url: str, body: dict | None = None, key: str | None = None, timeout: float = 10) -> tuple[int, str]:
    """(status, body) of one HTTP request made on the device; status 0 when nothing answered."""
    payload = json.dumps({"url": url, "body": body, "key": key, "timeout": timeout})
    res = transport.run(f"python3 -c {_quote(_SCRIPT)}", stdin=payload, check=False, timeout=timeout + 15)
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RemoteCommandFailed("python3 -c <http probe>", res.exit_code, res.stdout + res.stderr,
                                  hint="edgekit needs python3 on the device") from None
    return out["status"], out["body"]


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
