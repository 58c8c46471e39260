"""`edgekit telemetry` against a stand-in over real SSH: no jtop, no tegrastats -> /proc, and it says so."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_telemetry_json_falls_back_to_procfs_and_says_why(standin):
    out = run_cli("telemetry", standin.name, "--json", "--duration", "1.5", "--interval", "0.5", timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    head, samples = lines[0], lines[1:]
    assert head["kind"] == "source" and head["source"] == "procfs"
    assert "jtop: not installed - sudo pip3 install -U jetson-stats" in head["why"]
    assert any(w.startswith("tegrastats: not found") for w in head["why"])
    assert "telemetry source: procfs" in out.stderr and "jetson-stats" in out.stderr
    assert len(samples) >= 2
    for s in samples:
        assert s["source"] == "procfs"
        assert s["gpu_load_pct"] is None and s["power_total_mw"] is None and s["emc_load_pct"] is None
        assert 0 < s["ram_used_mb"] < s["ram_total_mb"]
        assert all(c is None or 0 <= c <= 100 for c in s["cpu_load_pct"])


def test_telemetry_prometheus_once(standin):
    out = run_cli("telemetry", standin.name, "--prometheus", timeout=120)
    assert out.returncode == 0, out.stderr
    assert f'edgekit_memory_total_bytes{{device="{standin.name}"}}' in out.stdout
    assert 'source="procfs"' in out.stdout and "edgekit_gpu_load_percent" not in out.stdout


def test_telemetry_unknown_host_is_a_connect_error():
    out = run_cli("telemetry", "jetson@127.0.0.1:1", "--json", "--duration", "1", timeout=60)
    assert out.returncode == 3 and "hint:" in out.stderr
