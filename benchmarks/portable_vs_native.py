#!/usr/bin/env python3
"""What edgekit's portable CPU build costs against a native one, on THIS machine (where native runs).

    sudo python3 benchmarks/portable_vs_native.py [--sdist PATH] [--model GGUF] [--rounds 3]

Builds the pinned llama.cpp twice from the same source with edgekit's own cmake flags (edgekit.llamacpp.cmake),
once with `-DGGML_NATIVE=ON` and once at the CPU level edgekit picks for this machine (edgekit.facts.isa), both
cold (ccache disabled), the targets edgekit builds, `-j` = CPUs. Then llama-bench (pp512, tg128) on the same
model, the two builds interleaved for `--rounds` rounds, the same threads; medians. Writes
benchmarks/results/portable-vs-native.json. Client and llama-bench share this machine's cores with nothing else
of ours (run it on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.llamacpp import spec as S  # noqa: E402
from edgekit.llamacpp.cmake import plan_build  # noqa: E402
from edgekit.llamacpp.source import resolve_source  # noqa: E402
from edgekit.facts.base import gather  # noqa: E402
from edgekit.facts.device import ALL_FACTS, derive  # noqa: E402

SDIST = Path("/var/cache/edgekit/test/src") / S.SDIST_FILE
MODEL = Path("/var/cache/edgekit/test/gemma3-270m-q4_k_m.gguf")


def local_facts():
    raw = gather(lambda script: subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout,
                 ALL_FACTS)
    return derive("local", raw)


def build(src: Path, out: Path, defines: list[str], jobs: int) -> float:
    env = {**os.environ, "CCACHE_DISABLE": "1"}
    subprocess.run(["cmake", "-S", str(src), "-B", str(out), "-G", "Ninja", *defines], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    start = time.monotonic()
    subprocess.run(["cmake", "--build", str(out), "--target", *S.TARGETS, "-j", str(jobs)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.monotonic() - start


def bench(bindir: Path, model: Path, threads: int) -> dict:
    res = subprocess.run([str(bindir / "llama-bench"), "-m", str(model), "-p", "512", "-n", "128", "-r", "1",
                          "-t", str(threads), "-o", "json"], capture_output=True, text=True, check=True)
    rows = json.loads(res.stdout)
    return {("pp512" if r["n_prompt"] else "tg128"): r["avg_ts"] for r in rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdist", type=Path, default=SDIST)
    ap.add_argument("--model", type=Path, default=MODEL)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/edgekit-pvn"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "portable-vs-native.json")
    args = ap.parse_args()
    facts = local_facts()
    source = resolve_source(S.BuildSpec(source=str(args.sdist)))
    src = args.work / "src"
    if not (src / "CMakeLists.txt").is_file():
        args.work.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.sdist) as tar:
            inner = source.inner
            members = [m for m in tar.getmembers() if m.name.startswith(inner + "/")]
            for m in members:
                m.name = m.name[len(inner) + 1:]
            tar.extractall(src, members=[m for m in members if m.name], filter="data")
    threads = facts.cpus or 2
    variants = {}
    for name, level in (("native", "native"), ("portable", None)):
        plan = plan_build(facts, S.BuildSpec(source=str(args.sdist), cpu_only=True, cpu_level=level), source)
        defines = [d for d in plan.defines if not d.startswith("-DGGML_CCACHE")] + ["-DGGML_CCACHE=OFF"]
        out = args.work / f"build-{name}"
        seconds = build(src, out, defines, threads)
        variants[name] = {"cpu_level": plan.cpu_level or "native", "compile_s": round(seconds, 1),
                          "defines": [d for d in defines if "GGML_" in d], "bin": out / "bin", "runs": []}
        print(f"{name}: {plan.cpu_level or 'native'}, cold compile {seconds:.0f} s", flush=True)
    for _ in range(args.rounds):
        for name, v in variants.items():
            v["runs"].append(bench(v["bin"], args.model, threads))
    result = {"machine": {"cpu": (facts.cpu or {}).get("model"), "arch": facts.arch, "cpus": facts.cpus,
                          "notable_flags": sorted(f for f in facts.cpu_flags if f.startswith(("avx", "amx")))},
              "model": args.model.name, "threads": threads, "rounds": args.rounds, "variants": {}}
    for name, v in variants.items():
        med = {k: statistics.median(r[k] for r in v["runs"]) for k in ("pp512", "tg128")}
        result["variants"][name] = {"cpu_level": v["cpu_level"], "compile_s": v["compile_s"], "median_ts": med,
                                    "runs": v["runs"], "defines": v["defines"]}
    nat, por = result["variants"]["native"], result["variants"]["portable"]
    result["ratio_portable_over_native"] = {k: round(por["median_ts"][k] / nat["median_ts"][k], 3)
                                            for k in ("pp512", "tg128")}
    result["compile_ratio"] = round(por["compile_s"] / nat["compile_s"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("machine", "ratio_portable_over_native", "compile_ratio")}, indent=2))
    for name, v in result["variants"].items():
        print(f"{name:9s} {v['cpu_level']:10s} compile {v['compile_s']:6.0f} s  pp512 {v['median_ts']['pp512']:8.1f}"
              f"  tg128 {v['median_ts']['tg128']:6.1f} t/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
