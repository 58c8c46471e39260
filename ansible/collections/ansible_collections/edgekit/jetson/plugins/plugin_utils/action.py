"""What every edgekit.jetson action plugin does: validate its arguments and the host's `edgekit_*` variables with
edgekit's one settings model (before anything connects), run edgekit's steps through the play's connection
(AnsibleTransport), report each step, and turn edgekit's typed errors into a failed task with the error's message,
hint and exit code."""

from __future__ import annotations

import re

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.edgekit.jetson.plugins.plugin_utils.checkout import import_edgekit

import_edgekit()

from ansible_collections.edgekit.jetson.plugins.plugin_utils.transport import AnsibleTransport  # noqa: E402
from edgekit import settings  # noqa: E402
from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.remote.plan import Context  # noqa: E402

display = Display()


def argument_spec() -> dict:
    """edgekit's settings as module arguments (edgekit.settings.ansible_argument_spec), without Ansible-side
    defaults: an argument not given comes from the host's `edgekit_*` variables, then edgekit's default."""
    return {name: {k: v for k, v in arg.items() if k != "default"}
            for name, arg in settings.ansible_argument_spec().items()}


def inventory_settings(task_vars: dict, templar) -> dict:
    """The host's `edgekit_<setting>` variables (the names `edgekit provision --inventory` reads), templated."""
    return {k.removeprefix("edgekit_"): templar.template(v) for k, v in task_vars.items()
            if k.startswith("edgekit_")}


def resolve(args: dict, task_vars: dict, templar):
    """edgekit's settings from this task's arguments over the host's variables over the defaults, validated once
    by edgekit.settings.resolve (as the inventory layer: there are no command-line flags here)."""
    declared = settings.by_name()
    given = {name: value for name, value in args.items() if name in declared and value is not None}
    host = task_vars.get("inventory_hostname", "?")
    return settings.resolve({}, {**inventory_settings(task_vars, templar), **given},
                            f"task argument or edgekit_ variable, host {host}")


def as_arguments(text: str) -> str:
    """A message or hint with each `edgekit provision` flag of a setting named as this module's argument
    (`--no-api-key` is `api_key: false`, `--host` is `host:`): hints name what exists where they are printed."""
    flags = {s.flag: s for s in settings.SETTINGS if s.flag}

    def argument(m: re.Match) -> str:
        s = flags.get(m.group(0))
        return m.group(0) if s is None else f"{s.name}: false" if s.negated else f"{s.name}:"

    return re.sub(r"--[a-z0-9][a-z0-9-]*", argument, text)


def failure(e: EdgekitError) -> dict:
    hint = f" (hint: {as_arguments(e.hint)})" if e.hint else ""
    return {"failed": True, "msg": f"{as_arguments(e.message)}{hint}", "exit_code": e.exit_code,
            "error": type(e).__name__}


class AnsibleReporter:
    """edgekit's step reporter on Ansible's display: each step at -v; in check mode the steps that would change
    and their commands always (the plan, as `edgekit provision --dry-run` prints it)."""

    def __init__(self, host: str, check: bool):
        self.host, self.check = host, check

    def step_started(self, step: str) -> None:
        pass

    def progress(self, step: str, text: str, completed=None, total=None) -> None:
        display.vv(f"{self.host} | {step}: {text}")

    def step_finished(self, result) -> None:
        text = f"{self.host} | {result.status:>12} {result.step}: {result.message}"
        lines = [text, *(f"{self.host} | {'':>14}$ {c}" for c in result.commands)]
        if self.check and result.status == "would-change":
            display.display("\n".join(lines))
        else:
            display.v("\n".join(lines))


def _trace(t) -> None:
    code = "copy" if t.exit_code is None else f"exit {t.exit_code}"
    display.vvv(f"{t.host} | {'sudo ' if t.sudo else ''}{t.what} ({t.seconds:.2f}s, {code})")


class EdgekitAction(ActionBase):
    """Validate (no connection), then run `execute` with an AnsibleTransport; edgekit's errors fail the task."""

    _supports_check_mode = True
    _supports_async = False
    TRANSFERS_FILES = False            # no Ansible temp dir: validation runs before anything connects
    ARGUMENTS: dict = {}

    def validate(self, args: dict, task_vars: dict):
        """-> what `execute` needs; raise EdgekitError to refuse before connecting."""
        return args

    def execute(self, transport: AnsibleTransport, plan, task_vars: dict) -> dict:
        raise NotImplementedError

    def engine(self, transport: AnsibleTransport, run, what: str) -> tuple[Context, dict]:
        """Run `run(ctx)` (an edgekit function that runs steps: provision, uninstall, rollback) with check mode as
        its dry run; -> the context and the task's result: changed when a step changed (or would), every step's
        result, and with --diff the steps' diffs (the env file, the unit)."""
        check = bool(self._task.check_mode)
        ctx = Context(transport, dry_run=check, reporter=AnsibleReporter(transport.name, check))
        results = run(ctx)
        changed = [r for r in results if r.status in ("changed", "would-change")]
        out = {"changed": bool(changed), "steps": [r.to_json() for r in results],
               "msg": f"{what}: {len(changed)} step(s) {'would change' if check else 'changed'} {transport.name}"}
        diffs = [{"prepared": r.detail["diff"]} for r in changed if r.detail.get("diff")]
        if self._task.diff and diffs:
            out["diff"] = diffs
        return ctx, out

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=self.ARGUMENTS)
        try:
            plan = self.validate(args, task_vars)
        except EdgekitError as e:
            return {**result, **failure(e), "connected": False}
        transport = AnsibleTransport(self, task_vars.get("inventory_hostname", "device"), on_trace=_trace)
        try:
            result.update(self.execute(transport, plan, task_vars))
        except EdgekitError as e:
            result.update(failure(e))
        return result
