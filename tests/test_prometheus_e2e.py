"""A real Prometheus (Debian's package, run on the controller with the config `edgekit prometheus` writes) scrapes
the metrics exporter provision installed on a stand-in: a board series, llama-server's own series after a few
requests, and edgekit's build info, read back through Prometheus' HTTP query API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, expr: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())["data"]["result"]


def _ask(served, n: int) -> None:
    for _ in range(n):
        req = urllib.request.Request(served.url + "/v1/chat/completions", data=json.dumps({
            "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}).encode(),
            headers={"Authorization": f"Bearer {served.api_key}", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=120).read()


@pytest.fixture
def prometheus(served_standin, tmp_path):
    binary = shutil.which("prometheus")      # tests/prereqs.py checked it is there
    out = tmp_path / "prom"
    res = served_standin.cli("prometheus", served_standin.target, "--out", str(out), "--interval", "2s")
    assert res.returncode == 0, res.stderr
    port = _free_port()
    proc = subprocess.Popen([binary, f"--config.file={out / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'db'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "prometheus.log", "w"))
    try:
        yield port, out, tmp_path / "prometheus.log"
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_for(port: int, expr: str, timeout: float = 60) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = _query(port, expr)
        except OSError:
            found = []
        if found:
            return found
        time.sleep(1)
    return []


def test_prometheus_scrapes_board_server_and_build_series(served_standin, prometheus):
    port, out, log = prometheus
    targets = json.loads((out / "edgekit-targets.json").read_text())
    assert targets[0]["labels"]["target"] == served_standin.target
    up = _wait_for(port, f'up{{job="edgekit",target="{served_standin.target}"}} == 1')
    assert up, f"Prometheus did not scrape the exporter: {_query(port, 'up')} {log.read_text()[-2000:]}"
    board = _wait_for(port, "edgekit_memory_total_bytes")
    assert board and float(board[0]["value"][1]) > 0 and board[0]["metric"]["source"] == "procfs"
    build = _wait_for(port, "edgekit_build_info")
    assert build and build[0]["metric"]["version"] == "b11312" and build[0]["metric"]["backend"] == "cpu"
    _ask(served_standin, 3)
    predicted = _wait_for(port, 'llamacpp:tokens_predicted_total > 0')
    everything = _query(port, '{job="edgekit"}')
    assert predicted, f"no llama-server series among {sorted({m['metric']['__name__'] for m in everything})}"
    assert predicted[0]["metric"]["model"] == "gemma3-270m"
