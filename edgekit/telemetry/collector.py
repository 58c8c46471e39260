"""The device-side collector: pick the best telemetry source and stream one JSON line per interval.

Runs on the device as the helper's `telemetry` (edgekit.remote.helper) (Python 3.8+, standard library only; psutil is not
needed). Sources, best first:
1. jetson-stats (`from jtop import jtop`), which needs the jtop service and its socket /run/jtop.sock;
2. `tegrastats --interval MS`;
3. /proc and /sys (any Linux: no GPU, EMC or power fields - they stay null).
The first line says which source is used and why each better one is missing:
  {"kind": "source", "source": "procfs", "why": ["jtop: not installed - sudo pip3 install -U jetson-stats", ...]}
Every further line is a Sample as JSON, with the llama-server RSS and the nvpmodel power mode added.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Iterator, List, Optional, Tuple

from edgekit.facts.jetson import PowerMode
from edgekit.telemetry.jtop import from_stats
from edgekit.telemetry.procfs import ProcfsReader, parse_meminfo
from edgekit.telemetry.sample import Sample
from edgekit.telemetry.tegrastats import parse_line

JTOP_SOCKET = "/run/jtop.sock"
TEGRASTATS_PATHS = ("/usr/bin/tegrastats", "/usr/local/bin/tegrastats")
SERVER_PROCESS = "llama-server"


# -- what every sample gets, whatever the source ------------------------------------------------------------
def server_rss_mb(proc: str = "/proc", name: str = SERVER_PROCESS) -> Optional[float]:
    """Resident memory of the llama-server process(es), MiB; None when none runs."""
    total_kb, found = 0, False
    for pid in os.listdir(proc):
        if not pid.isdecimal():
            continue
        try:
            with open(os.path.join(proc, pid, "comm")) as fh:
                if fh.read().strip() != name[:15]:
                    continue
            with open(os.path.join(proc, pid, "status")) as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        found = True
        except (OSError, ValueError, IndexError):
            continue
    return round(total_kb / 1024, 1) if found else None


def read_power_mode() -> Optional[str]:
    exe = shutil.which("nvpmodel") or ("/usr/sbin/nvpmodel" if os.path.exists("/usr/sbin/nvpmodel") else None)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    mode = PowerMode.parse(out)
    return mode["name"] if mode else None


# -- sources --------------------------------------------------------------------------------------------------
def _jtop_samples(interval_s: float) -> Iterator[Sample]:
    from jtop import jtop  # an optional package on the device (jetson-stats): the caller checked it imports

    with jtop(interval=interval_s) as jet:
        while jet.ok():
            try:
                memory, gpu = jet.memory, jet.gpu
            except Exception:  # older jetson-stats lack these properties
                memory, gpu = None, None
            yield from_stats(jet.stats, memory=memory if isinstance(memory, dict) else None,
                             gpu=gpu if isinstance(gpu, dict) else None, time=time.time())


def _tegrastats_samples(exe: str, interval_ms: int) -> Iterator[Sample]:
    proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                yield parse_line(line, time=time.time())
            except ValueError:
                continue
        raise RuntimeError(f"tegrastats exited with {proc.wait()}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()


def _procfs_samples(interval_s: float) -> Iterator[Sample]:
    reader = ProcfsReader()
    reader.read()  # prime the CPU counters: loads are measured over one interval
    while True:
        time.sleep(interval_s)
        yield reader.read(time=time.time())


def choose_source(interval_ms: int, force: Optional[str] = None,
                  importer: Callable[[str], object] = __import__) -> Tuple[str, List[str]]:
    """Return the best available source and the reasons the better ones were skipped."""
    why: List[str] = []
    if force in (None, "jtop"):
        try:
            importer("jtop")
        except ImportError:
            why.append("jtop: not installed - sudo pip3 install -U jetson-stats")
        else:
            if not os.path.exists(JTOP_SOCKET):
                why.append(f"jtop: installed but its service is not running (no {JTOP_SOCKET}) - "
                           "sudo systemctl enable --now jtop.service")
            elif not os.access(JTOP_SOCKET, os.R_OK | os.W_OK):
                why.append(f"jtop: no access to {JTOP_SOCKET} - sudo usermod -aG jtop $USER, then log in again")
            else:
                return "jtop", why
    if force in (None, "jtop", "tegrastats"):
        exe = shutil.which("tegrastats") or next((p for p in TEGRASTATS_PATHS if os.access(p, os.X_OK)), None)
        if exe:
            return "tegrastats", why
        why.append("tegrastats: not found (not a Jetson, or the L4T tools are missing)")
    return "procfs", why + ["procfs: no GPU, EMC or power readings on this source; those fields are null"]


def samples(source: str, interval_ms: int) -> Iterator[Sample]:
    if source == "jtop":
        return _jtop_samples(interval_ms / 1000)
    if source == "tegrastats":
        exe = shutil.which("tegrastats") or next(p for p in TEGRASTATS_PATHS if os.access(p, os.X_OK))
        return _tegrastats_samples(exe, interval_ms)
    return _procfs_samples(interval_ms / 1000)


def _ram_total_mb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as fh:
            total = parse_meminfo(fh.read()).get("MemTotal")
    except OSError:
        return None
    return total / 1024 if total else None


def main(argv: Optional[List[str]] = None) -> int:
    """Stream samples as JSON lines until --duration or --count is reached (or forever)."""
    ap = argparse.ArgumentParser(prog="edgekit-telemetry", description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=int, default=1000, help="milliseconds between samples")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--count", type=int, default=None, help="stop after this many samples")
    ap.add_argument("--source", choices=["jtop", "tegrastats", "procfs"], default=None,
                    help="use this source or a worse one")
    ap.add_argument("--out", default=None, help="append lines to this file instead of stdout")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # run finally blocks (stop tegrastats)
    out = open(args.out, "a", buffering=1) if args.out else sys.stdout
    source, why = choose_source(args.interval, args.source)
    if source == "jtop":
        try:
            stream = samples(source, args.interval)
            first: Optional[Sample] = next(stream)
        except Exception as e:  # the service refused us, version mismatch, ...
            why.append(f"jtop: failed to connect ({type(e).__name__}: {e}) - sudo systemctl restart jtop.service")
            source, more = choose_source(args.interval, "tegrastats")
            why += more
            stream, first = samples(source, args.interval), None
    else:
        stream, first = samples(source, args.interval), None
    _write(out, {"kind": "source", "source": source, "why": why, "interval_ms": args.interval,
                 "python": sys.version.split()[0], "time": time.time()})
    started, count, mode, mode_at = time.time(), 0, None, 0.0
    ram_total = _ram_total_mb()
    try:
        while True:
            sample = first if first is not None else next(stream)
            first = None
            if sample.ram_total_mb is None and sample.ram_used_mb is None and ram_total:
                sample.ram_total_mb = ram_total
            if sample.power_mode is None and source != "procfs":
                if time.time() - mode_at > 10:
                    mode, mode_at = read_power_mode(), time.time()
                sample.power_mode = mode
            sample.server_rss_mb = server_rss_mb()
            _write(out, sample.to_json())
            count += 1
            if args.count is not None and count >= args.count:
                break
            if args.duration is not None and time.time() - started >= args.duration:
                break
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    except Exception as e:  # a source died mid-run: say so on the stream, do not hide it
        _write(out, {"kind": "error", "message": f"{type(e).__name__}: {e}", "time": time.time()})
        return 1
    finally:
        close = getattr(stream, "close", None)
        if close:
            close()
    return 0


def _write(out, data) -> None:
    out.write(json.dumps(data, separators=(",", ":")) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
