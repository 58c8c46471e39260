#!/usr/bin/env python3
"""Switching models in router mode vs restarting a single-model llama-server, on one stand-in, side by side.

    python benchmarks/router_switch.py [--repeats 5] [--json benchmarks/results/router-switch.json]

Brings up a stand-in (b-router), serves gemma3-270m and SmolLM2-135M-Instruct (the test models from PyPI) from a
local Hub-like nginx, provisions both into one service in router mode with --models-max 1 (the real CLI), then,
interleaved per repeat:
  switch   a chat request to the model that is not loaded (the router unloads the other, loads it, answers)
  same     the same request again, to the now loaded model (no load: the request alone)
  restart  what one model per service costs instead: that model's llama-server started fresh (systemd-run, the
           same build, threads and context as the router's child), /health waited for, the same request answered
Every request asks for 8 tokens at temperature 0. The client is the device itself (probe over loopback), so no
network is timed. Stand-in, nginx and this script share this machine's cores: the figures are for this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit import layout as L  # noqa: E402
from edgekit.remote.command import sh  # noqa: E402
from edgekit.remote.target import parse_target  # noqa: E402
from edgekit.remote.transport import Transport  # noqa: E402
from edgekit.sandbox import standin  # noqa: E402
from edgekit.service import probe  # noqa: E402
from tests.modelserver import ModelServer, _free_port  # noqa: E402
from tests.served import GEMMA_FILE, GEMMA_REPO  # noqa: E402

TEST_CACHE = Path("/var/cache/edgekit/test")
MODELS = {"gemma3-270m": (GEMMA_REPO, GEMMA_FILE), "smollm2-135m-instruct": (
    "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")}
BODY = {"max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": "Say hi."}]}


def _ask(t, url: str, key: str, model: str) -> float:
    start = time.monotonic()
    code, body = probe.request(t, url + "/v1/chat/completions", {**BODY, "model": model}, key=key, timeout=300)
    assert code == 200, body
    return time.monotonic() - start


def _restart(t, model: str, key: str) -> float:
    """A fresh single-model llama-server for `model`: start, /health 200, one answer; then stopped."""
    path = t.sudo(f"grep -A1 '^\\[{model}\\]' {L.PRESET_PATH} | sed -n 's/^model = //p'").stdout.strip()
    port, unit = 18080, "edgekit-bench-restart"
    start = time.monotonic()
    t.sudo(sh("systemd-run", f"--unit={unit}", "--quiet", "--", f"{L.CURRENT}/bin/llama-server", "--model", path,
              "--host", "127.0.0.1", "--port", str(port), "--ctx-size", "1024", "--threads", "2", "--parallel", "2"))
    try:
        while probe.request(t, f"http://127.0.0.1:{port}/health", timeout=5)[0] != 200:
            time.sleep(0.05)
        code, body = probe.request(t, f"http://127.0.0.1:{port}/v1/chat/completions", BODY, timeout=300)
        assert code == 200, body
        return time.monotonic() - start
    finally:
        t.sudo(f"systemctl stop {unit}; systemctl reset-failed {unit} 2>/dev/null; true", check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "router-switch.json"))
    args = ap.parse_args()
    src = next((TEST_CACHE / "src").glob("llama_cpp_python-*.tar.gz"))
    work = Path(tempfile.mkdtemp(prefix="router-bench-"))
    (work / "models").mkdir()
    server = ModelServer(work / "models", _free_port())
    server.start()
    sb = standin.up("b-router")
    os.environ["EDGEKIT_SSH_CONFIG"] = str(sb.ssh_config)       # this process's transport too
    env = {**os.environ, "EDGEKIT_HOME": str(work / "home")}
    try:
        for name, (repo, file) in MODELS.items():
            server.add(repo, file, TEST_CACHE / file)
        names = list(MODELS)
        res = subprocess.run([sys.executable, "-m", "edgekit", "provision", sb.name, "-m", names[0], "-m", names[1],
                              "--models-max", "1", "--ctx", "1024", "--llama-src", str(src), "--cpu", "--threads", "2",
                              "--hf-endpoint", server.endpoint(sb.host_address), "--fetch-on", "device",
                              "--allow-unpinned", "--no-metrics"], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        state = json.loads((work / "home" / "targets" / f"{sb.name}.json").read_text())
        key = Path(state["api_key_file"]).read_text().strip()
        with Transport(parse_target(sb.name)) as t:
            url = "http://127.0.0.1:8080"
            _ask(t, url, key, names[0])                                    # the first one loaded
            runs = {"switch": [], "same": [], "restart": []}
            for i in range(args.repeats):
                other = names[(i + 1) % 2]
                runs["switch"].append(_ask(t, url, key, other))
                runs["same"].append(_ask(t, url, key, other))
                runs["restart"].append(_restart(t, other, key))
    finally:
        standin.down(sb.name)
        server.stop()
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {"what": "router switch vs single-model restart, 8-token answer, stand-in (2 cores shared)",
              "repeats": args.repeats, "seconds": runs, "median_s": med,
              "restart_over_switch": round(med["restart"] / med["switch"], 2), "load": os.getloadavg(),
              "cpus": os.cpu_count()}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    for k, v in med.items():
        print(f"{k:8s} median {v:.2f} s  ({', '.join(f'{x:.2f}' for x in runs[k])})")
    print(f"restart / switch = {result['restart_over_switch']}  -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
