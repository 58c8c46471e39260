"""`edgekit bench` against a real llama-server (CPU build, gemma3-270m) on a stand-in, over real SSH and HTTP.

The server is the systemd service that `edgekit provision` installed on the session's stand-in (tests/served.py).
No absolute speeds are asserted: only that the measurements exist, agree with each other and with llama-bench
within a loose band (the committed run under benchmarks/results/ shows the real agreement).
"""

from __future__ import annotations

import json
import secrets
import shlex
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit.layout import CURRENT, ENV_PATH
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

@dataclass
class Served:
    name: str          # ssh alias of the stand-in
    url: str
    api_key: str


@pytest.fixture(scope="session")
def bench_target(served_standin):
    """The stand-in `edgekit provision` set up this session (tests/served.py): the service under test."""
    return Served(served_standin.target, served_standin.url, served_standin.api_key)


def test_bench_quick_with_llama_bench(bench_target, tmp_path):
    s = bench_target
    out = run_cli("bench", s.name, "--url", s.url, "--api-key", s.api_key, "--quick", "--llama-bench",
                  "--out", str(tmp_path), "--json", timeout=900)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    result = json.loads(Path(summary["files"]["json"]).read_text())
    assert result["complete"] and not result["errors"]
    cases = result["summary"]["cases"]
    assert [c["name"] for c in cases] == [c.name for c in __import__("edgekit.bench.workload",
                                                                       fromlist=["QUICK"]).QUICK.cases()]
    for case in cases:
        assert case["failed"] == 0 and case["requests"] == case["concurrency"]
        assert case["pp_tps"]["median"] > 0 and case["tg_tps"]["median"] > 0 and case["ttft_s"]["median"] > 0
        # wall-clock generation agrees with the server's own timings
        assert case["tg_wall_tps"]["median"] == pytest.approx(case["tg_tps"]["median"], rel=0.35)
        assert case["telemetry"]["samples"] >= 1 and case["telemetry"]["gpu_load_mean_pct"] is None
    raw = result["cases"][0]["batches"][0][0]
    assert raw["prompt_n"] == result["workload"]["prompt_lengths"][0]          # exact prompt length
    assert raw["predicted_n"] == result["workload"]["gen_tokens"] and raw["cache_n"] == 0
    tel = result["telemetry"]
    assert tel["source"] == "procfs" and any("jetson-stats" in w for w in tel["why"])
    assert any(smp["server_rss_mb"] for smp in tel["samples"])
    assert result["server_process"]["exe"].endswith("/bin/llama-server")
    recorded = result["llama_bench"]["server_settings"]          # read from the device, not assumed
    assert recorded["threads"] and recorded["threads_from"] and recorded["cpus"], recorded
    caption = result["summary"]["llama_bench_caption"]
    assert f"server: {recorded['threads']} threads" in caption and f"CPUs {recorded['cpus']}" in caption, caption
    assert f"llama-bench: {recorded['threads']} threads" in caption and "differ in threads" not in caption, caption
    for row in result["summary"]["llama_bench_agreement"]:
        assert row["llama_bench_tps"] > 0 and row["served_tps"] > 0
        assert 0.5 < row["served_tps"] / row["llama_bench_tps"] < 1.5, row   # loose: 2 shared cores
    assert result["ceiling"]["decode_tps"] is None and "--bandwidth" in result["ceiling"]["bandwidth_from"]
    if summary["files"]["png"].endswith(".png"):
        assert Path(summary["files"]["png"]).read_bytes()[:4] == b"\x89PNG"


def test_bench_wrong_api_key(bench_target, tmp_path):
    out = run_cli("bench", "--url", bench_target.url, "--api-key", "wrong", "--out", str(tmp_path), timeout=120)
    assert out.returncode == 3
    assert "rejected the API key" in out.stderr and "--api-key" in out.stderr


def test_bench_unreachable_server(bench_target, tmp_path):
    url = bench_target.url.rsplit(":", 1)[0] + ":8099"
    started = time.time()
    out = run_cli("bench", "--url", url, "--out", str(tmp_path / "out"), timeout=120)
    assert out.returncode == 3 and "cannot reach llama-server" in out.stderr and "hint:" in out.stderr
    assert time.time() - started < 60
    assert not (tmp_path / "out").exists()            # nothing measured, nothing written


# A directory name that is a shell command: `cat <its parent>/build-stamp.json`, unquoted, would create MARKER.
EVIL_TOP = "/tmp/q;touch${IFS}"
EVIL_ROOT = EVIL_TOP + "/tmp/edgekit-bench-pwned;#"
MARKER = "/tmp/edgekit-bench-pwned"
HAND_PORT = 8093


@pytest.fixture
def hand_started_server(bench_target):
    """A `llama-server` the login user started by hand from EVIL_ROOT/bin (a copy of the installed build), on its
    own port, with --api-key on its command line. Yields (url, key); stops it (by its PID) and removes it after."""
    q = shlex.quote
    key = "hand-" + secrets.token_hex(12)
    with Transport(parse_target(bench_target.name)) as t:
        t.run(f"rm -f {q(MARKER)}; rm -rf -- {q(EVIL_TOP)}; mkdir -p -- {q(EVIL_ROOT)} && cp -a {q(CURRENT)}/. {q(EVIL_ROOT)}/")
        model = t.run(f"sed -n 's/^LLAMA_ARG_MODEL=//p' {q(ENV_PATH)}").stdout.strip()
        pid = t.run(f"cd /tmp && nohup {q(EVIL_ROOT + '/bin/llama-server')} -m {q(model)} --host 0.0.0.0 "
                    f"--port {HAND_PORT} --api-key {key} -t 1 -c 1024 -np 1 --no-webui "
                    "> /tmp/edgekit-hand-server.log 2>&1 < /dev/null & echo $!").stdout.strip()
        assert pid.isdigit(), pid
        url = bench_target.url.rsplit(":", 1)[0] + f":{HAND_PORT}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    log = t.run("tail -30 /tmp/edgekit-hand-server.log", check=False).stdout
                    raise AssertionError(f"the hand-started llama-server did not come up:\n{log}")
                time.sleep(0.5)
            yield url, key
        finally:
            t.run(f"kill {pid}; sleep 1; kill -9 {pid} 2>/dev/null; rm -rf -- {q(EVIL_TOP)}", check=False)


def test_bench_never_runs_a_hand_started_servers_directory_name(bench_target, hand_started_server, tmp_path):
    """Another llama-server on the device, started from a directory named like a shell command: bench measures it
    over HTTP, but takes nothing from its process (no build stamp, no llama-bench from its folder), runs nothing
    built from its path, and writes and prints none of its --api-key."""
    url, key = hand_started_server
    out = run_cli("bench", bench_target.name, "--url", url, "--api-key", key, "--quick", "--llama-bench",
                  "--out", str(tmp_path), "--json", timeout=900)
    with Transport(parse_target(bench_target.name)) as t:
        created = t.run(f"test -e {shlex.quote(MARKER)}", check=False).ok
    assert not created, "bench ran a command taken from another process's directory name"
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    text = Path(summary["files"]["json"]).read_text()
    result = json.loads(text)
    assert result["llama_bench"] is None and result["build_stamp"] is None and result["server_process"] is None
    why = " ".join(result["errors"])
    assert "--llama-bench skipped" in why and "not edgekit's service" in why and f"port is {HAND_PORT}" in why
    assert result["summary"]["cases"][0]["requests"] >= 1                # the served numbers are still measured
    for shown in (text, out.stdout, out.stderr):
        assert key not in shown and "touch${IFS}" not in shown
