"""Issue 23 on a served stand-in: the secrets' modes on the device, the API key never sent to a foreign listener on
the server's port, 200 idle connections to the exporter while a real Prometheus keeps scraping, and `edgekit key
rotate` (old key 401, new key 200, Prometheus still scraping with the new token)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from edgekit import layout as L
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from edgekit.service import probe
from tests.test_prometheus_e2e import _query, _wait_for, prometheus  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e

LISTENER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(sys.argv[2], "a") as log:
            log.write(f"{self.command} {self.path} authorization={self.headers.get('Authorization')}\n")
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    do_POST = do_GET
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", int(sys.argv[1])), H).serve_forever()
"""


def _get(url: str, key: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_key_and_the_token_are_the_service_users_alone(served_standin):
    with Transport(parse_target(served_standin.target)) as t:
        modes = t.sudo(f"stat -c '%a %U:%G %n' {L.API_KEY_PATH} {L.EXPORTER_TOKEN}").stdout.splitlines()
    assert modes == [f"600 edgekit:edgekit {L.API_KEY_PATH}", f"600 edgekit:edgekit {L.EXPORTER_TOKEN}"]


def test_a_foreign_listener_on_the_servers_port_gets_no_key(served_standin):
    """llama-server is stopped and another user's process takes port 8080, recording every request: neither the
    exporter (a scrape) nor the device-side probe (a keyed request) sends it an Authorization header."""
    log = "/tmp/edgekit-foreign-requests.log"
    with Transport(parse_target(served_standin.target)) as t:
        t.sudo(f"systemctl stop {L.UNIT_NAME}; rm -f {log}; touch {log}; chmod 666 {log}")
        t.put_text(LISTENER, "/tmp/edgekit-foreign.py", mode="0644")
        pid = t.sudo(f"nohup setpriv --reuid=nobody --regid=nogroup --clear-groups python3 /tmp/edgekit-foreign.py "
                     f"8080 {log} > /dev/null 2>&1 & echo $!").stdout.strip()
        try:
            deadline = time.monotonic() + 20
            while probe.request(t, "http://127.0.0.1:8080/health", timeout=3)[0] != 200:
                assert time.monotonic() < deadline, "the foreign listener did not start"
                time.sleep(0.5)
            scrape = t.sudo(f"curl -s -H \"Authorization: Bearer $(cat {L.EXPORTER_TOKEN})\" "
                            "http://127.0.0.1:9838/metrics").stdout
            assert "edgekit_llama_server_up 1" in scrape          # /health (no key) reached the listener
            status, body = probe.request(t, "http://127.0.0.1:8080/v1/models", key=served_standin.api_key, timeout=5)
            assert status == 0 and "the API key was not sent" in body and "not as edgekit" in body, body
            seen = t.sudo(f"cat {log}").stdout.splitlines()
        finally:
            t.sudo(f"kill {pid}; rm -f /tmp/edgekit-foreign.py {log}; systemctl start {L.UNIT_NAME}", check=False)
            deadline = time.monotonic() + 300
            while probe.request(t, "http://127.0.0.1:8080/health", timeout=5)[0] != 200:
                assert time.monotonic() < deadline, "llama-server did not come back"
                time.sleep(1)
    assert seen and all(line.endswith("authorization=None") for line in seen), seen
    assert {line.split()[1] for line in seen} == {"/health"}     # nothing that needs the key was even asked


def test_200_idle_connections_do_not_stop_prometheus_scrapes(served_standin, prometheus):  # noqa: F811
    port, out, log = prometheus
    target = served_standin.target
    up = _wait_for(port, f'up{{job="edgekit",target="{target}"}} == 1')
    assert up, f"Prometheus did not scrape the exporter: {log.read_text()[-2000:]}"
    host, exporter_port = json.loads((out / "edgekit-targets.json").read_text())[0]["targets"][0].rsplit(":", 1)
    with Transport(parse_target(target)) as t:
        since = t.run("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        idle = [socket.create_connection((host.strip("[]"), int(exporter_port)), timeout=5) for _ in range(200)]
        try:
            started = time.time()
            time.sleep(12)                                          # Prometheus scrapes every 2 s meanwhile
            assert _last_scrape(port, target)[0] > started + 4 and _last_scrape(port, target)[1] == 1.0
            assert _query(port, f'count_over_time(up{{job="edgekit",target="{target}"}}[10s]) >= 3'), \
                "Prometheus did not keep scraping"
            assert _query(port, f'min_over_time(up{{job="edgekit",target="{target}"}}[10s]) == 1')
        finally:
            for s in idle:
                s.close()
        journal = t.sudo(f"journalctl -u {L.EXPORTER_UNIT} --since {_q(since)} --no-pager -o cat").stdout
    dropped = [line for line in journal.splitlines() if "dropped an idle connection" in line]
    assert dropped and "Traceback" not in journal, journal[-3000:]
    assert len(dropped) <= 200 + 10, len(dropped)                  # at most one line per connection dropped


def _last_scrape(port: int, target: str) -> tuple[float, float]:
    """(when, value) of the last `up` sample Prometheus stored for the target's exporter."""
    series = f'up{{job="edgekit",target="{target}"}}'
    when, value = _query(port, f"timestamp({series})"), _query(port, series)
    return (float(when[0]["value"][1]) if when else 0.0), (float(value[0]["value"][1]) if value else 0.0)


def _q(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_key_rotate_old_key_401_new_key_200_and_prometheus_keeps_scraping(served_standin, prometheus):  # noqa: F811
    port, out, log = prometheus
    target = served_standin.target
    assert _wait_for(port, f'up{{job="edgekit",target="{target}"}} == 1')
    home = served_standin.home / "targets"
    old_key, old_token = served_standin.api_key, (home / f"{target}.exporter-token").read_text().strip()
    plan = served_standin.cli("key", "rotate", target, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert old_key not in plan.stdout and json.loads(plan.stdout)["changed"] == 2
    assert (home / f"{target}.exporter-token").read_text().strip() == old_token      # a dry run changed nothing
    res = served_standin.cli("key", "rotate", target)
    assert res.returncode == 0, res.stderr[-3000:]
    new_key = (home / f"{target}.api-key").read_text().strip()
    new_token = (home / f"{target}.exporter-token").read_text().strip()
    assert new_key != old_key and new_token != old_token
    served_standin.api_key = new_key                              # later tests of this session use the new key
    assert _get(f"{served_standin.url}/v1/models", old_key) == 401
    assert _get(f"{served_standin.url}/v1/models", new_key) == 200
    rotated = time.time()
    deadline = time.monotonic() + 60
    while True:
        when, value = _last_scrape(port, target)
        if when > rotated + 4 and value == 1.0:
            break
        assert time.monotonic() < deadline, f"Prometheus does not scrape with the new token: {when} {value}"
        time.sleep(1)
    with Transport(parse_target(target)) as t:
        assert t.sudo(f"cat {L.EXPORTER_TOKEN}").stdout.strip() == new_token
        assert t.sudo(f"stat -c '%a %U' {L.API_KEY_PATH} {L.EXPORTER_TOKEN}").stdout.split("\n")[:2] == \
            ["600 edgekit", "600 edgekit"]
