"""The device-side collector as it runs on a device: a zipapp under the oldest Python we support, real /proc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekit.remote import helper
from edgekit.telemetry.collector import choose_source, read_power_mode, server_rss_mb
from edgekit.telemetry.remote import TelemetrySource, Stream
from tests.fixtures import captured as cap


def _python38() -> str:
    """Python 3.8 (JetPack 5's python3) when this machine has one, else the running interpreter."""
    for candidate in (os.path.expanduser("~/.pyenv/versions/3.8.18/bin/python"), shutil.which("python3.8")):
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return sys.executable


@pytest.fixture
def agent(tmp_path) -> Path:
    path = tmp_path / "helper.pyz"
    path.write_bytes(helper.build())      # the collector runs on the device as the helper's `telemetry`
    return path


def _run(agent: Path, *args: str, env: dict | None = None) -> Stream:
    out = subprocess.run([_python38(), str(agent), "telemetry", *args], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr
    stream = Stream()
    for line in out.stdout.splitlines():
        stream.feed(line)
    assert not stream.noise and not stream.errors
    return stream


@pytest.mark.needs("not-a-jetson")
def test_choose_source_explains_every_missing_source(tmp_path):
    def no_jtop(name):
        raise ImportError(name)

    source, why = choose_source(1000, importer=no_jtop)
    assert source == "procfs"
    assert why[0] == "jtop: not installed - sudo pip3 install -U jetson-stats"
    assert why[1].startswith("tegrastats: not found")
    assert "no GPU, EMC or power" in why[2]


@pytest.mark.needs("not-a-jetson")
def test_choose_source_jtop_installed_but_service_down():
    source, why = choose_source(1000, importer=lambda name: object())
    assert source != "jtop"
    assert "systemctl enable --now jtop.service" in why[0]


def test_agent_on_procfs_streams_samples_and_says_why(agent):
    stream = _run(agent, "--interval", "200", "--count", "3")
    assert stream.source.source == "procfs"
    assert any("jtop: not installed" in w for w in stream.source.why)
    assert len(stream.samples) == 3
    cpus = os.cpu_count()
    for s in stream.samples:
        assert s.source == "procfs" and s.time is not None
        assert s.gpu_load_pct is None and s.power_total_mw is None and s.emc_load_pct is None
        assert 0 < s.ram_used_mb < s.ram_total_mb
        assert len(s.cpu_load_pct) >= 1 and len(s.cpu_load_pct) <= (cpus or 1024)
        assert all(c is None or 0 <= c <= 100 for c in s.cpu_load_pct)
    assert stream.samples[0].time < stream.samples[-1].time


def test_agent_reports_llama_server_rss(agent, tmp_path):
    fake = tmp_path / "llama-server"          # any real process whose name is llama-server
    shutil.copy(shutil.which("sleep"), fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        deadline = time.time() + 5
        while server_rss_mb() is None and time.time() < deadline:
            time.sleep(0.05)
        assert server_rss_mb() > 0
        stream = _run(agent, "--interval", "100", "--count", "1")
        assert stream.samples[0].server_rss_mb > 0
    finally:
        proc.kill()
        proc.wait()


def test_agent_tegrastats_source_replaying_a_captured_line(agent, tmp_path):
    """A `tegrastats` on PATH that replays a real Orin Nano line: the collector picks it over /proc."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tegrastats"
    script.write_text("#!/bin/sh\nwhile true; do echo '" + cap.TEGRASTATS_ORIN_NANO_JP6_LOAD + "'; sleep 0.1; done\n")
    script.chmod(0o755)
    stream = _run(agent, "--interval", "100", "--count", "2", env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert stream.source.source == "tegrastats"
    assert [s.gpu_load_pct for s in stream.samples] == [99.0, 99.0]
    assert stream.samples[0].power_total_mw == 16321.0
    # the tegrastats child is gone once the collector exits
    left = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True).stdout.split()
    assert left == []


def test_stream_feed_tolerates_noise_and_moves_clock():
    stream = Stream()
    assert stream.feed("Warning: something on stderr") is None
    assert isinstance(stream.feed(json.dumps({"kind": "source", "source": "procfs", "why": ["x"]})), TelemetrySource)
    sample = stream.feed(json.dumps({"source": "procfs", "time": 100.0, "ram_used_mb": 1}), offset=2.5)
    assert sample.time == 97.5 and stream.noise == ["Warning: something on stderr"]


def test_power_mode_is_read_with_the_facts_parser(tmp_path, monkeypatch):
    # the agent parses `nvpmodel -q` with edgekit.facts.jetson.PowerMode (shipped in the zipapp), not a copy
    nvpmodel = tmp_path / "nvpmodel"
    nvpmodel.write_text("#!/bin/sh\nprintf 'NV Power Mode: MAXN_SUPER\\n2\\n'\n")
    nvpmodel.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert read_power_mode() == "MAXN_SUPER"
    nvpmodel.write_text("#!/bin/sh\necho 'nvpmodel: not supported'\n")
    assert read_power_mode() is None
