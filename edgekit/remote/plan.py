"""Steps and their runner: each step compares desired state with fresh facts and returns changes or a no-op.

A step's `plan(ctx)` is called just before it is applied (never from a stale plan), reads the device through
`ctx.fact(...)` (a fact: command + pure parser; tests hand them in with `given`), and returns either
`Noop(reason)` or `Change(summary, ops, apply)`. The ops (edgekit.remote.command: shell strings, Upload, Cmd,
Local) are what `--dry-run` prints and what the run executes, in that order: the default apply runs them; a
custom apply runs each with `ctx.do(op)` and may read (`ctx.read`, `ctx.fact`) in between. Steps that should
run only when another step changed something (daemon-reload, restart) look at `ctx.changed`, Ansible's
handler idea. Values later steps need go in `ctx.run` (a typed RunState); every step's result in `ctx.results`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from edgekit.errors import EdgekitError
from edgekit.remote.command import Local, Op, run_op
from edgekit.remote.run_state import RunState
from edgekit.remote.transport import DeviceTransport, ReadOnly, Result


@dataclass
class Noop:
    reason: str


@dataclass
class Change:
    summary: str
    commands: list[Op] = field(default_factory=list)     # the operations, in the order they run
    apply: Callable[["Context"], None] | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> list[str]:
        return [str(op) for op in self.commands]


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


class Fact(Protocol):
    """A fact about the device: one command (run as root when `sudo`) and a pure parser of its output."""

    sudo: bool

    @property
    def command(self) -> str: ...

    def parse(self, output: str) -> Any: ...


class FactNotGiven(KeyError):
    """A step read a fact its test did not hand in (Context(strict=True))."""


@dataclass
class Context:
    transport: DeviceTransport
    dry_run: bool = False
    reporter: Reporter = field(default_factory=NullReporter)
    changed: set[str] = field(default_factory=set)
    run: RunState = field(default_factory=RunState)      # values steps hand to later steps
    results: list[StepResult] = field(default_factory=list)   # every step's result in this run, in order
    given: dict[Any, Any] = field(default_factory=dict)  # facts handed in (tests): read instead of the device
    strict: bool = False                                 # with `given`: a fact not handed in is an error
    current_step: str = ""

    def __post_init__(self) -> None:
        if self.dry_run and self.transport is not None and not getattr(self.transport, "read_only", False):
            self.transport = ReadOnly(self.transport)    # uploads nothing, not even edgekit's device helper

    def progress(self, text: str, completed: float | None = None, total: float | None = None) -> None:
        self.reporter.progress(self.current_step, text, completed, total)

    def lock_wait(self, text: str) -> None:
        """Say that the run waits for the device lock, and who holds it (device_lock's on_wait)."""
        self.reporter.progress("device lock", text)

    def fact(self, fact: Fact) -> Any:
        """Read one fact from the device now (never cached: a step re-reads just before it changes anything)."""
        if fact in self.given:
            return self.given[fact]
        if self.strict:
            raise FactNotGiven(fact)
        if hasattr(fact, "read"):                        # a fact read with edgekit's device-side helper
            return fact.read(self.transport)
        res = (self.transport.sudo if fact.sudo else self.transport.run)(fact.command, check=False)
        return fact.parse(res.stdout)

    def read(self, command: str, sudo: bool = True, **kwargs) -> Result:
        """A command that changes nothing (a check, a poll); its output is the caller's to judge."""
        return (self.transport.sudo if sudo else self.transport.run)(command, check=False, **kwargs)

    def do(self, op: Op, **kwargs):
        """Run one operation of a change (as printed by the dry run)."""
        return run_op(self.transport, op, **kwargs)

    def sudo(self, command: str, **kwargs):
        return self.transport.sudo(command, **kwargs)


def run_steps(ctx: Context, steps: list[Step]) -> list[StepResult]:
    """Plan and apply each step in order; stop at the first failure (re-raised after it is reported). Returns
    this call's results; all of the run's are in ctx.results (also when a step failed)."""
    results: list[StepResult] = []
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
                                    decision.shown, decision.detail)
                ctx.changed.add(step.name)
            else:
                if decision.apply is not None:
                    decision.apply(ctx)
                else:
                    for op in decision.commands:
                        if isinstance(op, Local):
                            raise TypeError(f"{step.name}: a Local operation needs the step's own apply")
                        ctx.do(op)
                ctx.changed.add(step.name)
                result = StepResult(step.name, "changed", decision.summary, time.monotonic() - start,
                                    decision.shown, decision.detail)
        except EdgekitError as e:
            result = StepResult(step.name, "failed", e.message.splitlines()[0], time.monotonic() - start)
            ctx.reporter.step_finished(result)
            results.append(result)
            ctx.results.append(result)
            raise
        ctx.reporter.step_finished(result)
        results.append(result)
        ctx.results.append(result)
    return results
