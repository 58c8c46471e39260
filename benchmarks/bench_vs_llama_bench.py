#!/usr/bin/env python3
"""Serve a model with a llama.cpp build on THIS machine and run `edgekit bench local --llama-bench` against it.

For the lent GPU machine (one prepared script, minutes of device time) or any box with a build:

    python benchmarks/bench_vs_llama_bench.py --bin /opt/edgekit/llama.cpp/current/bin \\
        --model model.gguf --ngl 99 --out benchmarks/results/gpu

It starts llama-server (--parallel = the workload's highest concurrency, enough context for every case),
waits for /health, runs the versioned workload plus llama-bench with the same model/threads/ngl through the
real CLI, prints the side-by-side table, and stops the server. Exit code is edgekit's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.bench.workload import DEFAULT, QUICK  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="folder with llama-server and llama-bench")
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--ngl", default=None, help="GPU layers (e.g. 99); leave out for CPU")
    ap.add_argument("--port", type=int, default=8089)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bandwidth", type=float, default=None, help="GB/s, for the decode ceiling")
    args = ap.parse_args()

    workload = QUICK if args.quick else DEFAULT
    parallel = max(workload.concurrency_levels)
    per_slot = max(workload.needed_ctx(c) for c in workload.cases())
    key = secrets.token_urlsafe(16)
    cmd = [os.path.join(args.bin, "llama-server"), "-m", args.model, "--host", "127.0.0.1", "--port", str(args.port),
           "--parallel", str(parallel), "-c", str(parallel * per_slot), "--api-key", key]
    if args.threads:
        cmd += ["-t", str(args.threads)]
    if args.ngl is not None:
        cmd += ["-ngl", str(args.ngl)]
    log = open(os.devnull, "w")
    print("$", " ".join(c if c != key else "***" for c in cmd), flush=True)
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        if server.poll() is not None:
            print(f"llama-server exited with {server.returncode}", file=sys.stderr)
            return 1
        bench = [sys.executable, "-m", "edgekit", "bench", "local", "--url", f"http://127.0.0.1:{args.port}",
                 "--api-key", key, "--llama-bench", "--out", args.out]
        if args.quick:
            bench.append("--quick")
        if args.bandwidth:
            bench += ["--bandwidth", str(args.bandwidth)]
        return subprocess.run(bench, cwd=REPO).returncode
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
