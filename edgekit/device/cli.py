"""The helper's command line: `python3 helper.pyz SUBCOMMAND ARGS...`, answering in event lines (events.py).

  fetch CONFIG [--token-stdin]  CONFIG: JSON {"mode": "fetch|check|adopt|space", "url", "dest", "sha256", "size",
                                "record"} (no secret; "record": false: a check writes no sidecar, a dry run's);
                                with --token-stdin, HF_TOKEN is the first line of stdin. Events:
      {"event": "start", "pid", "resume_from", "total", "remote_sha256"}
      {"event": "progress", "done", "total", "rate", "eta"}
      {"event": "warning", "message"}
      {"event": "done", "sha256", "size", "downloaded", "resumed_from"}          (modes fetch and adopt)
      {"event": "check", "state": "missing|verified|mismatch", "sha256", "size"}  (mode check)
      {"event": "space", "free", "need"}            (mode space: would `size` bytes at dest fit, before a push?)
  gguf FILE                     {"event": "gguf", <GGUFHeader fields>} or {"event": "missing", "path"}
  http                          stdin: JSON {"url", "body", "key", "timeout"} -> {"event": "http", "status", "body"}
  tcp HOST PORT [TIMEOUT]       {"event": "tcp", "reachable": true|false, "error"}
  telemetry [ARGS]              the collector (edgekit.telemetry.collector): JSON lines without the prefix

A failure is {"event": "error", "kind", "message"} with exit 3; a wrong command line exits 2.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

from edgekit.device.events import emit


def fetch(args: List[str]) -> int:
    from edgekit.device.fetch import fetch as download
    from edgekit.device.files import MARGIN, FetchError, adopt, check, check_space

    if not args or any(a != "--token-stdin" for a in args[1:]):
        return _usage("fetch CONFIG_JSON [--token-stdin]")
    config = json.loads(args[0])
    token = sys.stdin.readline().strip() if "--token-stdin" in args[1:] else None
    mode, dest = config.get("mode", "fetch"), config["dest"]
    try:
        if mode == "check":
            emit({"event": "check", **check(dest, config.get("sha256"), config.get("record", True))})
        elif mode == "space":
            # before a push (`<dest>.partial` from the controller): the whole file plus MARGIN must fit
            partial = dest + ".partial"
            have = os.path.getsize(partial) if os.path.isfile(partial) else 0
            free = check_space(dest, int(config["size"]), reclaim=have)
            emit({"event": "space", "free": free, "need": int(config["size"]) + MARGIN})
        elif mode == "adopt":
            emit(adopt(dest + ".partial", dest, config.get("sha256"), config.get("size")))
        elif mode == "fetch":
            download(config["url"], dest, config.get("sha256"), config.get("size"), token, emit)
        else:
            return _usage("fetch: mode is fetch, check, adopt or space, not %r" % mode)
    except FetchError as e:
        emit({"event": "error", "kind": e.kind, "message": e.message})
        return 3
    except OSError as e:
        emit({"event": "error", "kind": "io", "message": str(e)})
        return 3
    return 0


def gguf(args: List[str]) -> int:
    from edgekit.models.gguf_header import device_report

    if len(args) != 1:
        return _usage("gguf FILE")
    event, code = device_report(args[0])
    emit(event)
    return code


def http(args: List[str]) -> int:
    from edgekit.device.net import http_request

    if args:
        return _usage("http  (the request is JSON on stdin)")
    req = json.load(sys.stdin)
    emit({"event": "http", **http_request(req["url"], req.get("body"), req.get("key"), req.get("timeout", 10),
                                          req.get("owner"))})
    return 0


def tcp(args: List[str]) -> int:
    from edgekit.device.net import tcp_connect

    if len(args) not in (2, 3) or not args[1].isdecimal():
        return _usage("tcp HOST PORT [TIMEOUT]")
    error = tcp_connect(args[0], int(args[1]), float(args[2]) if len(args) == 3 else 5)
    emit({"event": "tcp", "reachable": error is None, "error": error})
    return 0


def telemetry(args: List[str]) -> int:
    from edgekit.telemetry.collector import main as collect

    return collect(args)


COMMANDS = {"fetch": fetch, "gguf": gguf, "http": http, "tcp": tcp, "telemetry": telemetry}


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        return _usage("{%s} ARGS..." % ",".join(COMMANDS))
    return COMMANDS[argv[0]](argv[1:])


def _usage(text: str) -> int:
    sys.stderr.write("usage: python3 helper.pyz %s\n" % text)
    return 2
