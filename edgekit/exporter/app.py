"""The exporter's HTTP server and command line: GET /metrics with a bearer token, or on loopback only.

    python3 edgekit-exporter.pyz --host 0.0.0.0 --port 9838 --token-file /etc/edgekit/exporter-token
    python3 -m edgekit.exporter --host 127.0.0.1 --no-token --source procfs --once     (one scrape to stdout)

Authentication is llama-server's rule: a bearer token (read once from a file that only its owner may read,
compared in constant time; anything else gets 401 and no data), or no token only when bound to loopback - a
non-loopback --host without --token-file is refused at start. Requests are not logged (a scrape every 5 s would
fill the journal); failures of the board source are.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import os
import queue
import selectors
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Dict, List, Optional, Tuple

from edgekit import layout as L
from edgekit.exporter.board import Sampler, add_board
from edgekit.exporter.facts import add_facts, parse_env, read_text
from edgekit.exporter.llama import add_server, get, server_url
from edgekit.exporter.textformat import CONTENT_TYPE, Exposition

DEFAULT_PORT = 9838
MIN_TOKEN_CHARS = 16


class Refused(Exception):
    """A start the exporter refuses (no token off loopback, a token file others can read); exit 2."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The bearer token from a file only its owner may read (like ssh's private keys)."""
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            token = fh.read().strip()
    except OSError as e:
        raise Refused(f"cannot read the token file {path}: {e.strerror or e}") from None
    if st.st_mode & 0o077:
        raise Refused(f"{path} can be read by others (mode {oct(st.st_mode & 0o777)}): chmod 0600 {path}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise Refused(f"the token in {path} must be one word of at least {MIN_TOKEN_CHARS} characters")
    return token


def check_bind(host: str, token: Optional[str]) -> None:
    if token is None and not is_loopback(host):
        raise Refused(f"refusing to serve metrics on {host} without a token: give --token-file PATH, "
                      "or bind to loopback (--host 127.0.0.1)")


class Exporter:
    """One scrape: the board's latest sample, edgekit's facts, then llama-server's metrics, as text."""

    def __init__(self, sampler: Sampler, env_file: str = L.ENV_PATH,
                 stamp_file: str = f"{L.CURRENT}/{L.STAMP_NAME}", healthy_file: str = L.HEALTHY,
                 url: Optional[str] = None, key_file: Optional[str] = None, timeout: float = 2.5, fetch=get):
        self.sampler, self.env_file, self.stamp_file, self.healthy_file = sampler, env_file, stamp_file, healthy_file
        self.url, self.key_file, self.timeout, self.fetch = url, key_file, timeout, fetch

    def scrape(self) -> str:
        started = time.perf_counter()
        exp = Exposition()
        add_board(exp, self.sampler.latest, self.sampler.restarts)
        env = parse_env(read_text(self.env_file))
        try:
            mtime: Optional[float] = os.stat(self.healthy_file).st_mtime
        except OSError:
            mtime = None
        model = add_facts(exp, env, read_text(self.stamp_file), read_text(self.healthy_file), mtime)
        key_file = self.key_file or env.get("LLAMA_ARG_API_KEY_FILE", "").strip()
        key = ((read_text(key_file) or "").strip() or None) if key_file else None   # stays on the device
        add_server(exp, self.url or server_url(env), key, model, self.timeout, self.fetch)
        exp.gauge("edgekit_exporter_scrape_duration_seconds", "Time this scrape took to collect.") \
            .add(time.perf_counter() - started)
        return exp.render()


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgekit-exporter"
    sys_version = ""
    protocol_version = "HTTP/1.0"                  # one request per connection: a worker never waits on keep-alive

    def version_string(self) -> str:
        return self.server_version

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        token = self.server.token                  # type: ignore[attr-defined]
        if token is None:
            return True
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    def do_GET(self) -> None:
        if not self._authorized():
            self._send(401, b"a bearer token is required\n", WWW_Authenticate='Bearer realm="edgekit-exporter"')
            return
        if urllib.parse.urlsplit(self.path).path != "/metrics":
            self._send(404, b"see /metrics\n")
            return
        try:
            body = self.server.exporter.scrape().encode()       # type: ignore[attr-defined]
        except Exception as e:  # noqa: BLE001 - one failed scrape is a 500 for Prometheus to record, not a crash
            sys.stderr.write(f"edgekit-exporter: scrape failed: {type(e).__name__}: {e}\n")
            self._send(500, b"scrape failed; see the exporter's journal\n")
            return
        self._send(200, body, CONTENT_TYPE)

    do_HEAD = do_GET

    def log_message(self, format: str, *args) -> None:     # noqa: A002 - the base class's name
        pass


class MetricsServer(HTTPServer):
    """A bounded server: WORKERS threads made at start (never one per connection: under the unit's TasksMax a
    thread that cannot be made would fail scrapes), and connections that wait for their request in one selector,
    costing no thread. A connection gets a worker only when its request has arrived, then CONNECTION_TIMEOUT s to
    be read and answered, one request each (HTTP/1.0: closed after the answer). At most MAX_OPEN connections are
    kept: past that the one idle the longest is dropped, or the new one refused when none is idle, each with one
    line in the journal; one that sends nothing for IDLE_TIMEOUT s is closed."""

    WORKERS = 4
    MAX_OPEN = 128
    IDLE_TIMEOUT = 10.0
    CONNECTION_TIMEOUT = 5.0
    request_queue_size = 64                         # the listen backlog (socketserver's default is 5)

    def __init__(self, host: str, port: int, exporter: Exporter, token: Optional[str], log=None):
        check_bind(host, token)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.exporter, self.token = exporter, token
        self.log = log or (lambda line: sys.stderr.write(line + "\n"))
        super().__init__((host.strip("[]"), port), _Handler)
        self._work: "queue.Queue" = queue.Queue()
        self._idle: Dict[socket.socket, Tuple[object, float]] = {}   # waiting for their request (oldest first)
        self._busy = 0                                              # queued for or held by a worker
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()            # a worker hands a finished slot back
        self._workers = [threading.Thread(target=self._worker, name=f"exporter-{i}", daemon=True)
                         for i in range(self.WORKERS)]
        for worker in self._workers:
            worker.start()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        sel = selectors.DefaultSelector()
        sel.register(self.socket, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=min(poll_interval, 1.0)):
                    if key.data == "listen":
                        self._accept(sel)
                    elif key.data == "wake":
                        self._wake_r.recv(4096)
                    else:                                           # a request has arrived: to a worker
                        sel.unregister(key.fileobj)
                        addr, _ = self._idle.pop(key.fileobj)
                        with self._lock:
                            self._busy += 1
                        self._work.put((key.fileobj, addr))
                now = time.monotonic()
                for conn, (addr, since) in list(self._idle.items()):
                    if now - since > self.IDLE_TIMEOUT:
                        self._close(sel, conn)
        finally:
            for conn in list(self._idle):
                self._close(sel, conn)
            sel.close()
            self._stopped.set()

    def _accept(self, sel) -> None:
        try:
            conn, addr = self.socket.accept()
        except OSError:
            return
        with self._lock:
            busy = self._busy
        if busy + len(self._idle) >= self.MAX_OPEN:
            if self._idle:
                oldest = next(iter(self._idle))
                self.log(f"edgekit-exporter: dropped an idle connection from {_peer(self._idle[oldest][0])}: "
                         f"{self.MAX_OPEN} connections open, the most it keeps")
                self._close(sel, oldest)
            else:
                self.log(f"edgekit-exporter: refused a connection from {_peer(addr)}: {self.MAX_OPEN} requests "
                         "in progress, the most it serves at once")
                conn.close()
                return
        conn.setblocking(False)
        self._idle[conn] = (addr, time.monotonic())
        sel.register(conn, selectors.EVENT_READ, "conn")

    def _close(self, sel, conn: socket.socket) -> None:
        self._idle.pop(conn, None)
        try:
            sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _worker(self) -> None:
        while True:
            conn, addr = self._work.get()
            if conn is None:
                return
            try:
                conn.setblocking(True)
                conn.settimeout(self.CONNECTION_TIMEOUT)
                self.finish_request(conn, addr)
            except Exception as e:  # noqa: BLE001 - a broken or slow client: one line, never a traceback
                self.log(f"edgekit-exporter: a connection from {_peer(addr)} failed: {type(e).__name__}: {e}")
            finally:
                self.shutdown_request(conn)
                with self._lock:
                    self._busy -= 1
                try:
                    self._wake_w.send(b".")
                except OSError:
                    pass

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            self._work.put((None, None))
        self._wake_r.close()
        self._wake_w.close()


def _peer(addr) -> str:
    try:
        host, port = addr[0], addr[1]
    except (TypeError, IndexError):
        return "?"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def main(argv: Optional[List[str]] = None) -> int:
    """Serve the board, llama-server's metrics and edgekit's facts on /metrics, for Prometheus."""
    ap = argparse.ArgumentParser(prog="edgekit-exporter", description=main.__doc__)
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=DEFAULT_PORT)
    ap.add_argument("--token-file", help="bearer token file (0600); required unless --host is loopback")
    ap.add_argument("--no-token", action="store_true", help="serve without a token (loopback --host only)")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between board samples (default 5)")
    ap.add_argument("--source", choices=["jtop", "tegrastats", "procfs"], help="use this board source or a worse one")
    ap.add_argument("--env-file", default=L.ENV_PATH, help="llama-server's env file (port, host, key file, model)")
    ap.add_argument("--stamp", default=f"{L.CURRENT}/{L.STAMP_NAME}", help="the running build's stamp")
    ap.add_argument("--healthy", default=L.HEALTHY, help="the last healthy record")
    ap.add_argument("--server-url", help="llama-server's base URL (default: from the env file, on loopback)")
    ap.add_argument("--server-key-file", help="llama-server's API key file (default: the env file's)")
    ap.add_argument("--timeout", type=float, default=2.5,
                    help="seconds to wait for llama-server in one scrape, all its answers together (default 2.5)")
    ap.add_argument("--once", action="store_true", help="print one scrape to stdout and exit")
    args = ap.parse_args(argv)
    sampler = Sampler(args.interval, args.source)
    exporter = Exporter(sampler, args.env_file, args.stamp, args.healthy, args.server_url, args.server_key_file,
                        args.timeout)
    try:
        if args.token_file and args.no_token:
            raise Refused("give --token-file or --no-token, not both")
        if not args.token_file and not args.no_token:
            raise Refused("give --token-file PATH (or --no-token with a loopback --host)")
        token = read_token(args.token_file) if args.token_file else None
        if args.once:
            check_bind(args.host, token)
            sampler.start()
            deadline = time.monotonic() + 2 * args.interval + 2
            while sampler.latest is None and time.monotonic() < deadline:
                time.sleep(0.05)
            sys.stdout.write(exporter.scrape())
            return 0
        server = MetricsServer(args.host, args.port, exporter, token)
    except Refused as e:
        sys.stderr.write(f"edgekit-exporter: {e}\n")
        return 2
    except OSError as e:
        sys.stderr.write(f"edgekit-exporter: cannot listen on {args.host}:{args.port}: {e.strerror or e}\n")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sampler.start()
    where = f"[{args.host}]" if ":" in args.host and not args.host.startswith("[") else args.host
    sys.stderr.write(f"edgekit-exporter: serving http://{where}:{args.port}/metrics "
                     f"({'bearer token required' if token else 'no token, loopback only'})\n")
    try:
        server.serve_forever(poll_interval=1.0)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        sampler.stop()
        server.server_close()
    return 0
