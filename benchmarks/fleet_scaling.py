#!/usr/bin/env python3
"""Wall time to provision 3 stand-ins vs 1 with one `edgekit provision` (goal: 3 hosts <= 1.3x one host).

Each repetition boots fresh stand-ins and a fresh controller state (no packed build in the controller cache), so
every run builds llama.cpp once (on the shared, warm ccache, as a fleet's second device kind would) and the
3-host run pushes the packed build to the other two. Runs alternate 1 host / 3 hosts; medians and the ratio are
printed. Needs root, the stand-in tooling (.ci/setup), and the llama-cpp-python sdist and gemma model caches
that the tests create.

    sudo python3 benchmarks/fleet_scaling.py [--reps 3]
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

from edgekit.llamacpp.spec import SDIST_FILE
from edgekit.sandbox import standin

CACHE = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/var/cache/edgekit/test"))
SDIST = CACHE / "src" / SDIST_FILE
MODEL = CACHE / "gemma3-270m-q4_k_m.gguf"


def provision(names: list[str]) -> tuple[float, dict]:
    home = Path(tempfile.mkdtemp(prefix="ek-bench-home-"))
    config = home / "ssh_config"
    config.write_text("\n".join(standin.get(n).ssh_config.read_text() for n in names))
    env = {**os.environ, "EDGEKIT_HOME": str(home), "EDGEKIT_SSH_CONFIG": str(config)}
    cmd = [sys.executable, "-m", "edgekit", "provision", *names, "--model", "gemma3-270m", "--model-url", str(MODEL),
           "--fetch-on", "controller", "--llama-src", str(SDIST), "--cpu", "--threads", "1", "--json"]
    if len(names) == 1:
        cmd.insert(4, "@all")  # fleet mode for one host too, so both runs take the same path
        cmd.remove(names[0])
        (home / "edgekit.toml").write_text(f'[hosts.{names[0]}]\n')
        cmd += ["--inventory", str(home / "edgekit.toml")]
    start = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"provision failed:\n{res.stderr[-3000:]}")
    return took, json.loads(res.stdout)


def run(n: int, rep: int) -> tuple[float, dict]:
    names = [f"b-fleet{rep}-{i}" for i in range(n)]
    for name in names:
        standin.up(name)
    try:
        return provision(names)
    finally:
        for name in names:
            standin.down(name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    one, three = [], []
    for rep in range(args.reps):
        t1, _ = run(1, rep)
        t3, out = run(3, rep)
        one.append(t1)
        three.append(t3)
        builds = {k: v["seconds"] for k, v in out["builds"].items()}
        print(f"rep {rep + 1}: 1 host {t1:.1f}s, 3 hosts {t3:.1f}s (ratio {t3 / t1:.2f}; build {builds})", flush=True)
    m1, m3 = statistics.median(one), statistics.median(three)
    print(f"median: 1 host {m1:.1f}s, 3 hosts {m3:.1f}s -> 3-host/1-host wall time ratio {m3 / m1:.2f} "
          f"(goal <= 1.3)")


if __name__ == "__main__":
    main()
