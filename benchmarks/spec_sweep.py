#!/usr/bin/env python3
"""Speculative decoding on a stand-in: `edgekit bench --sweep spec=off,draft,ngram`, and a copy-heavy prompt.

    python benchmarks/spec_sweep.py [--rounds 5] [--json benchmarks/results/spec-sweep.json]

Brings up a stand-in (b-spec), serves SmolLM2-135M-Instruct re-expanded to F16 (tests/test_spec_e2e.py's
expand_to_f16, 271 MB) with its Q4_1 file (98 MB, same tokenizer) as the draft, provisioned by the real CLI; then per
round (values interleaved inside each round):
  sweep   `edgekit bench b-spec --sweep spec=off,draft,ngram --server-cpus 0 --client-cpus 1 --json`: the quick
          workload (random-token prompts of 128 and 512, 32 generated tokens, concurrency 1 and 2) per value; the
          row's pp/tg tok/s (server timings, concurrency 1), TTFT (client clock) and draft acceptance
  copy    a copy-heavy request per value (a 30-line function and "repeat it with the name changed"), 96 tokens,
          greedy, from this machine pinned to CPU 1 while the server is pinned to CPU 0 (sweep.apply_env + pinning)
Medians over the rounds with the spread (min-max). Stand-in, nginx and this script share this machine's cores
(2, shared with other work): the figures are for this machine, not a Jetson.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.bench import pinning  # noqa: E402
from edgekit.bench import sweep as sw  # noqa: E402
from edgekit.remote.target import parse_target  # noqa: E402
from edgekit.remote.transport import Transport  # noqa: E402
from edgekit.sandbox import standin  # noqa: E402
from tests.modelserver import ModelServer, _free_port  # noqa: E402
from tests.test_spec_e2e import SMOL_FILE, SMOL_REPO, expand_to_f16  # noqa: E402

TEST_CACHE = Path("/var/cache/edgekit/test")
VALUES = ("off", "draft", "ngram")
CODE = "\n".join(f"    total_{i} = values[{i}] * weights[{i}] + offsets[{i}]  # term {i}" for i in range(30))
COPY_PROMPT = (f"def weighted_sum(values, weights, offsets):\n{CODE}\n    return total_0\n\n"
               "Repeat the function above exactly, but call it weighted_total:\n\ndef weighted_total(")


def _copy_request(url: str, key: str) -> dict:
    body = {"prompt": COPY_PROMPT, "n_predict": 96, "temperature": 0, "seed": 42, "cache_prompt": False}
    req = urllib.request.Request(url + "/completion", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    start = time.monotonic()
    with urllib.request.urlopen(req, timeout=600) as resp:
        out = json.loads(resp.read())
    t = out["timings"]
    drafted, accepted = t.get("draft_n", 0), t.get("draft_n_accepted", 0)
    return {"tg_tps": t["predicted_per_second"], "pp_tps": t["prompt_per_second"], "wall_s": time.monotonic() - start,
            "draft_n": drafted, "draft_n_accepted": accepted, "acceptance": accepted / drafted if drafted else None,
            "text_sha": hashlib.sha256(out["content"].encode()).hexdigest()[:12]}


def _wait_health(url: str, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not become healthy")


def _stat(values: list) -> dict | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals), "n": len(vals),
            "spread_pct": 100 * (max(vals) - min(vals)) / med if med else 0.0}


def save(path: str, rounds: int, sweeps: dict, copies: dict, quiet: bool = True) -> None:
    """The result so far (written after every round: a run cut short keeps what it measured)."""
    def table(runs: dict) -> dict:
        return {v: {k: _stat([x[k] for x in runs[v]]) for k in runs[v][0] if k != "text_sha"}
                for v in VALUES if runs[v]}

    result = {"what": "speculative decoding on a stand-in: SmolLM2-135M-Instruct F16 target, its Q4_1 as the draft, "
                      "ngram-mod draft-free; server on CPU 0 (1 thread), client on CPU 1; 2 cores shared with other "
                      "work", "rounds": rounds, "sweep": table(sweeps), "copy_heavy": table(copies),
              "copy_texts_identical": {v: len({x["text_sha"] for x in copies[v]}) == 1 for v in VALUES},
              "copy_text_same_across_values": len({copies[v][0]["text_sha"] for v in VALUES if copies[v]}) == 1,
              "raw": {"sweep": sweeps, "copy_heavy": copies}, "load": os.getloadavg(), "cpus": os.cpu_count()}
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
    if quiet or "off" not in result["sweep"]:
        return
    for part in ("sweep", "copy_heavy"):
        off = result[part]["off"]["tg_tps"]["median"]
        for v, row in result[part].items():
            acc = row.get("acceptance")
            print(f"{part:10s} {v:6s} tg {row['tg_tps']['median']:.1f} ±{row['tg_tps']['spread_pct'] / 2:.0f}% "
                  f"({row['tg_tps']['median'] / off:.2f}x off)  acceptance {acc['median'] if acc else '-'}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=str(REPO / "benchmarks/results/spec-sweep.json"))
    args = ap.parse_args()
    src = next((TEST_CACHE / "src").glob("llama_cpp_python-*.tar.gz"))
    target = TEST_CACHE / "SmolLM2-135M-Instruct.F16.gguf"
    if not target.is_file():
        expand_to_f16(TEST_CACHE / SMOL_FILE, target)
    work = Path(tempfile.mkdtemp(prefix="spec-bench-"))
    (work / "models").mkdir()
    server = ModelServer(work / "models", _free_port())
    server.start()
    sb = standin.up("b-spec")
    os.environ["EDGEKIT_SSH_CONFIG"] = str(sb.ssh_config)
    env = {**os.environ, "EDGEKIT_HOME": str(work / "home")}
    sweeps: dict = {v: [] for v in VALUES}
    copies: dict = {v: [] for v in VALUES}
    try:
        server.add(SMOL_REPO, SMOL_FILE, TEST_CACHE / SMOL_FILE)
        sha = hashlib.sha256(target.read_bytes()).hexdigest()
        res = subprocess.run([sys.executable, "-m", "edgekit", "provision", sb.name, "-m", "smollm2-f16",
                              "--model-url", str(target), "--sha256", sha, "--draft", "smollm2-135m-instruct",
                              "--ctx", "2048", "--parallel", "2", "--llama-src", str(src), "--cpu", "--threads", "1",
                              "--hf-endpoint", server.endpoint(sb.host_address), "--fetch-on", "device",
                              "--allow-unpinned", "--no-metrics"], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]
        state = json.loads((work / "home" / "targets" / f"{sb.name}.json").read_text())
        key, url = Path(state["api_key_file"]).read_text().strip(), state["url"]
        for r in range(args.rounds):
            res = subprocess.run([sys.executable, "-m", "edgekit", "bench", sb.name, "--sweep",
                                  "spec=" + ",".join(VALUES), "--server-cpus", "0", "--client-cpus", "1", "--json",
                                  "--out", str(work / "bench")], env=env, capture_output=True, text=True)
            assert res.returncode == 0, res.stderr[-3000:]
            for row in json.loads(res.stdout)["sweep"]["rows"]:
                sweeps[row["value"]].append({k: row.get(k) for k in ("pp_tps", "tg_tps", "ttft_s", "acceptance",
                                                                       "draft_tokens", "draft_accepted")})
            with Transport(parse_target(sb.name)) as t:
                dev = sw.prepare(t, sw.SweepSpec("spec", VALUES), 8080)
                os.sched_setaffinity(0, {1})
                try:
                    with pinning.server_pinned(t, [0]):
                        for point in dev.points:
                            sw.apply_env(dev, point.env)
                            _wait_health(url)
                            copies[point.value].append(_copy_request(url, key))
                finally:
                    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                    restored = sw.restore(dev)
                    assert restored["restored"], restored
            save(args.json, r + 1, sweeps, copies)
            print(f"round {r + 1}/{args.rounds} done", flush=True)
    finally:
        standin.down(sb.name)
        server.stop()

    save(args.json, args.rounds, sweeps, copies, quiet=False)
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
