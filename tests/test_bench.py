"""Bench: workload definition, ceiling, llama-bench parsing, statistics, reports, HTTP client error handling."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import threading
from pathlib import Path

import pytest

from edgekit.bench import limits, llama_bench, pinning, report
from edgekit.bench.runner import CaseRun
from edgekit.bench.timing import RequestResult
from edgekit.chat.client import AuthFailed, Endpoint, LlamaClient, ServerLoading, ServerUnreachable
from edgekit.bench.workload import DEFAULT, QUICK, Case
from edgekit.errors import ConnectError, UsageError
from edgekit.facts.device import derive
from tests.conftest import run_cli, run_cli_inprocess
from tests.fixtures import captured as cap

REPO = Path(__file__).resolve().parents[1]


def test_committed_workload_matches_the_code():
    assert (REPO / "benchmarks" / "workload.toml").read_text() == DEFAULT.to_toml()
    if sys.version_info >= (3, 11):
        import tomllib

        assert tomllib.loads(DEFAULT.to_toml()) == DEFAULT.to_json()


def test_workload_sweeps():
    cases = DEFAULT.cases()
    assert [c.prompt_tokens for c in cases if c.sweep == "context"] == DEFAULT.prompt_lengths
    assert all(c.concurrency == 1 for c in cases if c.sweep == "context")
    assert sorted({c.concurrency for c in cases}) == sorted(DEFAULT.concurrency_levels)
    assert len({c.name for c in cases}) == len(cases)
    assert len(QUICK.cases()) < len(cases) and QUICK.quick


def test_decode_ceiling_from_jetson_facts_and_override():
    raw = {"dt_compatible": ["nvidia,p3768-0000+p3767-0005", "nvidia,tegra234"], "l4t": {"l4t": "36.4.3"},
           "memory": {"total_bytes": 7620 * 2**20}}
    model_bytes = 253_113_024
    normal = limits.ceiling_for(model_bytes, derive("nano", {**raw, "power_mode": {"name": "15W"}}).jetson)
    sup = limits.ceiling_for(model_bytes, derive("nano", {**raw, "power_mode": {"name": "MAXN_SUPER"}}).jetson)
    assert normal.bandwidth_gbs == 68.0 and sup.bandwidth_gbs == 102.0
    assert normal.decode_tps == pytest.approx(68e9 / model_bytes)
    assert "power mode MAXN_SUPER" in sup.bandwidth_from
    assert normal.share(normal.decode_tps / 2) == pytest.approx(50.0)
    unknown = limits.ceiling_for(model_bytes, None)
    assert unknown.decode_tps is None and "--bandwidth" in unknown.bandwidth_from and unknown.share(10) is None
    assert limits.ceiling_for(model_bytes, None, 50.0).decode_tps == pytest.approx(50e9 / model_bytes)
    with pytest.raises(ValueError):
        limits.decode_ceiling(0, model_bytes)


def test_llama_bench_json():
    parsed = llama_bench.parse_json(cap.LLAMA_BENCH_JSON_README)
    assert set(parsed) == {"pp512", "tg128"}
    assert parsed["pp512"]["avg_ts"] == 7100.002165 and parsed["tg128"]["stddev_ts"] == 1.041811
    assert parsed["tg128"]["build_commit"] == "8cf427ff" and parsed["tg128"]["model_size"] == 4677120000
    # llama-bench prints progress to stderr; stray text before the array is tolerated
    assert llama_bench.parse_json("ggml_cuda_init: found 1 CUDA devices\n" + cap.LLAMA_BENCH_JSON_README) == parsed


def test_server_cmdline_to_llama_bench_command():
    cmdline = "\0".join(["/opt/edgekit/llama.cpp/b1-abc/bin/llama-server", "-m", "/opt/edgekit/models/g/g.gguf",
                         "--threads=2", "-ngl", "99", "--parallel", "4", "-c", "8704", "--host", "0.0.0.0"]) + "\0"
    proc = llama_bench.parse_server_cmdline(7, "/opt/edgekit/llama.cpp/b1-abc", cmdline)
    assert (proc.model, proc.threads, proc.n_gpu_layers, proc.parallel, proc.ctx_size) == (
        "/opt/edgekit/models/g/g.gguf", 2, "99", 4, 8704)
    cmd = llama_bench.command(proc, 512, 128, 3)
    assert cmd.startswith("/opt/edgekit/llama.cpp/b1-abc/bin/llama-bench -m /opt/edgekit/models/g/g.gguf")
    assert "-p 512 -n 128 -r 3 -o json -t 2 -ngl 99" in cmd
    bare = llama_bench.parse_server_cmdline(8, "/opt/edgekit/llama.cpp/b1-abc", "llama-server\0-m\0m.gguf\0")
    assert "-t" not in llama_bench.command(bare, 512, 128, 1).split()   # server default threads = bench default


# -- results, statistics, reports -----------------------------------------------------------------------------
def _request(started, pp, tg, ttft=0.2, n=32, prompt_n=128):
    wall = ttft + (n - 1) / tg
    return RequestResult(True, started, wall, ttft, prompt_n=prompt_n, predicted_n=n, cache_n=0,
                         prompt_per_second=pp, predicted_per_second=tg)


def _result(scale=1.0, samples=True):
    runs = []
    t = 1000.0
    for case, pp, tg in ((Case("context", 128, 1), 300, 47), (Case("context", 512, 1), 280, 45),
                         (Case("concurrency", 512, 2), 270, 30)):
        run = CaseRun(case, started=t)
        for rep in range(3):
            run.batches.append([_request(t + rep * 5, pp * scale * (1 + rep / 100), tg * scale * (1 - rep / 100),
                                         prompt_n=case.prompt_tokens) for _ in range(case.concurrency)])
        run.ended = t + 15
        t += 20
        runs.append(run)
    telemetry = [{"source": "tegrastats", "time": 1000.0 + i, "gpu_load_pct": 50.0 + i % 2 * 40,
                  "ram_used_mb": 1000.0 + i, "power_total_mw": 10000.0, "temps_c": {"gpu": 50 + i / 10, "pmic": 100},
                  "cpu_load_pct": [10.0, None]} for i in range(70)]
    result = {"schema": report.RESULT_SCHEMA, "url": "http://x:8080", "target": "x", "workload": QUICK.to_json(),
              "model": {"name": "m.gguf", "size_bytes": 250_000_000}, "server": {"build_info": "b1"},
              "cases": [r.to_json() for r in runs], "ceiling": limits.ceiling_for(250_000_000, None, 50.0).to_json(),
              "llama_bench": {"pp": 512, "tg": 32, "started": 1060.0, "ended": 1065.0, "rounds": [
                  {"llama_bench": {"pp512": {"avg_ts": 279.0 + i}, "tg32": {"avg_ts": 46.7 - i}},
                   "served_pp": _request(1070 + i, 270 + i, 1, n=1, prompt_n=512).to_json(),
                   "served_tg": _request(1071 + i, 1000, 46 - i, prompt_n=1).to_json()} for i in range(3)]},
              "telemetry": {"source": "tegrastats", "why": [], "samples": telemetry if samples else []},
              "errors": [], "complete": True}
    result["summary"] = report.summarize(result)
    return result


def test_summary_medians_spread_and_phases():
    result = _result()
    cases = {c["name"]: c for c in result["summary"]["cases"]}
    p128 = cases["p128-c1"]
    assert p128["requests"] == 3 and p128["failed"] == 0
    assert p128["pp_tps"]["median"] == pytest.approx(303.0) and p128["pp_tps"]["min"] == 300.0
    assert p128["tg_tps"]["spread_pct"] == pytest.approx(100 * (47 - 47 * 0.98) / (47 * 0.99))
    assert p128["tg_wall_tps"]["median"] == pytest.approx(47 * 0.99)
    tel = p128["telemetry"]
    assert tel["samples"] == 16 and tel["gpu_load_peak_pct"] == 90.0 and tel["power_mean_w"] == 10.0
    assert tel["j_per_token"] == pytest.approx(10.0 * 15 / (3 * 32))
    assert tel["temp_max_c"] == pytest.approx(51.5)                         # pmic's fixed 100C left out
    assert tel["cpu_load_mean_pct"] == 10.0                                 # offline core not averaged in
    c2 = cases["p512-c2"]
    assert c2["requests"] == 6 and c2["aggregate_tg_tps"]["median"] > c2["tg_tps"]["median"]
    rows = {r["test"]: r for r in result["summary"]["llama_bench_agreement"]}
    assert rows["pp512"]["llama_bench_tps"] == 280.0 and rows["pp512"]["served_tps"] == 271.0
    assert rows["tg32"]["diff_pct"] == pytest.approx(100 * (45 - 45.7) / 45.7)
    assert rows["tg32"]["rounds"] == 3 and rows["tg32"]["llama_bench_spread_pct"] == pytest.approx(200 / 45.7)
    assert result["summary"]["llama_bench_telemetry"]["samples"] == 6
    assert result["summary"]["decode_share_of_ceiling_pct"] == pytest.approx(100 * 47 * 0.99 / (50e9 / 250e6))


def test_failed_requests_are_counted_not_hidden():
    result = _result()
    result["cases"][0]["batches"][1][0] = RequestResult(False, 1005.0, 0.1, error="HTTP 500: boom").to_json()
    s = report.summarize(result)["cases"][0]
    assert s["requests"] == 2 and s["failed"] == 1 and s["errors"] == ["HTTP 500: boom"]


@pytest.mark.needs("matplotlib")
def test_result_file_roundtrip_plot_and_compare(tmp_path):
    a, b = _result(), _result(scale=1.1, samples=False)
    pa, pb = report.write_json(a, tmp_path / "a.json"), report.write_json(b, tmp_path / "b.json")
    assert report.load(pa)["summary"] == a["summary"]
    rows = {r["metric"]: r for r in report.compare(report.load(pa), report.load(pb))}
    assert rows["p128-c1 gen tok/s"]["change_pct"] == pytest.approx(10.0)
    png = report.plot(a, tmp_path / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(UsageError) as e:
        report.load(tmp_path / "x.json")
    assert "edgekit bench" in e.value.hint
    with pytest.raises(UsageError):
        report.load(tmp_path / "missing.json")


def test_cli_compare(tmp_path):
    report.write_json(_result(), tmp_path / "a.json")
    report.write_json(_result(scale=0.9), tmp_path / "b.json")
    out = run_cli("bench-compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["metric"]: r for r in json.loads(out.stdout)["rows"]}
    assert rows["p512-c1 prompt tok/s"]["change_pct"] == pytest.approx(-10.0)
    bad = run_cli("bench-compare", str(tmp_path / "a.json"))
    assert bad.returncode == 2 and "missing argument 'B.json'" in bad.stderr


def test_a_host_named_compare_is_a_target_like_any_other(tmp_path, monkeypatch):
    """`compare` is not a sub-command of bench (that is `bench-compare`): `edgekit bench compare` connects to the
    host called compare (here an SSH alias for a closed port), and the old two-file form is refused."""
    (tmp_path / "ssh_config").write_text("Host compare\n  HostName 127.0.0.1\n  Port 9\n  User jetson\n")
    monkeypatch.setenv("EDGEKIT_SSH_CONFIG", str(tmp_path / "ssh_config"))
    as_host = run_cli_inprocess("bench", "compare", "--quick")
    assert as_host.returncode == 3 and "cannot connect to compare: Unable to connect to port 9 on 127.0.0.1" in \
        as_host.stderr
    old = run_cli_inprocess("bench", "compare", "a.json", "b.json")
    assert old.returncode == 2 and "unexpected extra argument(s) (a.json b.json)" in old.stderr


# -- the HTTP client against a loopback server that answers like llama-server's error paths ------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    health = []      # statuses to answer /health with, in order (last one repeats)
    key = "sekrit"

    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            status = _Handler.health.pop(0) if len(_Handler.health) > 1 else _Handler.health[0]
            self._send(status, {"status": "ok"} if status == 200 else
                       {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        elif self.headers.get("Authorization") != f"Bearer {_Handler.key}":
            self._send(401, {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}})
        else:
            self._send(200, {"total_slots": 1})


@pytest.fixture
def loopback():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _client(url: str, api_key: str | None = None) -> LlamaClient:
    return LlamaClient(Endpoint(url=url, api_key=api_key), timeout=10)


def test_wait_ready_reports_loading_progress(loopback):
    _Handler.health = [503, 503, 200]
    seen = []
    _client(loopback).wait_ready(timeout=30, on_wait=lambda waited, said: seen.append(said), interval=0.05)
    assert seen == [f"llama-server at {loopback} is not ready: Loading model"] * 2


def test_wait_ready_gives_up_with_a_hint(loopback):
    _Handler.health = [503]
    with pytest.raises(ServerLoading) as e:
        _client(loopback).wait_ready(timeout=0.5, interval=0.05)
    assert "Loading model" in e.value.message and "still loading after" in e.value.message and e.value.hint
    assert "--wait" not in e.value.hint         # bench has no --wait: `edgekit ask/chat` add it themselves


def test_wrong_or_missing_api_key(loopback):
    _Handler.health = [200]
    assert _client(loopback, api_key="sekrit").props() == {"total_slots": 1}
    with pytest.raises(AuthFailed) as e:
        _client(loopback, api_key="wrong").props()
    assert "rejected the API key" in e.value.message and "--api-key" in e.value.hint and e.value.exit_code == 3
    assert "Invalid API Key" in e.value.message
    with pytest.raises(ConnectError) as e:
        _client(loopback).props()
    assert "none was given" in e.value.message


def test_unreachable_server():
    with pytest.raises(ServerUnreachable) as e:
        _client("http://127.0.0.1:9").wait_ready(timeout=1, connect_grace=0.2, interval=0.05)
    assert "connection refused" in e.value.message and "systemctl status edgekit-llama-server" in e.value.hint
    assert e.value.exit_code == 3
    with pytest.raises(UsageError):
        _client("ftp://x")


def test_short_phase_still_gets_the_sample_covering_it():
    samples = [report.Sample(source="procfs", time=t, cpu_load_pct=[float(t)]) for t in (10.0, 11.0, 12.0)]
    tel = report.phase_telemetry(samples, 10.2, 10.6, 5, interval_s=1.0)    # inside (10, 11]
    assert tel["samples"] == 1 and tel["cpu_load_mean_pct"] == 11.0
    assert report.phase_telemetry(samples, 10.2, 10.6, 5)["samples"] == 0    # no interval known: none inside


def test_server_settings_from_the_edgekit_service_environment():
    """edgekit's unit passes llama-server's settings as LLAMA_ARG_* variables; flags still win over them."""
    env = ("LANG=C\0LLAMA_ARG_MODEL=/opt/edgekit/models/m/m.gguf\0LLAMA_ARG_PORT=8080\0LLAMA_ARG_N_GPU_LAYERS=999\0"
           "LLAMA_ARG_THREADS=4\0LLAMA_ARG_N_PARALLEL=2\0LLAMA_ARG_CTX_SIZE=2048\0")
    proc = llama_bench.parse_server_cmdline(9, "/opt/edgekit/llama.cpp/b2-def",
                                            "/opt/edgekit/llama.cpp/current/bin/llama-server\0", env)
    assert (proc.model, proc.port, proc.threads, proc.n_gpu_layers, proc.parallel, proc.ctx_size) == (
        "/opt/edgekit/models/m/m.gguf", 8080, 4, "999", 2, 2048)
    assert proc.bench_exe == "/opt/edgekit/llama.cpp/b2-def/bin/llama-bench"
    flagged = llama_bench.parse_server_cmdline(9, "/opt/edgekit/llama.cpp/b2-def", "/x/llama-server\0-t\0002\0", env)
    assert flagged.threads == 2


# -- CPU pinning for the bench (commands only; nothing here runs them on a device) ----------------------------
def test_cpu_lists():
    assert pinning.parse_cpu_list("0-1,4") == [0, 1, 4] and pinning.cpu_list([4, 0, 1, 1]) == "0,1,4"
    for bad in ("", "a", "3-1", "1,", "-2"):
        with pytest.raises(UsageError):
            pinning.parse_cpu_list(bad)
    assert pinning.split_cpus([0, 1, 2, 3], [0, 1]) == ([0, 1], [2, 3])
    with pytest.raises(UsageError):
        pinning.split_cpus([0, 1], [0, 1])          # nothing left for the client
    with pytest.raises(UsageError):
        pinning.split_cpus([0, 1], [5])


def test_service_pinned_by_a_runtime_dropin_and_restored():
    ops = pinning.pin_ops([1, 0])
    assert ops[0] == "mkdir -p /run/systemd/system/edgekit-llama-server.service.d"
    upload = ops[1]
    assert upload.dest == "/run/systemd/system/edgekit-llama-server.service.d/50-edgekit-bench-cpus.conf"
    assert "[Service]\nCPUAffinity=\nCPUAffinity=0 1\n" in upload.text and upload.mode == "0644"
    assert ops[2:] == ["systemctl daemon-reload", "systemctl restart edgekit-llama-server.service"]
    assert pinning.unpin_ops() == [f"rm -f {upload.dest}", "systemctl daemon-reload",
                                   "systemctl restart edgekit-llama-server.service"]


def test_pinned_service_is_restored_when_the_bench_fails():
    from tests.steps_harness import RecordingTransport

    t = RecordingTransport()
    with pytest.raises(RuntimeError):
        with pinning.server_pinned(t, [0, 1]):
            assert t.ran[-1] == "systemctl restart edgekit-llama-server.service"
            raise RuntimeError("the bench broke")
    assert t.ran[-3:] == [str(pinning.unpin_ops()[0]), "systemctl daemon-reload",
                          "systemctl restart edgekit-llama-server.service"]
    upload = next(op for op in t.ran if not isinstance(op, str))
    assert upload.dest == pinning.DROPIN and upload.root and b"CPUAffinity=0 1" in upload.data


def test_llama_bench_runs_on_the_servers_cpus():
    proc = llama_bench.parse_server_cmdline(7, "/opt/edgekit/llama.cpp/b1-abc", "x\0-m\0/m dir/g.gguf\0-t\0002\0")
    cmd = llama_bench.command(proc, 512, 128, 1, cpus=[0, 1])
    assert cmd.startswith("taskset -c 0,1 /opt/edgekit/llama.cpp/b1-abc/bin/llama-bench -m '/m dir/g.gguf' ")
    assert not llama_bench.command(proc, 512, 128, 1).startswith("taskset")


@pytest.mark.needs("sched_setaffinity")
def test_client_pinned_restores_this_process():
    before = os.sched_getaffinity(0)
    one = min(before)
    with pinning.client_pinned([one]):
        assert os.sched_getaffinity(0) == {one}
    assert os.sched_getaffinity(0) == before


def test_bench_server_cpus_needs_a_target():
    out = run_cli_inprocess("bench", "--url", "http://127.0.0.1:9", "--server-cpus", "0,1")
    assert out.returncode == 2 and "--server-cpus" in out.stderr and "TARGET" in out.stderr
    bad = run_cli_inprocess("bench", "--url", "http://127.0.0.1:9", "--client-cpus", "x")
    assert bad.returncode == 2 and "CPU list" in bad.stderr


def test_pinning_holds_the_device_lock_and_runs_what_its_dry_run_prints(monkeypatch):
    """`bench --server-cpus` restarts the service: under the device's edgekit lock (taken before the first restart,
    released after the last), running exactly bench_plan's device commands."""
    from edgekit.bench import runner
    from tests.steps_harness import RecordingTransport

    t, held = RecordingTransport(), []

    @contextlib.contextmanager
    def lock(transport, what):
        held.append(what)
        t.ran.append("LOCKED")
        yield
        t.ran.append("UNLOCKED")

    def measure(settings, transport, on_progress, telemetry):
        t.ran.append("MEASURE")
        return {"complete": True}

    monkeypatch.setattr(runner, "measure", measure)
    settings = runner.BenchSettings(url="http://orin:8080", server_cpus=[0, 1])
    runner.run_bench(settings, t, lock=lock)
    printed = [str(op) for op in runner.bench_plan(settings)]
    assert held == ["bench --server-cpus"] and t.ran[0] == "LOCKED" and t.ran[-1] == "UNLOCKED"
    assert [str(op) for op in t.ran[1:-1]] == [p if not p.startswith("check: ") else "MEASURE" for p in printed]
    runner.run_bench(runner.BenchSettings(url="http://orin:8080"), t, lock=None)      # no pinning: no lock taken


# -- the side-by-side caption: built from what the run recorded ---------------------------------------------------
SYSTEM_INFO_B5489 = ("build: 5489 (2d38b6e4) with cc (Ubuntu 9.4.0-1ubuntu1~20.04.2) 9.4.0 for aarch64-linux-gnu\n"
                     "system info: n_threads = 8, n_threads_batch = 8, total_threads = 8\n")
SYSTEM_INFO = "system_info: n_threads = 2 (n_threads_batch = 2) / 2 | CPU : SSE3 = 1 | AVX2 = 1 | OPENMP = 1 |\n"


def test_runtime_fact_reads_threads_from_the_log_and_cpus_from_proc():
    pid = 4242
    command = llama_bench.runtime_command(pid)
    assert "/proc/4242/status" in command and "_PID=4242" in command and "topology/thread_siblings" in command
    got = llama_bench.parse_runtime(f"Cpus_allowed_list:\t0\n@@journal\n{SYSTEM_INFO}@@siblings\n1\n2\n")
    assert got == {"threads": 2, "threads_batch": 2, "default_threads": 2, "cpus": "0"}
    assert llama_bench.parse_runtime(f"Cpus_allowed_list:\t0-5\n@@journal\n{SYSTEM_INFO_B5489}") == {
        "threads": 8, "threads_batch": 8, "default_threads": None, "cpus": "0-5"}
    assert llama_bench.parse_runtime("") == {"threads": None, "threads_batch": None, "default_threads": None,
                                             "cpus": None}


def test_default_threads_are_physical_cores_as_llama_cpp_counts_them():
    """No setting, nothing logged (b11312 logs its threads only at trace verbosity): llama.cpp's default, one thread
    per distinct thread_siblings mask (two hyperthreads of a core share one)."""
    smt = "Cpus_allowed_list:\t0-3\n@@journal\n@@siblings\n03\n03\n0c\n0c\n"      # 2 cores x 2 threads
    runtime = llama_bench.parse_runtime(smt)
    assert runtime["default_threads"] == 2 and runtime["threads"] is None
    unset = llama_bench.parse_server_cmdline(7, "/opt/edgekit/llama.cpp/b1-abc", "llama-server\x00-m\x00/m.gguf\x00")
    assert llama_bench.recorded_settings(unset, runtime)["threads"] == 2
    assert llama_bench.recorded_settings(unset, runtime)["threads_from"] == "default"
    assert llama_bench.recorded_settings(unset, llama_bench.parse_runtime(""))["threads_from"] is None


def test_batch_sizes_come_from_the_env_and_flags_and_reach_llama_bench():
    proc = llama_bench.parse_server_cmdline(7, "/opt/edgekit/llama.cpp/b1-abc", "llama-server\x00-ub\x00256\x00",
                                            "LLAMA_ARG_BATCH=1024\0LLAMA_ARG_MODEL=/m.gguf\0LLAMA_ARG_THREADS=4")
    assert (proc.batch, proc.ubatch, proc.threads) == (1024, 256, 4)
    assert "-t 4 -b 1024 -ub 256" in llama_bench.command(proc, 512, 32, 1)
    settings = llama_bench.recorded_settings(proc, {"threads": 6, "threads_batch": 6, "default_threads": 6, "cpus": "0"})
    assert settings["threads"] == 4 and settings["threads_from"] == "setting"      # the setting wins over the log
    unset = llama_bench.parse_server_cmdline(7, "/opt/edgekit/llama.cpp/b1-abc", "llama-server\0-m\0/m.gguf\0")
    assert llama_bench.recorded_settings(unset, {"threads": 6, "threads_batch": 6, "default_threads": 4,
                                                 "cpus": "0-5"})["threads_from"] == "log"


def _side_by_side(rounds: int, server: dict, bench_threads: int = 2, cpus: str | None = "0") -> dict:
    return {"pp": 512, "tg": 32, "server_settings": server, "llama_bench_cpus": cpus, "rounds": [
        {"llama_bench": {"pp512": {"avg_ts": 280.0 + i, "n_threads": bench_threads, "n_batch": 2048, "n_ubatch": 512},
                         "tg32": {"avg_ts": 46.0 + (i % 2) * 0.4}},
         "served_pp": _request(1070 + i, 270 + i, 1, n=1, prompt_n=512).to_json(),
         "served_tg": _request(1071 + i, 1000, 46.1 + (i % 2) * 0.3, prompt_n=1).to_json()} for i in range(rounds)]}


def test_caption_is_built_from_the_recorded_settings():
    server = {"threads": 2, "threads_from": "log", "batch": None, "ubatch": None, "cpus": "0"}
    caption = report.agreement_caption(_side_by_side(5, server))
    assert caption == ("served vs llama-bench, median of 5 interleaved rounds; server: 2 threads (from its log), "
                       "batch not set (llama.cpp's default), CPUs 0; llama-bench: 2 threads, batch 2048/512, CPUs 0")
    other = report.agreement_caption(_side_by_side(5, {**server, "threads": 4, "threads_from": "setting",
                                                       "batch": 512, "ubatch": 512}, cpus=None))
    assert "server: 4 threads, batch 512/512, CPUs 0; llama-bench: 2 threads, batch 2048/512, CPUs not pinned" in other
    assert other.endswith("they differ in threads, batch")
    assert "3 rounds (under 5: no spread worth quoting)" in report.agreement_caption(_side_by_side(3, server))
    assert "threads not recorded" in report.agreement_caption(_side_by_side(5, {}))
    default = report.agreement_caption(_side_by_side(5, {**server, "threads_from": "default"}))
    assert "server: 2 threads (llama.cpp's default: one per physical core), batch" in default
    assert report.agreement_caption(None) is None


def test_a_difference_inside_the_spread_is_within_noise():
    rows = {r["test"]: r for r in report.agreement(_side_by_side(5, {}))}
    tg = rows["tg32"]
    assert tg["rounds"] == 5 and tg["within_noise"] and abs(tg["diff_pct"]) <= tg["noise_pct"]
    pp = rows["pp512"]             # served 270..274 vs llama-bench 280..284: 3.5% apart, spreads ~1.5%
    assert not pp["within_noise"] and pp["diff_pct"] == pytest.approx(100 * (272 - 282) / 282)
