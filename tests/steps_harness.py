"""Run a step without SSH: facts handed in, every device command recorded, reads answered by the test.

`plan_and_apply(step, given, ...)` plans the step twice as provision would (a dry run, then a real run) against the
same facts, applies the real plan through a RecordingTransport, and returns (dry-run decision, what ran). The
caller asserts the Noop/Change branch; `assert_ran_as_printed` checks that what ran equals what the dry run printed.
A handed-in fact keeps its value for the whole step: a read that must see the device change mid-apply (the sha256
after an upload, the mode after nvpmodel -m) goes through `ctx.read`, which the test answers with `answer`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

from edgekit.remote import helper
from edgekit.remote.command import Later, Upload, device_changes
from edgekit.remote.plan import Change, Context, Noop
from edgekit.remote.run_state import RunState
from edgekit.remote.transport import Result


HELPER = "/home/ubuntu/.cache/edgekit/helper-0123456789abcdef.pyz"


class RecordingTransport:
    """A device that runs nothing: every command and upload is recorded; `answer(command)` gives the output."""

    name = "orin"
    address = "10.0.0.5"
    user = "ubuntu"
    is_root = False
    is_local = False
    become_password = None

    def __init__(self, answer: Callable[[str], str | tuple[int, str]] | None = None):
        self.ran: list = []
        self._answer = answer or (lambda command: "")
        helper._paths[self] = helper.Placed(HELPER, True)   # the helper is there already (its upload: test_helper*)

    def _result(self, command: str, on_line=None) -> Result:
        got = self._answer(command)
        code, out = got if isinstance(got, tuple) else (0, got)
        if on_line:
            for line in out.splitlines():
                on_line(line)
        return Result(command, code, out, "")

    def run(self, command: str, *, sudo: bool = False, check: bool = True, on_line=None, **kwargs) -> Result:
        self.ran.append(command)
        return self._result(command, on_line)

    def sudo(self, command: str, **kwargs) -> Result:
        return self.run(command, sudo=True, **kwargs)

    def put(self, local, remote: str, *, sudo: bool = False, mode: str = "0644", owner: str = "root",
            group: str | None = None) -> None:
        self.ran.append(Upload(remote, Path(local).read_bytes(), mode=mode, owner=owner, group=group, root=sudo))

    def put_text(self, text: str, remote: str, **kwargs) -> None:
        self.ran.append(Upload(remote, text, mode=kwargs.get("mode", "0644"), owner=kwargs.get("owner", "root"),
                               group=kwargs.get("group"), root=kwargs.get("sudo", False)))

    def put_temp(self, local, prefix: str = "edgekit", mode: str = "0600") -> str:
        return f"/tmp/{prefix}.TEST"          # device-side helper scripts: uploaded once, not a planned change


class RecordingContext(Context):
    """A Context whose reads (checks, polls) are answered without being recorded as changes."""

    def read(self, command: str, sudo: bool = True, **kwargs) -> Result:
        self.__dict__.setdefault("reads", []).append(command)
        return self.transport._result(command, kwargs.get("on_line"))


def context(given: dict, answer=None, dry_run: bool = False, run: RunState | None = None,
            changed: set[str] | None = None) -> RecordingContext:
    return RecordingContext(RecordingTransport(answer), dry_run=dry_run, given=given, strict=True,
                            run=run or RunState(), changed=set(changed or ()))


def _key(op) -> object:
    if isinstance(op, Upload):
        if op.made_by_run:                   # content the run produces: where, and with which rights
            return ("upload", op.dest, op.mode, op.owner if op.root else None, op.root)
        return ("upload", op.dest, op.mode, op.owner if op.root else None, op.root,
                hashlib.sha256(op.data).hexdigest())
    return str(op)


def _uploads_as_run(planned: list, ran: list) -> list:
    """Planned uploads with run-made content are compared by place and rights: drop content from the recorded. A
    planned Later (a command the run composes) stands for the one command run in its place."""
    out = []
    for i, op in enumerate(ran):
        if i < len(planned) and isinstance(planned[i], Later):
            out.append(planned[i])
            continue
        match = next((p for p in planned if isinstance(p, Upload) and isinstance(op, Upload) and p.made_by_run
                      and p.dest == op.dest), None)
        out.append(match if match is not None else op)
    return out


def assert_ran_as_printed(decision: Change, ran: list) -> None:
    planned = device_changes(decision.commands)
    got = [_key(op) for op in _uploads_as_run(planned, ran)]
    want = [_key(op) for op in planned]
    assert got == want, f"ran:\n  " + "\n  ".join(map(str, got)) + "\nprinted:\n  " + "\n  ".join(map(str, want))


def plan_and_apply(step, given: dict, answer=None, run: Callable[[], RunState] | None = None,
                   changed: set[str] | None = None, after_health: bool = False):
    """-> (the dry run's decision, the real run's decision, its context after apply). A Change is applied and its
    recorded commands compared with the dry run's printed ones. `after_health`: a step that acts only once the
    service answered (a dry run says so and plans nothing); what it runs is compared with what it printed."""
    dry_ctx = context(given, answer, dry_run=True, run=run() if run else None, changed=changed)
    dry = step.plan(dry_ctx)
    ctx = context(given, answer, run=run() if run else None, changed=changed)
    real = step.plan(ctx)
    assert (isinstance(dry, Noop) and "would" in dry.reason) if after_health else type(real) is type(dry)
    if isinstance(real, Change):
        assert after_health or real.shown == dry.shown, "the dry run and the real run plan the same operations"
        ctx.transport.ran.clear()
        if real.apply is not None:
            real.apply(ctx)
        else:
            for op in real.commands:
                ctx.do(op)
        assert_ran_as_printed(real, ctx.transport.ran)
    return dry, real, ctx


__all__ = ["Change", "Noop", "RecordingTransport", "context", "plan_and_apply", "assert_ran_as_printed"]
