"""`edgekit bench TARGET --sweep power-mode` end to end on a stand-in with Orin Nano 8GB identity (L4T R36.4.3) and
NVIDIA's captured nvpmodel.conf with the Super modes: 15W (id 0), 25W (id 1, the conf's default), MAXN_SUPER (id 2).
nvpmodel and jetson_clocks are the stand-in scripts (edgekit/sandbox/jetson_tools, planted by `sandbox up --jetson`
at /usr/sbin/nvpmodel and /usr/bin/jetson_clocks); llama-server (CPU build, gemma3-270m), systemd, sudo, SSH and
the telemetry (procfs: no power rails, no GPU clocks) are real. One row per mode; the original mode is back after
the sweep, and after a Ctrl-C in the middle of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.served import GEMMA_FILE, GEMMA_REPO, gemma_gguf  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def board(standin_factory, model_server, gemma_gguf, llama_src, tmp_path_factory, session_dir):  # noqa: F811
    sb = standin_factory("t-sweep", jetson="orin-nano-8gb")
    model_server.add(GEMMA_REPO, GEMMA_FILE, gemma_gguf)
    home = tmp_path_factory.mktemp("sweep-home")
    env = {**os.environ, "EDGEKIT_HOME": str(home), "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config"),
           "COLUMNS": "200"}

    def ssh(command: str) -> str:
        return subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, command], capture_output=True, text=True,
                              timeout=60).stdout.strip()

    assert ssh("test -x /usr/sbin/nvpmodel && test -x /usr/bin/jetson_clocks && test -f /etc/nvpmodel.conf && "
               "echo planted") == "planted", "the Jetson stand-in lacks the stand-in nvpmodel/jetson_clocks"
    res = subprocess.run([sys.executable, "-m", "edgekit", "provision", sb.name, "-m", "gemma3-270m", "--llama-src",
                          str(llama_src), "--cpu", "--hf-endpoint", model_server.endpoint(sb.host_address),
                          "--fetch-on", "device", "--allow-unpinned", "--threads", "2", "--port", "8080",
                          "--no-metrics"], capture_output=True, text=True, env=env, timeout=3600)
    assert res.returncode == 0, f"provision failed:\n{res.stderr[-4000:]}"
    return {"sb": sb, "env": env, "ssh": ssh,
            "sweep": [sys.executable, "-m", "edgekit", "bench", sb.name, "--sweep", "power-mode"]}


def mode(board) -> str:
    return board["ssh"]("/usr/sbin/nvpmodel -q | head -1")


def test_the_dry_run_checks_prints_the_plan_and_changes_nothing(board, tmp_path):
    state = ("/usr/sbin/nvpmodel -q | head -1; cat /var/lib/nvpmodel/status; ls /run/systemd/system/ 2>&1; "
             "systemctl show -p MainPID edgekit-llama-server")
    before = board["ssh"](state)
    out = tmp_path / "results"                   # not made beforehand: the dry run must not make it either
    res = subprocess.run(board["sweep"] + ["--server-cpus", "0", "--out", str(out), "--dry-run", "--json"],
                         capture_output=True, text=True, env=board["env"], timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    plan = json.loads(res.stdout)
    device = [c for c in plan["commands"] if not c.startswith("check: ")]
    assert [c for c in device if c.startswith("nvpmodel")] == ["nvpmodel -m 0 </dev/null", "nvpmodel -m 1 </dev/null",
                                                               "nvpmodel -m 2 </dev/null", "nvpmodel -m 1 </dev/null"]
    assert device[0] == "mkdir -p /run/systemd/system/edgekit-llama-server.service.d"
    assert device[-1] == "systemctl restart edgekit-llama-server.service"
    assert board["ssh"](state) == before and not out.exists(), "a dry run changes nothing, saves nothing"


def test_one_row_per_mode_and_the_original_mode_restored(board, tmp_path):
    assert mode(board) == "NV Power Mode: 25W"
    res = subprocess.run(board["sweep"] + ["--out", str(tmp_path), "--json"], capture_output=True, text=True,
                         env=board["env"], timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    shown = json.loads(res.stdout)
    sweep = shown["sweep"]
    assert [(r["value"], r["mode_id"]) for r in sweep["rows"]] == [("15W", 0), ("25W", 1), ("MAXN_SUPER", 2)]
    for row in sweep["rows"]:
        assert row["complete"] and not row["error"] and not row["skipped"] and row["failed_requests"] == 0, row
        assert row["pp_tps"] > 0 and row["tg_tps"] > 0 and row["pp_case"] and row["tg_case"]
        assert row["power_mean_w"] is None and row["power_peak_w"] is None and row["j_per_token"] is None
        assert row["settle"]["stable"] is None and "no GPU or EMC clock" in row["settle"]["why"]
        assert row["settle"]["waited_s"] >= 3.0
    assert sweep["original"]["name"] == "25W" and sweep["restored"] and sweep["restore_commands"][0] == \
        "nvpmodel -m 1 </dev/null"
    assert mode(board) == "NV Power Mode: 25W" and board["ssh"]("cat /var/lib/nvpmodel/status") == "pmode:0001"
    assert "restored the original power mode 25W (id 1)" in res.stderr
    saved = Path(shown["files"]["json"])
    result = json.loads(saved.read_text())
    assert result["kind"] == "sweep" and result["complete"] and len(result["runs"]) == 3
    assert [run["facts"]["jetson"]["power_mode"] for run in result["runs"]] == ["15W", "25W", "MAXN_SUPER"]
    if shown["files"]["png"].endswith(".png"):
        assert Path(shown["files"]["png"]).read_bytes()[:4] == b"\x89PNG"
    compare = subprocess.run([sys.executable, "-m", "edgekit", "bench-compare", str(saved), str(saved), "--json"],
                             capture_output=True, text=True, env=board["env"], timeout=120)
    assert compare.returncode == 0, compare.stderr
    rows = {r["metric"]: r for r in json.loads(compare.stdout)["rows"]}
    assert rows["MAXN_SUPER gen tok/s"]["change_pct"] == 0.0 and rows["15W prompt tok/s"]["value"] == "15W"


def test_ctrl_c_during_the_sweep_restores_the_original_mode(board, tmp_path):
    assert mode(board) == "NV Power Mode: 25W"
    proc = subprocess.Popen(board["sweep"] + ["--out", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=board["env"])
    try:
        deadline = time.monotonic() + 300
        while mode(board) == "NV Power Mode: 25W":          # the sweep starts at 15W: wait for the switch
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        time.sleep(2)                                        # settling or measuring 15W now
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert mode(board) == "NV Power Mode: 25W" and board["ssh"]("cat /var/lib/nvpmodel/status") == "pmode:0001"
    assert "restored the original power mode 25W (id 1)" in err and "interrupted" in err
    saved = list(tmp_path.glob("bench-sweep-power-mode-*.json"))
    assert len(saved) == 1 and f"partial results saved in {saved[0]}" in " ".join(err.split())
    partial = json.loads(saved[0].read_text())
    assert not partial["complete"] and partial["errors"] == ["interrupted (Ctrl-C)"] and partial["sweep"]["restored"]
    assert len(partial["sweep"]["rows"]) < 3
