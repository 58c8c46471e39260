"""The exporter under the thread limit its unit sets (TasksMax=32), where that limit really bites.

The stand-ins enforce no cgroup limits (their cgroup.controllers is empty: TasksMax is not applied there), so this
test enforces it itself: it makes a pids cgroup on this host (cgroup v1's pids controller, or a v2 cgroup with pids
enabled) with pids.max = the unit's TasksMax, starts the exporter inside it, opens 200 idle connections and keeps
scraping. The exporter makes its worker threads at start and parks idle connections in a selector, so it stays
within the limit (threads counted in the cgroup) and every scrape answers; the connections it drops past MAX_OPEN
are one journal line each, never a traceback. (A thread per connection, as before, fails here: the 33rd thread
cannot be made.) Needs root; no stand-in.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from edgekit.exporter.app import MetricsServer

pytestmark = pytest.mark.e2e

TEMPLATE = Path(__file__).resolve().parents[1] / "edgekit" / "templates" / "edgekit-exporter.service.j2"
TASKS_MAX = int(re.search(r"^TasksMax=(\d+)$", TEMPLATE.read_text(), re.M).group(1))


def _pids_cgroup() -> Path:
    """A fresh pids cgroup this test may put a process in (v1 first, then v2), or skip saying why."""
    name = f"edgekit-test-{uuid.uuid4().hex[:8]}"
    candidates = [Path("/sys/fs/cgroup/pids")]
    v2 = Path("/sys/fs/cgroup")
    if "pids" in (v2 / "cgroup.subtree_control").read_text().split() if (v2 / "cgroup.subtree_control").exists() \
            else False:
        candidates.append(v2)
    for root in candidates:
        if (root / "cgroup.procs").exists():
            try:
                (root / name).mkdir()
            except OSError:
                continue
            if (root / name / "pids.max").exists():
                return root / name
            (root / name).rmdir()
    pytest.skip("no pids cgroup can be made on this host (needs root and a pids controller)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False


def _has_board(port: int) -> bool:
    try:
        return _scrape(port) == 200
    except (OSError, AssertionError):
        return False


def _scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        body = resp.read().decode()
    assert "edgekit_memory_total_bytes" in body
    return resp.status


def test_200_idle_connections_under_the_units_thread_limit_do_not_stop_scrapes(tmp_path):
    cgroup = _pids_cgroup()
    (cgroup / "pids.max").write_text(str(TASKS_MAX))
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    log = tmp_path / "exporter.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekit.exporter", "--host", "127.0.0.1", "--port", str(port), "--no-token",
         "--source", "procfs", "--interval", "1", "--env-file", str(tmp_path / "none.env")],
        stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env,
        preexec_fn=lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid())))
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while "serving" not in log.read_text() or not _has_board(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for _ in range(200):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        assert _scrape(port) == 200                                   # 201 connections: 73 past MAX_OPEN
        time.sleep(0.5)
        closed = sum(1 for s in idle if _closed_by_peer(s))
        dropped = [line for line in log.read_text().splitlines() if "dropped an idle connection" in line]
        assert closed == len(dropped) == 200 + 1 - MetricsServer.MAX_OPEN     # one journal line per dropped one
        statuses = []
        for _ in range(10):
            statuses.append(_scrape(port))
            tasks = int((cgroup / "pids.current").read_text())
            assert tasks <= TASKS_MAX
            time.sleep(0.2)
        assert statuses == [200] * 10
        threads = len(os.listdir(f"/proc/{proc.pid}/task"))
        assert threads <= MetricsServer.WORKERS + 4, threads        # workers, the sampler, the main loop
        events = (cgroup / "pids.events").read_text() if (cgroup / "pids.events").exists() else "max 0"
        assert events.split()[-1] == "0", events                      # no thread or fork was ever refused
        text = log.read_text()
        assert all("dropped an idle connection" in line or "serving" in line for line in text.splitlines()), text
        assert "Traceback" not in text
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(10)
        for _ in range(50):
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.1)
