"""Transfer rate of edgekit's downloader vs curl on the same loopback link (nginx serving a real GGUF).

    python benchmarks/download_rate.py [--runs 9] [--file PATH] [--baseline GIT_REV] [--json OUT]

Each run times edgekit (download.fetch: sha256 while streaming, then verify and rename), curl -o (just writes),
and, with --baseline, device_fetch.fetch as it was at that git revision (same URL, same checks), one after the
other, in a rotating order so that none always goes first. Prints the median MB/s of each and
the ratio of the medians edgekit/curl; CPU seconds per GB of the client (this process for edgekit, the child
for curl) are printed too, being less sensitive than wall time to a busy machine. Client, nginx and anything
else running share this machine's cores: say how many, and what the load was (--json records both).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.device.files import CHUNK  # noqa: E402
from edgekit.models import download  # noqa: E402
from tests.modelserver import GEMMA, ModelServer, _free_port  # noqa: E402


def _load_baseline(rev: str, tmp: Path):
    """device_fetch.py as it was at git revision rev, imported under another name; and the commit it is."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:edgekit/models/device_fetch.py"],
                            capture_output=True, text=True, check=True).stdout
    path = tmp / f"device_fetch_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"device_fetch_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, commit


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    except (OSError, IndexError):
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--file", type=Path, default=GEMMA)
    ap.add_argument("--baseline", metavar="GIT_REV", help="also time device_fetch.py as it was at this revision")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline, commit = _load_baseline(args.baseline, tmp) if args.baseline else (None, None)
        server = ModelServer(tmp / "srv", _free_port())
        (tmp / "srv").mkdir()
        server.start()
        try:
            served = server.add("bench/model", args.file.name, args.file)
            url = server.endpoint() + served.url_path

            def ours(dest: Path) -> float:
                cpu = time.process_time()
                download.fetch(url, dest, sha256=served.sha256)
                return time.process_time() - cpu

            def curl(dest: Path) -> float:
                cpu = _children_cpu()
                subprocess.run(["curl", "-sS", "-o", str(dest), url], check=True)
                return _children_cpu() - cpu

            def old(dest: Path) -> float:
                cpu = time.process_time()
                done = baseline.fetch(url, str(dest), served.sha256)
                assert done["sha256"] == served.sha256
                return time.process_time() - cpu

            tools = {"edgekit": ours, "curl": curl}
            if baseline:
                tools["baseline"] = old
            rates: dict[str, list[float]] = {name: [] for name in tools}
            cpus: dict[str, list[float]] = {name: [] for name in tools}
            names = list(tools)
            for i in range(args.runs):
                for name in names[i % len(names):] + names[:i % len(names)]:
                    dest = tmp / f"{name}{i}.gguf"
                    t = time.perf_counter()
                    cpu = tools[name](dest)
                    rates[name].append(served.size / (time.perf_counter() - t))
                    cpus[name].append(cpu / (served.size / 1e9))
                    assert dest.stat().st_size == served.size
                    for leftover in tmp.glob(f"{name}{i}.gguf*"):
                        leftover.unlink()
        finally:
            server.stop()
    load_after = os.getloadavg()
    median = {name: statistics.median(v) for name, v in rates.items()}
    print(f"file: {args.file.name} ({served.size / 1e6:.0f} MB), {args.runs} runs, loopback nginx, "
          f"{os.cpu_count()} CPUs shared by client and server, "
          f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}")
    for name in rates:
        runs = ", ".join(f"{r / 1e6:.0f}" for r in rates[name])
        print(f"{name:9s} median {median[name] / 1e6:5.0f} MB/s  (runs: {runs}),  "
              f"client CPU {statistics.median(cpus[name]):.2f} s/GB")
    ratio = median["edgekit"] / median["curl"]
    print(f"ratio edgekit/curl (medians): {ratio:.2f}")
    if baseline:
        print(f"ratio baseline ({commit})/curl (medians): {median['baseline'] / median['curl']:.2f}")
    if args.json:
        result = {
            "benchmark": "benchmarks/download_rate.py",
            "command": " ".join(["python3", "benchmarks/download_rate.py", *sys.argv[1:]]),
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version(),
                        "curl": _version(["curl", "--version"]), "nginx": _version(["nginx", "-v"]),
                        "load_average_before": [round(x, 2) for x in load_before],
                        "load_average_after": [round(x, 2) for x in load_after]},
            "note": (f"client (edgekit or curl) and server (nginx, sendfile) run on the same {os.cpu_count()} cores, "
                     "over loopback, and share them with whatever else runs on the machine; "
                     "edgekit hashes (sha256) while streaming, curl only writes; medians of the runs"),
            "file": {"name": args.file.name, "bytes": served.size},
            "runs": args.runs,
            "chunk_bytes": CHUNK,
            "mb_per_s": {name: [round(r / 1e6, 1) for r in v] for name, v in rates.items()},
            "median_mb_per_s": {name: round(m / 1e6, 1) for name, m in median.items()},
            "client_cpu_s_per_gb": {name: [round(c, 3) for c in v] for name, v in cpus.items()},
            "client_cpu_s_per_gb_median": {name: round(statistics.median(v), 3) for name, v in cpus.items()},
            "ratio_edgekit_over_curl": round(ratio, 3),
        }
        if baseline:
            result["baseline"] = f"edgekit/models/device_fetch.py at {commit} (device_fetch.fetch, same URL and sha256)"
            result["ratio_baseline_over_curl"] = round(median["baseline"] / median["curl"], 3)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
