"""Controller side: run the collector on the device (the helper's `telemetry`), stream its lines, or record them.

`stream(transport, ...)` runs the collector in the foreground and calls back per line (edgekit telemetry).
`Recorder(transport)` starts it in the background writing a file on the device, and `stop()` fetches the
samples with their times moved onto this machine's clock (bench phases are timed here).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional

from edgekit.errors import RemoteCommandFailed
from edgekit.remote.command import q
from edgekit.remote.helper import helper_command, helper_path
from edgekit.telemetry.sample import Sample


@dataclass
class TelemetrySource:
    source: str
    why: List[str] = field(default_factory=list)
    python: Optional[str] = None


@dataclass
class Stream:
    source: Optional[TelemetrySource] = None
    samples: List[Sample] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    noise: List[str] = field(default_factory=list)   # lines that were not JSON (warnings from the device)

    def feed(self, line: str, offset: float = 0.0) -> Optional[object]:
        """Parse one collector line; return the Sample / TelemetrySource it held, or None."""
        line = line.strip()
        if not line:
            return None
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            self.noise.append(line)
            return None
        kind = data.pop("kind", None)
        if kind == "source":
            self.source = TelemetrySource(data["source"], data.get("why", []), data.get("python"))
            return self.source
        if kind == "error":
            self.errors.append(data.get("message", "?"))
            return None
        sample = Sample.from_json(data)
        if sample.time is not None:
            sample.time -= offset
        self.samples.append(sample)
        return sample


def clock_offset(transport) -> float:
    """Device clock minus this machine's clock, seconds (midpoint of one round trip)."""
    before = time.time()
    remote = float(transport.run("date +%s.%N").stdout.strip())
    after = time.time()
    return remote - (before + after) / 2


def stream(transport, on_item: Callable[[object], None], interval_ms: int = 1000,
           duration: Optional[float] = None, count: Optional[int] = None) -> Stream:
    """Run the collector in the foreground; call on_item(TelemetrySource | Sample) per line until it stops."""
    args = ["--interval", str(int(interval_ms))]
    if duration is not None:
        args += ["--duration", f"{duration:g}"]
    if count is not None:
        args += ["--count", str(int(count))]
    command = helper_command(transport, "telemetry", args)
    out = Stream()

    def line(text: str) -> None:
        item = out.feed(text)
        if item is not None:
            on_item(item)

    transport.run(command, on_line=line)
    return out


class Recorder:
    """Collector running in the background on the device while a benchmark runs."""

    def __init__(self, transport, interval_ms: int = 1000):
        self.transport = transport
        self.interval_ms = interval_ms
        self.pid: Optional[int] = None
        self.path: Optional[str] = None
        self.offset = 0.0

    def start(self) -> None:
        helper_path(self.transport)           # uploaded before anything is started
        self.offset = clock_offset(self.transport)
        self.path = self.transport.run("mktemp /tmp/edgekit-telemetry.XXXXXX.jsonl").stdout.strip()
        # Bounded even if this machine dies mid-run: the collector stops by itself after 6 hours.
        command = helper_command(self.transport, "telemetry", ["--interval", str(int(self.interval_ms)),
                                                              "--duration", "21600", "--out", self.path])
        res = self.transport.run(f"nohup {command} >/dev/null 2>&1 & echo $!")
        self.pid = int(res.stdout.split()[-1])

    def stop(self) -> Stream:
        """Stop the collector and return what it recorded (also after a failed run)."""
        out = Stream()
        if self.pid is None or self.path is None:
            return out
        self.transport.run(f"kill {self.pid}", check=False)
        try:
            text = self.transport.run(f"cat {q(self.path)}").stdout
        except RemoteCommandFailed as e:
            out.errors.append(f"could not read telemetry from the device: {e.message}")
            return out
        finally:
            self.transport.run(f"rm -f {q(self.path)}", check=False)
            self.pid = None
        for line in text.splitlines():
            out.feed(line, self.offset)
        return out
