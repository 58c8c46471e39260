"""End to end: models pulled onto stand-in devices from a real Hub-like nginx, verified by sha256."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.modelserver import GEMMA_SHA

pytestmark = pytest.mark.e2e
REPO = "unsloth/gemma-3-270m-it-GGUF"
FILE = "gemma3-270m-q4_k_m.gguf"


def _pull(standin, endpoint, *extra):
    return run_cli("models", "pull", "gemma3-270m", "--allow-unpinned", "--target", standin.name, "--hf-endpoint", endpoint,
                   "--json", *extra, env={"EDGEKIT_SSH_CONFIG": str(standin.ssh_config)})


def test_pull_on_device_then_noop(standin_factory, model_server, gemma_file):
    sb = standin_factory("t-models")
    model_server.add(REPO, FILE, gemma_file)
    endpoint = model_server.endpoint(sb.host_address)
    first = _pull(sb, endpoint, "--fetch-on", "device")
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["model"]["sha256"] == GEMMA_SHA and out["model"]["size"] == 253_113_024
    assert out["model"]["path"] == f"/opt/edgekit/models/gemma3-270m/{FILE}"
    assert out["transfer"]["mode"] == "device" and out["transfer"]["downloaded"] == 253_113_024
    second = _pull(sb, endpoint, "--fetch-on", "device")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["transfer"] is None and [r["status"] for r in again["results"]] == ["ok", "ok"]


def test_controller_cache_fetches_once_and_pushes_to_two(standin_factory, model_server, gemma_file):
    a, b = standin_factory("t-models"), standin_factory("t-models2")
    served = model_server.add(REPO, FILE, gemma_file)
    endpoint = model_server.endpoint("127.0.0.1")      # the controller downloads; the devices never reach it
    sent_before = model_server.bytes_sent(served.url_path)
    for sb in (a, b):
        r = run_cli("models", "pull", "gemma3-270m", "--allow-unpinned", "--target", sb.name, "--hf-endpoint", endpoint,
                    "--fetch-on", "controller", "--json", env={"EDGEKIT_HOME": str(_shared_home(sb))})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["model"]["sha256"] == GEMMA_SHA
    # one download of 253 MB in all (the first pull; the second found the verified cache)
    assert model_server.bytes_sent(served.url_path) - sent_before == 253_113_024
    r = run_cli("models", "pull", "gemma3-270m", "--allow-unpinned", "--target", b.name, "--hf-endpoint", endpoint,
                "--fetch-on", "controller", "--json", env={"EDGEKIT_HOME": str(_shared_home(b))})
    assert r.returncode == 0 and json.loads(r.stdout)["transfer"] is None
    assert model_server.bytes_sent(served.url_path) - sent_before == 253_113_024


_HOME = {}


def _shared_home(sb):
    """Both pulls share one controller cache (one EDGEKIT_HOME), as one operator's laptop would."""
    import tempfile
    from pathlib import Path

    return _HOME.setdefault("home", Path(tempfile.mkdtemp(prefix="edgekit-home-")))


def test_device_download_killed_half_way_resumes(standin_factory, model_server, gemma_file):
    """Kill the device-side downloader for real (by its pid, over SSH), then pull again: it resumes."""
    import subprocess
    import sys
    import time

    sb = standin_factory("t-models")
    served = model_server.add("acme/gemma-slow", FILE, gemma_file)
    slow = model_server.endpoint(sb.host_address, slow=True)
    partial = f"/opt/edgekit/models/gemma3-270m/{FILE}.partial"
    ssh = ["ssh", "-F", str(sb.ssh_config), sb.name]
    subprocess.run(ssh + ["sudo rm -rf /opt/edgekit/models/gemma3-270m"], check=True)
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", "models", "pull", "gemma3-270m", "--allow-unpinned", "--target",
                             sb.name, "--url", f"{slow}{served.url_path}", "--sha256", GEMMA_SHA,
                             "--fetch-on", "device"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    size, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline and size < served.size // 3:
        out = subprocess.run(ssh + [f"stat -c %s {partial} 2>/dev/null || echo 0"], capture_output=True, text=True)
        size = int(out.stdout.strip() or 0)
        time.sleep(0.2)
    holders = (f"for p in /proc/[0-9]*; do ls -l $p/fd 2>/dev/null | grep -q {partial} && echo ${{p#/proc/}}; "
               "done; true")   # the pid(s) holding the .partial open, like fuser
    pid = subprocess.run(ssh + [holders], capture_output=True, text=True).stdout.split()
    assert pid, "the downloader should hold the .partial open"
    subprocess.run(ssh + ["kill -9 " + " ".join(pid)], check=True)     # killed by its own pid, on the device
    proc.wait(30)
    cut = int(subprocess.run(ssh + [f"stat -c %s {partial}"], capture_output=True, text=True).stdout)
    assert 0 < cut < served.size
    r = run_cli("models", "pull", "gemma3-270m", "--allow-unpinned", "--target", sb.name, "--url",
                f"{model_server.endpoint(sb.host_address)}{served.url_path}", "--sha256", GEMMA_SHA,
                "--fetch-on", "device", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["transfer"]["resumed_from"] >= cut and out["model"]["sha256"] == GEMMA_SHA
    assert out["transfer"]["downloaded"] == served.size - out["transfer"]["resumed_from"]
