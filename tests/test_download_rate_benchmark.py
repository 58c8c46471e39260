"""benchmarks/download_rate.py with --baseline: an older edgekit's downloader (its own package, from git) and
today's both download a small file from the loopback nginx; the paired ratio comes out with its spread."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# the last revision with edgekit/models/device_fetch.py (the downloader's older API)
OLD_API = "66b7600~1"


def test_paired_ratio_median_and_spread():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from download_rate import paired
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    got = paired([100.0, 110.0, 90.0, 120.0], [100.0, 100.0, 100.0, 100.0])
    assert got == {"ratios": [0.9, 1.0, 1.1, 1.2], "median": 1.05, "min": 0.9, "max": 1.2, "middle_half": [1.0, 1.1],
                   "verdict": "within noise"}
    assert paired([130.0, 120.0, 125.0, 140.0], [100.0] * 4)["verdict"] == "beyond the spread"


@pytest.mark.needs("nginx", "git")
def test_baseline_runs_an_older_downloader_against_todays(tmp_path):
    small = tmp_path / "model.gguf"
    small.write_bytes(os.urandom(3 << 20))
    out = tmp_path / "rate.json"
    r = subprocess.run([sys.executable, "benchmarks/download_rate.py", "--runs", "2", "--file", str(small),
                        "--baseline", OLD_API, "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    assert set(data["median_mb_per_s"]) == {"edgekit", "curl", "baseline"}
    pair = data["edgekit_over_baseline_paired"]
    assert len(pair["ratios"]) == 2 and pair["min"] <= pair["median"] <= pair["max"] and pair["median"] > 0
    assert "edgekit/baseline (" in r.stdout and "paired per round: median" in r.stdout
