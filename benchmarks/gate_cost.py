#!/usr/bin/env python3
"""What the build gate adds to a provision that built something: the gate run alone, median of N, on a stand-in.

    sudo python3 benchmarks/gate_cost.py [TARGET] [--repeat 3]      (TARGET default: demo, from `edgekit sandbox demo`)

Runs the gate (the build's own llama-server in the service's sandbox, a tiny GGUF, 8 tokens, stop) on the
target's current build N times through the real transport, and sets its median against that build's compile
time from its stamp. Writes benchmarks/results/gate-cost.json. The stand-in shares this machine's 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit import layout as L  # noqa: E402
from edgekit.llamacpp.gate import run_gate  # noqa: E402
from edgekit.llamacpp.current import gate_run_for  # noqa: E402
from edgekit.remote.plan import Context  # noqa: E402
from edgekit.remote.target import parse_target  # noqa: E402
from edgekit.remote.transport import Transport  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", nargs="?", default="demo")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gate-cost.json")
    args = ap.parse_args()
    with Transport(parse_target(args.target)) as t:
        prefix = t.run(f"readlink -f {L.CURRENT}").stdout.strip()
        stamp = json.loads(t.run(f"cat {prefix}/{L.STAMP_NAME}").stdout)
        ctx = Context(t)
        run = gate_run_for(ctx, f"bench-{prefix.rsplit('/', 1)[-1]}", prefix, stamp.get("backend") == "cuda")
        runs = []
        for _ in range(args.repeat):
            start = time.monotonic()
            verdict = run_gate(t, run)
            runs.append(round(time.monotonic() - start, 2))
            if not verdict.ok:
                print(f"gate failed: {verdict.reason}", file=sys.stderr)
                return 1
    median = statistics.median(runs)
    compile_s = stamp.get("duration_s") or 0
    result = {"target": args.target, "build": prefix.rsplit("/", 1)[-1], "cpu_level": stamp.get("cpu_level"),
              "gate_seconds": runs, "gate_median_s": median, "build_compile_s": compile_s,
              "gate_share_of_compile": round(median / compile_s, 4) if compile_s else None,
              "note": "stand-in and controller share one 2-core machine"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
