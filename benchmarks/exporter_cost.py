#!/usr/bin/env python3
"""What the metrics exporter costs the machine it runs on: CPU % and RSS while scraped every 5 s, median of N.

    python3 benchmarks/exporter_cost.py [--source procfs] [--repeat 3] [--duration 60]    (starts one here)
    sudo python3 benchmarks/exporter_cost.py --attach                                     (the installed unit)

Without --attach it starts the exporter on this machine (from this checkout, or --pyz the zipapp) on loopback
with a fresh token, the board source it finds (jtop, tegrastats, /proc) or --source. With --attach it measures
the running edgekit-exporter unit (its MainPID, its port and token file from the unit; root reads the token).
Each repeat scrapes /metrics every --every seconds for --duration seconds and reads, from /proc, the CPU time of
the exporter and its children (tegrastats, nvpmodel: exited ones through cutime/cstime) and the tree's resident
memory at every scrape. CPU % is of one core. Writes benchmarks/results/exporter-cost-<host>-<time>.json.
Measure on the device itself (copy the checkout, or use --attach there): on a controller it measures the
controller.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
UNIT = "edgekit-exporter"


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()          # fields from 3 (state) on; comm may hold spaces


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and int(fields[1]) == pid:          # field 4: ppid
                out.append(int(entry))
    return out


def tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def cpu_seconds(pid: int) -> float:
    """CPU time of the process (with its reaped children) and of its live descendants, seconds."""
    total = 0.0
    for i, p in enumerate(tree(pid)):
        fields = _stat(p)
        if not fields:
            continue
        utime, stime, cutime, cstime = (int(fields[k]) for k in (11, 12, 13, 14))   # fields 14-17
        total += utime + stime + (cutime + cstime if i == 0 else 0)
    return total / TICKS


def rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def scrape(url: str, token: str | None) -> tuple[int, float, int]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            size = len(resp.read())
            return resp.status, time.perf_counter() - start, size
    except urllib.error.HTTPError as e:
        return e.code, time.perf_counter() - start, 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local(args, workdir: Path) -> tuple[subprocess.Popen, str, str]:
    token = "ekm-" + secrets.token_urlsafe(32)
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = free_port()
    entry = [str(args.pyz)] if args.pyz else ["-m", "edgekit.exporter"]
    command = [sys.executable, *entry, "--host", "127.0.0.1", "--port", str(port), "--token-file", str(token_file),
               "--interval", f"{args.interval:g}"] + (["--source", args.source] if args.source else [])
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the exporter exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if scrape(url, token)[0] == 200:
                return proc, url, token
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the exporter did not answer within 15 s")


def attach() -> tuple[int, str, str | None]:
    show = subprocess.run(["systemctl", "show", UNIT, "-p", "MainPID", "-p", "ExecStart"], capture_output=True,
                          text=True, check=True).stdout
    pid = int(re.search(r"MainPID=(\d+)", show)[1])
    if not pid:
        raise SystemExit(f"{UNIT} is not running")
    argv = re.search(r"argv\[\]=([^;]*);", show)[1].split()
    opt = lambda name, default=None: argv[argv.index(name) + 1] if name in argv else default   # noqa: E731
    host = opt("--host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    token_file = opt("--token-file")
    token = Path(token_file).read_text().strip() if token_file else None
    return pid, f"http://{host}:{opt('--port', '9838')}/metrics", token


def board_source(text: str) -> str | None:
    m = re.search(r'source="(\w+)"', text)
    return m[1] if m else None


def measure(pid: int, url: str, token: str | None, duration: float, every: float) -> dict:
    """One window: scrape every `every` s for `duration` s; CPU % over the window, RSS at each scrape."""
    rss, latency, sizes = [], [], []
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    next_at = wall0
    while time.monotonic() - wall0 < duration:
        status, took, size = scrape(url, token)
        if status != 200:
            raise SystemExit(f"scrape answered {status}")
        latency.append(took)
        sizes.append(size)
        rss.append(rss_bytes(pid))
        next_at += every
        time.sleep(max(0.0, next_at - time.monotonic()))
    wall = time.monotonic() - wall0
    return {"cpu_percent": round(100 * (cpu_seconds(pid) - cpu0) / wall, 3),
            "rss_median_bytes": int(statistics.median(rss)), "rss_max_bytes": max(rss),
            "scrape_median_ms": round(1000 * statistics.median(latency), 2), "scrapes": len(latency),
            "body_bytes": int(statistics.median(sizes)), "seconds": round(wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attach", action="store_true", help=f"measure the running {UNIT} unit")
    ap.add_argument("--pyz", type=Path, help="run this exporter zipapp instead of the checkout's module")
    ap.add_argument("--source", choices=["jtop", "tegrastats", "procfs"], help="board source (default: the best)")
    ap.add_argument("--interval", type=float, default=5.0, help="the exporter's board sample interval, s")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between scrapes (Prometheus' interval)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per repeat")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (first samples, imports)")
    ap.add_argument("--out", type=Path, help="result file (default benchmarks/results/exporter-cost-HOST-TIME.json)")
    args = ap.parse_args()
    proc = None
    with tempfile.TemporaryDirectory() as workdir:
        if args.attach:
            pid, url, token = attach()
        else:
            proc, url, token = start_local(args, Path(workdir))
            pid = proc.pid
        try:
            time.sleep(args.warmup)
            source = board_source(scrape_text(url, token))
            runs = [measure(pid, url, token, args.duration, args.every) for _ in range(args.repeat)]
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
    result = {
        "host": platform.node(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(), "mode": "attached to the unit" if args.attach else "started here",
        "board_source": source, "scrape_every_s": args.every, "sample_interval_s": args.interval,
        "cpu_percent_median": statistics.median(r["cpu_percent"] for r in runs),
        "rss_median_bytes": int(statistics.median(r["rss_median_bytes"] for r in runs)),
        "scrape_median_ms": statistics.median(r["scrape_median_ms"] for r in runs),
        "runs": runs, "note": "CPU % of one core, the exporter and its children (tegrastats); RSS of the tree",
    }
    out = args.out or REPO / "benchmarks" / "results" / \
        f"exporter-cost-{platform.node()}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def scrape_text(url: str, token: str | None) -> str:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read().decode()


if __name__ == "__main__":
    sys.exit(main())
