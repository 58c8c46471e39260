"""Run one job on many hosts at once: bounded parallelism, rolling batches, a result per host, a summary.

One host failing never stops the others (unless --max-fail-percent is exceeded, which stops later batches).
Nothing here draws: a FleetReporter the caller passes in (the CLI's live table) is told whenever a row changes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from edgekit.errors import EdgekitError, PartialFailure
from edgekit.fleet.inventory import Host


@dataclass
class HostResult:
    host: str
    status: str = "pending"          # pending | running | ok | changed | failed | skipped
    message: str = ""
    seconds: float = 0.0
    changed: int = 0
    value: Any = None
    exit_code: int = 0
    steps: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"host": self.host, "status": self.status, "message": self.message, "seconds": round(self.seconds, 2),
                "changed": self.changed, "exit_code": self.exit_code,
                "steps": [s.to_json() for s in self.steps]}


class FleetReporter(Protocol):
    """Told about every change of the fleet's rows (one call at a time), and once more when the run ends."""

    def update(self, title: str, results: list[HostResult]) -> None: ...

    def finish(self, title: str, results: list[HostResult]) -> None: ...


class HostRow:
    """A step Reporter for one host: keeps its HostResult current and tells the fleet's reporter."""

    def __init__(self, result: HostResult, refresh: Callable[[], None]):
        self.result = result
        self._refresh = refresh

    def step_started(self, step: str) -> None:
        self.result.message = f"{step}..."
        self._refresh()

    def progress(self, step: str, text: str, completed: float | None = None, total: float | None = None) -> None:
        pct = f" {100 * completed / total:.0f}%" if completed is not None and total else ""
        self.result.message = f"{step}: {text}{pct}"[:90]
        self._refresh()

    def step_finished(self, step_result) -> None:
        self.result.steps.append(step_result)
        if step_result.status in ("changed", "would-change"):
            self.result.changed += 1
        self.result.message = f"{step_result.step}: {step_result.status}"
        self._refresh()


def run_fleet(hosts: list[Host], job: Callable[[Host, HostRow], tuple[str, Any]], *, forks: int = 5,
              serial: int | None = None, max_fail_percent: float = 100.0, title: str = "fleet",
              reporter: FleetReporter | None = None) -> list[HostResult]:
    """Run job(host, row) on every host; job returns (summary, value) and raises EdgekitError on failure.

    serial: hosts per batch (rolling upgrade); later batches are skipped once the failed share of hosts
    that ran exceeds max_fail_percent. reporter: told of every change (None: nobody is).
    """
    results = [HostResult(h.name) for h in hosts]
    lock = threading.Lock()

    def refresh() -> None:
        if reporter is not None:
            with lock:
                reporter.update(title, results)

    def one(i: int) -> None:
        r = results[i]
        r.status = "running"
        refresh()
        start = time.monotonic()
        try:
            summary, r.value = job(hosts[i], HostRow(r, refresh))
            r.status = "changed" if r.changed else "ok"
            r.message = summary
        except EdgekitError as e:
            r.status, r.exit_code = "failed", e.exit_code
            r.message = e.message.splitlines()[0]
        except Exception as e:  # one host's bug must not take the others down
            r.status, r.exit_code = "failed", 1
            r.message = f"{type(e).__name__}: {e}"
        r.seconds = time.monotonic() - start
        refresh()

    batch = serial or len(hosts) or 1
    refresh()
    try:
        for first in range(0, len(hosts), batch):
            ran = results[:first]
            if ran and 100.0 * sum(r.status == "failed" for r in ran) / len(ran) > max_fail_percent:
                for r in results[first:]:
                    r.status, r.message = "skipped", f"stopped: more than {max_fail_percent:g}% of hosts failed"
                break
            with ThreadPoolExecutor(max_workers=max(1, forks)) as pool:
                list(pool.map(one, range(first, min(first + batch, len(hosts)))))
    finally:
        if reporter is not None:
            reporter.finish(title, results)
    return results


def raise_for_failures(results: list[HostResult]) -> None:
    failed = [r for r in results if r.status in ("failed", "skipped")]
    if not failed:
        return
    names = ", ".join(f"{r.host} ({r.message})" for r in failed)
    if len(failed) == len(results):
        codes = {r.exit_code for r in failed if r.exit_code}
        error = EdgekitError(f"all {len(results)} host(s) failed: {names}", hint="see the table above")
        error.exit_code = codes.pop() if len(codes) == 1 else 1
        raise error
    raise PartialFailure(f"{len(failed)} of {len(results)} host(s) failed: {names}",
                         hint="the others finished; fix these and run the same command again")
