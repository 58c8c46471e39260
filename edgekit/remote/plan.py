"""Steps and their runner: each step compares desired state with fresh facts and returns changes or a no-op.

A step's `plan(ctx)` is called just before it is applied (never from a stale plan), and returns either
`Noop(reason)` or `Change(summary, commands, apply)`. `--dry-run` prints the commands; a real run calls
`apply` (default: run the commands with sudo). Steps that should run only when another step changed
something (daemon-reload, restart) look at `ctx.changed`, Ansible's handler idea.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from edgekit.errors import EdgekitError
from edgekit.remote.transport import Transport


@dataclass
class Noop:
    reason: str


@dataclass
class Change:
    summary: str
    commands: list[str] = field(default_factory=list)
    apply: Callable[["Context"], None] | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Step(Protocol):
    name: str

    def plan(self, ctx: "Context") -> Noop | Change: ...


@dataclass
class StepResult:
    step: str
    status: str           # ok | changed | would-change | failed
    message: str
    seconds: float
    commands: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"step": self.step, "status": self.status, "message": self.message,
                "seconds": round(self.seconds, 3), "commands": self.commands, **({"detail": self.detail}
                                                                               if self.detail else {})}


class Reporter(Protocol):
    def step_started(self, step: str) -> None: ...

    def step_finished(self, result: StepResult) -> None: ...

    def progress(self, step: str, text: str, completed: float | None = None, total: float | None = None) -> None: ...


class NullReporter:
    def step_started(self, step: str) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        pass

    def progress(self, step: str, text: str, completed: float | None = None, total: float | None = None) -> None:
        pass


@dataclass
class Context:
    transport: Transport
    dry_run: bool = False
    reporter: Reporter = field(default_factory=NullReporter)
    changed: set[str] = field(default_factory=set)
    state: dict[str, Any] = field(default_factory=dict)   # values steps hand to later steps (facts, paths)
    current_step: str = ""

    def progress(self, text: str, completed: float | None = None, total: float | None = None) -> None:
        self.reporter.progress(self.current_step, text, completed, total)

    def sudo(self, command: str, **kwargs):
        return self.transport.sudo(command, **kwargs)


def run_steps(ctx: Context, steps: list[Step]) -> list[StepResult]:
    """Plan and apply each step in order; stop at the first failure (re-raised after it is reported)."""
    results = []
    for step in steps:
        ctx.current_step = step.name
        ctx.reporter.step_started(step.name)
        start = time.monotonic()
        try:
            decision = step.plan(ctx)
            if isinstance(decision, Noop):
                result = StepResult(step.name, "ok", decision.reason, time.monotonic() - start)
            elif ctx.dry_run:
                result = StepResult(step.name, "would-change", decision.summary, time.monotonic() - start,
                                    decision.commands, decision.detail)
                ctx.changed.add(step.name)
            else:
                if decision.apply is not None:
                    decision.apply(ctx)
                else:
                    for command in decision.commands:
                        ctx.sudo(command)
                ctx.changed.add(step.name)
                result = StepResult(step.name, "changed", decision.summary, time.monotonic() - start,
                                    decision.commands, decision.detail)
        except EdgekitError as e:
            result = StepResult(step.name, "failed", e.message.splitlines()[0], time.monotonic() - start)
            ctx.reporter.step_finished(result)
            results.append(result)
            e.results = results  # type: ignore[attr-defined]  (callers may still print what ran)
            raise
        ctx.reporter.step_finished(result)
        results.append(result)
    return results
