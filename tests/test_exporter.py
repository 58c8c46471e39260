"""The on-device exporter: its text is valid exposition format 0.0.4 (checked by a strict parser written here, and
by prometheus_client's when installed), names follow Prometheus conventions, board series carry their source,
llama-server's /metrics is re-exported with a model label (single and router mode) and its key stays on the
device, a bearer token is required (401 otherwise), and no token is refused off loopback.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from edgekit.exporter import app, facts, llama, textformat
from edgekit.exporter.board import Sampler, add_board
from edgekit.exporter.textformat import Exposition
from edgekit.metrics import bundle
from edgekit.telemetry.procfs import ProcfsReader
from edgekit.telemetry.tegrastats import parse_line
from tests.fixtures.captured import TEGRASTATS_AGX_ORIN_64GB_JP5_LOAD, TEGRASTATS_ORIN_NANO_JP6_GPU_BUSY

KEY = "ek-server-key-0123456789"
TOKEN = "ekm-exporter-token-0123456789"

# llama-server's /metrics in the form tools/server/server-task.cpp (server_task_result_metrics::to_metrics) of the
# pinned llama.cpp (b11312, the llama-cpp-python 0.3.36 sdist) prints it: HELP, TYPE and value per metric, counters
# first; values as a C++ stream writes doubles.
LLAMA_METRICS = "".join(
    f"# HELP llamacpp:{name} {help_text}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n"
    for name, kind, help_text, value in [
        ("prompt_tokens_total", "counter", "Number of prompt tokens processed, excluding cached tokens", "6886"),
        ("prompt_tokens_cached_total", "counter", "Number of prompt tokens reused from the cache", "120"),
        ("prompt_seconds_total", "counter", "Total time spent processing prompts", "29.0363"),
        ("tokens_predicted_total", "counter", "Number of generation tokens processed", "3469"),
        ("tokens_predicted_seconds_total", "counter", "Total time spent generating tokens", "354.427"),
        ("n_decode_total", "counter", "Total number of llama_decode() calls, excluding speculative decoding and "
                                      "multimodal decoding", "3512"),
        ("n_tokens_max", "counter", "Largest observed sequence length (prompt + generation)", "1024"),
        ("spec_decode_num_draft_tokens_total", "counter", "Speculative: Total draft tokens generated", "0"),
        ("spec_decode_num_accepted_tokens_total", "counter", "Speculative: Total draft tokens accepted by the "
                                                              "target model", "0"),
        ("spec_decode_num_drafts_total", "counter", "Speculative: Total speculative decoding verification steps", "0"),
        ("prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s", "237.151"),
        ("predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s", "9.78781"),
        ("requests_processing", "gauge", "Number of requests processing", "1"),
        ("requests_deferred", "gauge", "Number of requests deferred", "0"),
        ("n_busy_slots_per_decode", "gauge", "Average number of busy slots per llama_decode() call", "1.02"),
    ])
STAMP = {"format": 1, "version": "b11312", "commit": "0a1b2c3", "flags_hash": "9f8e7d6c", "backend": "cuda",
         "cuda_arch": "87", "cpu_level": "armv8.2-a", "prefix": "/opt/edgekit/llama.cpp/b11312-9f8e7d6c"}
HEALTHY = {"build": "/opt/edgekit/llama.cpp/b11312-9f8e7d6c", "model": "smollm2", "at": "2026-05-01T10:00:00+0000"}


# -- a strict parser of the text format, written independently of edgekit.exporter.textformat -------------------
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LNAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_LVALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE_LINE = re.compile(rf"^({_NAME})(?:\{{((?:{_LNAME}={_LVALUE})(?:,{_LNAME}={_LVALUE})*)?\}})? "
                          r"(NaN|[+-]Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)$")
_PAIR = re.compile(rf"({_LNAME})=({_LVALUE})")
_HELP = re.compile(rf"^# HELP ({_NAME}) ((?:[^\\\n]|\\[\\n])*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")


def strict_parse(text: str) -> dict[str, dict]:
    """{family: {"help", "type", "samples": [(name, labels, value)]}}; AssertionError on anything off-format:
    HELP then TYPE before a family's samples, each family once and contiguous, no repeated series or label."""
    assert text.endswith("\n"), "the exposition ends with a newline"
    families: dict[str, dict] = {}
    current = None
    series = set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}: {line!r}"
        if m := _HELP.match(line):
            assert m[1] not in families, f"{where}: family declared twice"
            families[m[1]] = {"help": m[2], "type": None, "samples": []}
            current = m[1]
            continue
        if m := _TYPE.match(line):
            assert current == m[1] and families[m[1]]["type"] is None, f"{where}: TYPE must follow its HELP"
            families[m[1]]["type"] = m[2]
            continue
        assert not line.startswith("#") and line, f"{where}: not a HELP, TYPE or sample line"
        m = _SAMPLE_LINE.match(line)
        assert m, f"{where}: not a valid sample line"
        name, labels_text, value = m[1], m[2] or "", m[3]
        assert current is not None and families[current]["type"], f"{where}: sample before HELP and TYPE"
        kind = families[current]["type"]
        allowed = {current} | ({current + s for s in ("_bucket", "_sum", "_count")} if kind in ("histogram",
                                                                                                  "summary") else set())
        assert name in allowed, f"{where}: sample of another family inside {current}"
        pairs = _PAIR.findall(labels_text)
        assert ",".join(f"{k}={v}" for k, v in pairs) == labels_text, f"{where}: labels do not parse"
        names = [k for k, _ in pairs]
        assert len(names) == len(set(names)), f"{where}: a label given twice"
        labels = {k: v[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\") for k, v in pairs}
        key = (name, tuple(sorted(labels.items())))
        assert key not in series, f"{where}: the same series twice"
        series.add(key)
        families[current]["samples"].append((name, labels, float(value.replace("Inf", "inf"))))
    return families


def prometheus_client_parse(text: str) -> set[str] | None:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return None
    return {f.name for f in text_string_to_metric_families(text)}


# -- fixtures -----------------------------------------------------------------------------------------------------
class FixedSampler:
    def __init__(self, sample, restarts: int = 0):
        self.latest, self.restarts = sample, restarts


def board_sample(line: str = TEGRASTATS_ORIN_NANO_JP6_GPU_BUSY):
    s = parse_line(line, time=1_780_000_000.0)
    s.power_mode, s.jetson_clocks, s.server_rss_mb = "25W", True, 812.5
    return s


def fake_fetch(models_body: dict | None = None, metrics: dict[str, str] | None = None, seen: list | None = None):
    """llama-server answering in-process: {path: body}; a wrong key gets 401."""
    models_body = models_body or {"object": "list", "data": [{"id": "smollm2", "object": "model"}]}
    metrics = metrics if metrics is not None else {"/metrics": LLAMA_METRICS}

    def fetch(url: str, key, timeout: float):
        path = url.split("://", 1)[1].split("/", 1)[1]
        path = "/" + path
        if seen is not None:
            seen.append((path, key))
        if path == "/health":
            return 200, '{"status":"ok"}'
        if key != KEY:
            return 401, '{"error":{"code":401,"message":"Invalid API Key"}}'
        if path == "/models":
            return 200, json.dumps(models_body)
        return (200, metrics[path]) if path in metrics else (404, "not found")
    return fetch


def device_files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "api-key").write_text(KEY + "\n")
    (tmp_path / "llama-server.env").write_text(
        "# Managed by edgekit\nLLAMA_ARG_MODEL=/opt/edgekit/models/smollm2/smollm2.gguf\nLLAMA_ARG_ALIAS=smollm2\n"
        f"LLAMA_ARG_HOST=0.0.0.0\nLLAMA_ARG_PORT=8080\nLLAMA_ARG_CTX_SIZE=2048\n"
        f"LLAMA_ARG_API_KEY_FILE={tmp_path / 'api-key'}\n")
    (tmp_path / "build-stamp.json").write_text(json.dumps(STAMP))
    (tmp_path / "last-healthy.json").write_text(json.dumps(HEALTHY))
    return {"env_file": str(tmp_path / "llama-server.env"), "stamp_file": str(tmp_path / "build-stamp.json"),
            "healthy_file": str(tmp_path / "last-healthy.json")}


def fixture_scrape(tmp_path: Path, fetch=None, sample=None) -> str:
    """One scrape of the exporter with fixture inputs: a tegrastats Orin Nano sample, llama-server's metrics,
    a build stamp, an env file and a healthy record (also what tests/test_dashboard.py checks the dashboard with)."""
    exporter = app.Exporter(FixedSampler(sample or board_sample()), **device_files(tmp_path),
                            fetch=fetch or fake_fetch())
    return exporter.scrape()


# -- format ------------------------------------------------------------------------------------------------------
def test_a_scrape_is_valid_text_format_and_prometheus_client_agrees(tmp_path):
    text = fixture_scrape(tmp_path)
    fams = strict_parse(text)
    assert {"edgekit_gpu_load_ratio", "llamacpp:tokens_predicted_total", "edgekit_build_info"} <= fams.keys()
    theirs = prometheus_client_parse(text)
    if theirs is not None:                      # its parser strips _total from counters' family names
        assert {n[:-6] if n.endswith("_total") else n for n in fams} <= theirs | set(fams)


def test_names_follow_prometheus_conventions(tmp_path):
    fams = strict_parse(fixture_scrape(tmp_path))
    base_units = ("_bytes", "_celsius", "_watts", "_hertz", "_ratio", "_seconds", "_info", "_total")
    flags = {"edgekit_llama_server_up", "edgekit_llama_metrics_up", "edgekit_llama_model_loaded",
             "edgekit_llama_server_router_mode", "edgekit_clocks_pinned"}
    for name, fam in fams.items():
        if not name.startswith("edgekit_"):
            continue
        assert not re.search(r"_(percent|pct|mb|mib|mw|mhz|khz|milli\w*)(_|$)", name), name
        assert (fam["type"] == "counter") == name.endswith("_total"), f"{name}: counters and only they end in _total"
        assert name.endswith(base_units) or name in flags, f"{name}: no base unit suffix"
        assert not name.endswith("_info") or all(v == 1 for _, _, v in fam["samples"]), f"{name}: info is 1"
        assert fam["help"], name
    ratios = [v for n, f in fams.items() if n.endswith("_ratio") for _, _, v in f["samples"]]
    assert ratios and all(0 <= v <= 1 for v in ratios)


def test_board_values_are_in_base_units_and_carry_their_source(tmp_path):
    fams = strict_parse(fixture_scrape(tmp_path))

    def value(name, **labels):
        [v] = [v for _, lab, v in fams[name]["samples"] if labels.items() <= lab.items()]
        return v
    assert value("edgekit_gpu_load_ratio") == pytest.approx(0.63)
    assert value("edgekit_gpu_frequency_hertz") == 621e6 and value("edgekit_emc_frequency_hertz") == 2133e6
    assert value("edgekit_memory_total_bytes") == 7620 * 1024 * 1024
    assert value("edgekit_rail_power_watts", rail="VDD_IN") == pytest.approx(12.479)
    assert value("edgekit_rail_power_watts", rail="VDD_SOC") == pytest.approx(2.817)
    assert value("edgekit_board_power_watts", **{"from": "VDD_IN"}) == pytest.approx(12.479)
    assert value("edgekit_temperature_celsius", sensor="gpu") == pytest.approx(53.343)
    assert value("edgekit_power_mode_info", mode="25W") == 1 and value("edgekit_clocks_pinned") == 1
    board = [lab for name, f in fams.items() if name.startswith("edgekit_") and name not in (
        "edgekit_board_sampler_restarts_total",) and "source" in f["samples"][0][1] for _, lab, _ in f["samples"]]
    assert len(board) > 20 and {lab["source"] for lab in board} == {"tegrastats"}


def test_a_board_without_an_input_rail_says_its_power_is_the_sum_of_rails(tmp_path):
    fams = strict_parse(fixture_scrape(tmp_path, sample=board_sample(TEGRASTATS_AGX_ORIN_64GB_JP5_LOAD)))
    [(_, labels, watts)] = fams["edgekit_board_power_watts"]["samples"]
    assert labels["from"] == "sum of rails" and watts == pytest.approx((3150 + 14312 + 4968 + 1091) / 1000)
    assert "VDD_IN" not in {lab["rail"] for _, lab, _ in fams["edgekit_rail_power_watts"]["samples"]}


def test_procfs_has_no_gpu_or_power_series_rather_than_zeros():
    reader = ProcfsReader()
    reader.read()
    exp = Exposition()
    add_board(exp, reader.read(time=time.time()))
    fams = strict_parse(exp.render())
    assert "edgekit_memory_total_bytes" in fams
    assert not {"edgekit_gpu_load_ratio", "edgekit_board_power_watts", "edgekit_rail_power_watts"} & fams.keys()
    assert {lab["source"] for _, lab, _ in fams["edgekit_memory_total_bytes"]["samples"]} == {"procfs"}


def test_label_values_and_help_are_escaped():
    exp = Exposition()
    exp.gauge("edgekit_test_info", 'help with \\ and\nnewline').add(1, {"model": 'a"b\\c\nd'})
    text = exp.render()
    assert 'model="a\\"b\\\\c\\nd"' in text and "help with \\\\ and\\nnewline" in text
    [(_, labels, _)] = strict_parse(text)["edgekit_test_info"]["samples"]
    assert labels == {"model": 'a"b\\c\nd'}
    [fam] = textformat.parse(text)                  # and our own parser reads back what the writer wrote
    assert fam.help == 'help with \\ and\nnewline' and fam.samples[0][1] == {"model": 'a"b\\c\nd'}
    with pytest.raises(ValueError):
        exp.gauge("edgekit_test_info", "x").add(1, {"bad-label": "x"})
    with pytest.raises(ValueError):
        exp.counter("edgekit_test_info", "a gauge asked for as a counter")
    assert [textformat.format_value(v) for v in (math.nan, math.inf, -math.inf, 3.0, 0.25)] == \
        ["NaN", "+Inf", "-Inf", "3", "0.25"]


def test_the_parser_reads_histograms_labels_and_refuses_garbage():
    text = ('# HELP x_seconds A histogram.\n# TYPE x_seconds histogram\nx_seconds_bucket{le="0.1"} 1\n'
            'x_seconds_bucket{le="+Inf"} 2\nx_seconds_sum 0.3\nx_seconds_count 2\n'
            'y{a="1",b="with } brace"} inf\n')
    fams = {f.name: f for f in textformat.parse(text)}
    assert fams["x_seconds"].kind == "histogram" and len(fams["x_seconds"].samples) == 4
    assert fams["y"].kind == "untyped" and fams["y"].samples[0][1] == {"a": "1", "b": "with } brace"}
    assert math.isinf(fams["y"].samples[0][2])
    for bad in ("no_value\n", 'x{a="1} 2\n', "# TYPE x wrongtype\n", "x 1\n# TYPE x gauge\n"):
        with pytest.raises(ValueError):
            textformat.parse(bad)


# -- llama-server re-exported --------------------------------------------------------------------------------------
def test_llama_metrics_keep_their_names_and_gain_a_model_label_and_the_key_is_sent_to_loopback_only(tmp_path):
    seen: list = []
    fams = strict_parse(fixture_scrape(tmp_path, fetch=fake_fetch(seen=seen)))
    llamacpp = {n: f for n, f in fams.items() if n.startswith("llamacpp:")}
    assert set(llamacpp) == {n.split()[2] for n in LLAMA_METRICS.splitlines() if n.startswith("# TYPE")}
    assert fams["llamacpp:tokens_predicted_total"]["samples"] == [("llamacpp:tokens_predicted_total",
                                                                   {"model": "smollm2"}, 3469.0)]
    assert fams["llamacpp:tokens_predicted_total"]["type"] == "counter"
    assert fams["llamacpp:requests_processing"]["help"] == "Number of requests processing"
    assert seen == [("/health", None), ("/models", KEY), ("/metrics", KEY)]     # /health needs no key
    assert fams["edgekit_llama_server_up"]["samples"][0][2] == 1
    assert fams["edgekit_llama_metrics_up"]["samples"] == [("edgekit_llama_metrics_up", {"model": "smollm2"}, 1.0)]
    assert KEY not in fixture_scrape(tmp_path)


def test_router_mode_reads_every_loaded_model_and_never_loads_one(tmp_path):
    models = {"object": "list", "data": [
        {"id": "gemma3-270m", "status": {"value": "loaded", "args": []}},
        {"id": "smollm2", "status": {"value": "unloaded", "args": []}}]}
    seen: list = []
    metrics = {"/metrics?model=gemma3-270m&autoload=false": LLAMA_METRICS}
    fams = strict_parse(fixture_scrape(tmp_path, fetch=fake_fetch(models, metrics, seen)))
    assert [p for p, _ in seen] == ["/health", "/models", "/metrics?model=gemma3-270m&autoload=false"]
    assert {lab["model"] for _, lab, _ in fams["llamacpp:prompt_tokens_total"]["samples"]} == {"gemma3-270m"}
    loaded = {lab["model"]: v for _, lab, v in fams["edgekit_llama_model_loaded"]["samples"]}
    assert loaded == {"gemma3-270m": 1.0, "smollm2": 0.0}
    assert fams["edgekit_llama_server_router_mode"]["samples"][0][2] == 1


def test_a_server_that_is_down_is_a_zero_not_an_error(tmp_path):
    fams = strict_parse(fixture_scrape(tmp_path, fetch=lambda url, key, timeout: (0, "connection refused")))
    assert fams["edgekit_llama_server_up"]["samples"][0][2] == 0
    assert not [n for n in fams if n.startswith("llamacpp:")] and "edgekit_build_info" in fams


def test_a_hung_server_cannot_make_the_scrape_miss_its_deadline():
    given = []

    def slow(url, key, timeout):
        given.append(timeout)
        time.sleep(timeout)
        return (200, "") if url.endswith("/health") else (0, "timed out")
    exp = Exposition()
    start = time.monotonic()
    llama.add_server(exp, "http://127.0.0.1:8080", KEY, "smollm2", timeout=0.05, fetch=slow)
    assert time.monotonic() - start < 0.2 and sum(given) <= 0.1
    assert "edgekit_llama_metrics_up{model=\"smollm2\"} 0" in exp.render()


def test_a_clashing_model_label_is_kept_as_exported_model():
    exp = Exposition()
    exp.merge(textformat.parse('# TYPE m gauge\nm{model="theirs"} 1\n'), {"model": "ours"})
    assert exp.render().endswith('m{exported_model="theirs",model="ours"} 1\n')


def test_the_server_url_is_reached_on_loopback_for_wildcard_binds():
    assert llama.server_url({"LLAMA_ARG_HOST": "0.0.0.0", "LLAMA_ARG_PORT": "8081"}) == "http://127.0.0.1:8081"
    assert llama.server_url({"LLAMA_ARG_HOST": "::"}) == "http://[::1]:8080"
    assert llama.server_url({"LLAMA_ARG_HOST": "fd00::5", "LLAMA_ARG_PORT": "1"}) == "http://[fd00::5]:1"


def test_edgekit_facts_become_info_gauges(tmp_path):
    fams = strict_parse(fixture_scrape(tmp_path))
    [(_, build, one)] = fams["edgekit_build_info"]["samples"]
    assert one == 1 and build == {"version": "b11312", "backend": "cuda", "cuda_arch": "87", "cpu_level": "armv8.2-a",
                                  "flags_hash": "9f8e7d6c", "commit": "0a1b2c3"}
    [(_, model, _)] = fams["edgekit_model_info"]["samples"]
    assert model == {"model": "smollm2", "file": "smollm2.gguf", "ctx_size": "2048"}
    assert fams["edgekit_last_healthy_timestamp_seconds"]["samples"][0][2] == 1777629600.0
    assert facts.healthy_time("not json", mtime=5.0) == 5.0 and facts.healthy_time(None) is None
    assert facts.build_labels('{"no": "version"}') is None


# -- auth and binding ---------------------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    exporter = app.Exporter(FixedSampler(board_sample()), **device_files(tmp_path), fetch=fake_fetch())
    server = app.MetricsServer("127.0.0.1", 0, exporter, TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _get(url: str, token: str | None = None) -> tuple[int, dict, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def test_a_bearer_token_is_required(served):
    status, headers, body = _get(f"{served}/metrics")
    assert status == 401 and "edgekit_" not in body and headers["WWW-Authenticate"].startswith("Bearer")
    assert _get(f"{served}/metrics", "ekm-wrong-token-0123456789")[0] == 401
    assert _get(f"{served}/other")[0] == 401                       # nothing is said without the token
    status, headers, body = _get(f"{served}/metrics", TOKEN)
    assert status == 200 and headers["Content-Type"] == textformat.CONTENT_TYPE
    assert "llamacpp:tokens_predicted_total" in strict_parse(body)
    assert _get(f"{served}/", TOKEN)[0] == 404


def test_no_token_is_refused_off_loopback(tmp_path, capsys):
    exporter = app.Exporter(FixedSampler(None), **device_files(tmp_path))
    with pytest.raises(app.Refused, match="without a token"):
        app.MetricsServer("0.0.0.0", 0, exporter, None)
    assert app.main(["--host", "0.0.0.0", "--no-token", "--port", "0"]) == 2
    assert app.main(["--host", "127.0.0.1", "--port", "0"]) == 2          # neither --token-file nor --no-token
    assert "refusing to serve metrics on 0.0.0.0" in capsys.readouterr().err
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.53"):
        app.check_bind(host, None)
    for host in ("10.0.0.5", "::", "orin.local"):
        with pytest.raises(app.Refused):
            app.check_bind(host, None)


def test_the_token_file_must_be_private_and_long_enough(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o644)
    with pytest.raises(app.Refused, match="chmod 0600"):
        app.read_token(str(path))
    path.chmod(0o600)
    assert app.read_token(str(path)) == TOKEN
    path.write_text("short\n")
    with pytest.raises(app.Refused, match="at least 16"):
        app.read_token(str(path))
    with pytest.raises(app.Refused, match="cannot read"):
        app.read_token(str(tmp_path / "missing"))


# -- the sampler ---------------------------------------------------------------------------------------------------
def test_a_failing_source_is_restarted_and_counted():
    calls = []

    def stream(source, interval_ms):
        calls.append(source)
        if len(calls) == 1:
            raise RuntimeError("tegrastats exited with 1")
        yield board_sample()
        while True:
            time.sleep(0.01)
            yield board_sample()

    sampler = Sampler(0.1, "procfs", stream=stream)
    sampler.backoff_s = 0.01
    sampler.start()
    deadline = time.monotonic() + 3
    while sampler.latest is None and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert sampler.latest is not None and sampler.restarts == 1 and calls[:2] == ["procfs", "procfs"]


# -- the zipapp, with the device's Python ---------------------------------------------------------------------------
def device_python() -> str:
    """Python 3.8 (JetPack 5's python3) when this machine has one, else the running interpreter."""
    for candidate in (os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python"), shutil.which("python3.8")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def test_the_zipapp_runs_with_the_device_python_and_serves_one_scrape(tmp_path):
    pyz = tmp_path / "edgekit-exporter.pyz"
    pyz.write_bytes(bundle.build())
    assert bundle.build() == pyz.read_bytes()                 # the same bytes for the same code
    names = set(zipfile.ZipFile(pyz).namelist())
    assert {"__main__.py", "edgekit/exporter/app.py", "edgekit/telemetry/collector.py", "edgekit/layout.py"} <= names
    files = device_files(tmp_path)
    p = subprocess.run([device_python(), "-I", str(pyz), "--once", "--no-token", "--source", "procfs",
                        "--interval", "0.05", "--env-file", files["env_file"], "--stamp", files["stamp_file"],
                        "--healthy", files["healthy_file"], "--server-url", "http://127.0.0.1:9",
                        "--timeout", "0.5"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    fams = strict_parse(p.stdout)
    assert fams["edgekit_llama_server_up"]["samples"][0][2] == 0 and "edgekit_build_info" in fams
    assert {lab["source"] for _, lab, _ in fams["edgekit_memory_total_bytes"]["samples"]} == {"procfs"}


def test_a_foreign_listener_on_the_servers_port_never_gets_the_key(tmp_path, monkeypatch):
    """The exporter's real fetch against a real listener that is not the service user's (here: no `edgekit` user
    owns it) answering 200 and a redirect: it records every request, and none carried an Authorization header."""
    import getpass
    import http.server
    import threading

    from edgekit import layout
    got: list = []

    class Foreign(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            got.append((self.path, self.headers.get("Authorization")))
            if self.path == "/models":                 # a redirect must not carry the key along either
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/stolen")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        for user in ("nobody", getpass.getuser()):     # a foreign user's socket; then "ours": the key only then
            monkeypatch.setattr(layout, "SERVICE_USER", user)
            app.Exporter(FixedSampler(board_sample()), **device_files(tmp_path), url=url).scrape()
            if user == "nobody":
                assert got and all(auth is None for _, auth in got), got
                assert "/models" not in {p for p, _ in got}    # nothing after /health is asked without the key
                got.clear()
        assert f"Bearer {KEY}" in {auth for _, auth in got} and "/stolen" not in {p for p, _ in got}
    finally:
        server.shutdown()
        server.server_close()


def test_idle_connections_cost_no_thread_and_past_the_cap_the_oldest_goes_with_one_line(tmp_path, monkeypatch):
    """In process, with the cap at 4: 8 idle connections leave the server's threads as they were, 4 of them (the
    oldest) are dropped with one log line each, and a scrape still answers; a client that stalls mid-request is
    cut off after the connection timeout, no traceback."""
    import socket
    monkeypatch.setattr(app.MetricsServer, "MAX_OPEN", 4)
    monkeypatch.setattr(app.MetricsServer, "CONNECTION_TIMEOUT", 0.5)
    lines: list = []
    exporter = app.Exporter(FixedSampler(board_sample()), **device_files(tmp_path), fetch=fake_fetch())
    server = app.MetricsServer("127.0.0.1", 0, exporter, TOKEN, log=lines.append)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(8)]
        deadline = time.monotonic() + 5
        while len(lines) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert threading.active_count() == threads
        assert len(lines) == 4 and all("dropped an idle connection" in line for line in lines), lines
        assert _get(f"{url}/metrics", TOKEN)[0] == 200            # one more idle one dropped for it
        stalled = socket.create_connection(("127.0.0.1", server.server_address[1]))
        stalled.sendall(b"GET /metrics HTTP/1.0\r\n")               # ...and never the rest of the request
        stalled.settimeout(5)
        started = time.monotonic()
        assert stalled.recv(100) == b""                             # cut off after CONNECTION_TIMEOUT
        assert time.monotonic() - started < 3
        assert not any("Traceback" in line for line in lines)
        for s in idle + [stalled]:
            s.close()
    finally:
        server.shutdown()
        server.server_close()
