"""Transfer rate of edgekit's downloader vs curl on the same loopback link (nginx serving a real GGUF).

    python benchmarks/download_rate.py [--runs 9] [--file PATH] [--baseline GIT_REV] [--json OUT]

Each run times edgekit (download.fetch: sha256 while streaming, then verify and rename), curl -o (just writes),
and, with --baseline, edgekit's downloader as it was at that git revision (the whole edgekit package of that
revision, `git archive`d to a temp folder; same URL, same sha256 check), one after the other, in a rotating order
so that none always goes first. With --baseline, edgekit and the baseline both run in a fresh child process (the
same way, so start-up counts alike), and each round gives one paired ratio edgekit/baseline (the two ran back to
back): the paired median and its spread (min..max, and the middle half) say whether they differ beyond noise.
Prints the median MB/s of each and the ratio of the medians edgekit/curl; CPU seconds per GB of the client are
printed too, being less sensitive than wall time to a busy machine. Client, nginx and anything else running
share this machine's cores: say how many, and what the load was (--json records both).
"""

from __future__ import annotations

import argparse
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


# Runs one download in a child process with the edgekit on PYTHONPATH; the downloader's API as it has been:
# models.download.fetch(url, Path, sha256=) (now), models.device_fetch.fetch(url, str, sha256) (until 66b7600).
CHILD = """
import sys
from pathlib import Path
url, dest, sha = sys.argv[1:4]
try:
    from edgekit.models.download import fetch
    got = fetch(url, Path(dest), sha256=sha).sha256
except ImportError:
    from edgekit.models.device_fetch import fetch
    got = fetch(url, dest, sha)["sha256"]
assert got == sha, (got, sha)
"""


def _checkout(rev: str, tmp: Path) -> tuple[Path, str]:
    """The edgekit package as it was at git revision rev, in a folder of its own; and the commit it is."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], capture_output=True, text=True,
                            check=True).stdout.strip()
    root = tmp / f"edgekit-{commit}"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "edgekit"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root, commit


def _child_fetch(tree: Path, url: str, dest: Path, sha256: str) -> float:
    """One download by the edgekit in `tree`, in a child process; -> its CPU seconds."""
    cpu = _children_cpu()
    subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(tree)!r})\n{CHILD}", url,
                    str(dest), sha256], check=True)
    return _children_cpu() - cpu


def paired(ours: list[float], theirs: list[float]) -> dict:
    """Pure: per-round ratios ours/theirs (each pair ran back to back) -> median, min, max, middle half."""
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    quarter = len(ratios) // 4
    middle = [round(ratios[quarter], 3), round(ratios[-1 - quarter], 3)]
    return {"ratios": [round(r, 3) for r in ratios], "median": round(statistics.median(ratios), 3),
            "min": round(ratios[0], 3), "max": round(ratios[-1], 3), "middle_half": middle,
            # 1.0 inside the middle half of the paired ratios: the two are not told apart by this run
            "verdict": "within noise" if middle[0] <= 1.0 <= middle[1] else "beyond the spread"}


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
    ap.add_argument("--baseline", metavar="GIT_REV", help="also time edgekit's downloader as it was at this revision")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline, commit = _checkout(args.baseline, tmp) if args.baseline else (None, None)
        server = ModelServer(tmp / "srv", _free_port())
        (tmp / "srv").mkdir()
        server.start()
        try:
            served = server.add("bench/model", args.file.name, args.file)
            url = server.endpoint() + served.url_path

            def ours(dest: Path) -> float:
                if baseline:          # both in a child process, started the same way
                    return _child_fetch(REPO, url, dest, served.sha256)
                cpu = time.process_time()
                download.fetch(url, dest, sha256=served.sha256)
                return time.process_time() - cpu

            def curl(dest: Path) -> float:
                cpu = _children_cpu()
                subprocess.run(["curl", "-sS", "-o", str(dest), url], check=True)
                return _children_cpu() - cpu

            def old(dest: Path) -> float:
                return _child_fetch(baseline, url, dest, served.sha256)

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
    pair = paired(rates["edgekit"], rates["baseline"]) if baseline else None
    if baseline:
        print(f"ratio baseline ({commit})/curl (medians): {median['baseline'] / median['curl']:.2f}")
        lo, hi = pair["middle_half"]
        print(f"edgekit/baseline ({commit}), paired per round: median {pair['median']:.3f}, middle half "
              f"{lo:.3f}..{hi:.3f}, range {pair['min']:.3f}..{pair['max']:.3f} ({pair['verdict']})")
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
            result["baseline"] = (f"edgekit's downloader at {commit} (its whole edgekit package; both it and edgekit "
                                  "in a child process, same URL and sha256)")
            result["ratio_baseline_over_curl"] = round(median["baseline"] / median["curl"], 3)
            result["edgekit_over_baseline_paired"] = pair
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
