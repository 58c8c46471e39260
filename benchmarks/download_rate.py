"""Transfer rate of edgekit's downloader vs curl on the same loopback link (nginx serving a real GGUF).

    python benchmarks/download_rate.py [--runs 5] [--file PATH]

Prints the median MB/s of each and the ratio edgekit/curl. Both write to the same disk and verify nothing
extra (edgekit hashes while streaming, as it always does; curl just writes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgekit.models import download  # noqa: E402
from tests.modelserver import GEMMA, ModelServer, _free_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--file", type=Path, default=GEMMA)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = ModelServer(tmp / "srv", _free_port())
        (tmp / "srv").mkdir()
        server.start()
        try:
            served = server.add("bench/model", args.file.name, args.file)
            url = server.endpoint() + served.url_path
            ours, curl = [], []
            for i in range(args.runs):
                dest = tmp / f"ours{i}.gguf"
                t = time.perf_counter()
                download.fetch(url, dest, sha256=served.sha256)
                ours.append(served.size / (time.perf_counter() - t))
                dest.unlink()
                out = tmp / f"curl{i}.gguf"
                t = time.perf_counter()
                subprocess.run(["curl", "-sS", "-o", str(out), url], check=True)
                curl.append(served.size / (time.perf_counter() - t))
                out.unlink()
        finally:
            server.stop()
    mo, mc = statistics.median(ours), statistics.median(curl)
    print(f"file: {args.file.name} ({served.size / 1e6:.0f} MB), {args.runs} runs, loopback nginx")
    print(f"edgekit (sha256 while streaming): median {mo / 1e6:.0f} MB/s")
    print(f"curl -o:                          median {mc / 1e6:.0f} MB/s")
    print(f"ratio edgekit/curl: {mo / mc:.2f}")


if __name__ == "__main__":
    main()
