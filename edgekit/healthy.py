"""The last healthy state (build, env file, unit) recorded on the device, and the way back to it.

A provision that ends healthy records what it ended in: `/var/lib/edgekit/last-healthy.json` (the build the
`current` link resolved to, the model, the sha256 of the env file and the unit) with copies of both files in
`/var/lib/edgekit/last-healthy/`. When a later provision changes the build, the model or the settings and the
service is then unhealthy, `restore` puts that state back (systemd's start limit cleared first), restarts, and
checks it is healthy again. Each such automatic rollback is recorded next to it in
`/var/lib/edgekit/last-rollback.json` (`rollback_record`: the step that failed and why, what the run changed and
tried, when, what it returned to), which `edgekit status` shows.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

from edgekit import layout as L
from edgekit.llamacpp.current import switch_commands
from edgekit.errors import EdgekitError, RemoteCommandFailed
from edgekit.facts.deployed import read
from edgekit.remote.command import Upload, q
from edgekit.remote.plan import Change, Context, Noop
from edgekit.service.settings import parse_env, preset_models
ENV_COPY = f"{L.HEALTHY_DIR}/llama-server.env"
UNIT_COPY = f"{L.HEALTHY_DIR}/{L.UNIT_NAME}.service"
PRESET_COPY = f"{L.HEALTHY_DIR}/models.ini"


class DeployRolledBack(EdgekitError):
    """A change left the service unhealthy; the last healthy state was restored."""

    exit_code = 4


def state_command() -> str:
    """One round trip: where `current` points, the env file and unit as they are, and the recorded state."""
    return (f"echo \"@@current $(readlink -f {q(L.CURRENT)} 2>/dev/null)\"; echo @@env; cat {q(L.ENV_PATH)} 2>/dev/null; "
            f"echo @@unit; cat {q(L.UNIT_PATH)} 2>/dev/null; echo @@preset; cat {q(L.PRESET_PATH)} 2>/dev/null; "
            f"echo @@healthy; cat {q(L.HEALTHY)} 2>/dev/null")


def parse_state(output: str) -> dict:
    """Pure: {"current", "env", "unit", "preset" (router mode; '' when none), "healthy" (dict or None)} from
    state_command's output."""
    head, _, rest = output.partition("@@env\n")
    env, _, rest = rest.partition("@@unit\n")
    unit, _, rest = rest.partition("@@preset\n")
    preset, _, healthy_text = rest.partition("@@healthy\n")
    current = next((line[len("@@current "):].strip() for line in head.splitlines() if line.startswith("@@current ")),
                   "")
    try:
        healthy = json.loads(healthy_text) if healthy_text.strip() else None
    except (ValueError, RecursionError):
        healthy = None
    return {"current": current or None, "env": env, "unit": unit, "preset": preset,
            "healthy": healthy if isinstance(healthy, dict) else None}


def is_recorded(st: dict) -> bool:
    """Pure: the device is in its recorded healthy state (build, env file, unit, router presets)."""
    h = st["healthy"] or {}
    return bool(h) and h.get("build") == st["current"] and h.get("env_sha256") == sha(st["env"]) \
        and h.get("unit_sha256") == sha(st["unit"]) and h.get("preset_sha256", sha("")) == sha(st["preset"])


@dataclass(frozen=True)
class DeployState:
    """A fact: where `current` points, the env file and unit as they are, and the recorded healthy state."""

    sudo: bool = True

    @property
    def command(self) -> str:
        return state_command()

    @staticmethod
    def parse(output: str) -> dict:
        return parse_state(output)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def describe(healthy: dict | None) -> str:
    if not healthy:
        return "none recorded"
    return (f"build {(healthy.get('build') or '?').rsplit('/', 1)[-1]}, model {healthy.get('model')}, "
            f"recorded {healthy.get('at')}")


class RecordHealthy:
    """The state the service is healthy in, recorded on the device (what a failed change rolls back to)."""

    name = "last healthy"

    def plan(self, ctx: Context):
        if ctx.dry_run:
            return Noop("would record the state once the service is healthy")
        st = ctx.fact(DeployState())
        if is_recorded(st):
            return Noop(f"already recorded: {describe(st['healthy'])}")
        env = parse_env(st["env"])
        record = {"build": st["current"], "model": env.get("LLAMA_ARG_ALIAS") or next(iter(preset_models(st["preset"])), None),
                  "model_path": env.get("LLAMA_ARG_MODEL"), "env_sha256": sha(st["env"]),
                  "unit_sha256": sha(st["unit"]), "preset_sha256": sha(st["preset"]),
                  "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        ops = [f"install -d -m 0700 {q(L.HEALTHY_DIR)}", f"cp -p {q(L.ENV_PATH)} {q(ENV_COPY)}",
               f"cp -p {q(L.UNIT_PATH)} {q(UNIT_COPY)}",
               f"cp -p {q(L.PRESET_PATH)} {q(PRESET_COPY)}" if st["preset"] else f"rm -f {q(PRESET_COPY)}",
               Upload(L.HEALTHY, json.dumps(record, indent=2) + "\n")]
        return Change(f"record the healthy state: {describe(record)}", ops)


def rollback_record(failed_step: str, reason: str, changed: list[str], attempted: dict, returned_to: dict | None,
                    restored: bool, at: str) -> dict:
    """Pure: what `last-rollback.json` says of an automatic rollback: the step that failed and why, what the run had
    changed and the state it tried (build, model), when, and the last healthy state it returned to (`restored`:
    False when putting that back failed too)."""
    env = parse_env(attempted.get("env") or "")
    return {"at": at, "failed_step": failed_step, "reason": reason, "changed": sorted(changed),
            "attempted": {"build": attempted.get("current"),
                          "model": env.get("LLAMA_ARG_ALIAS") or next(iter(preset_models(attempted.get("preset")
                                                                                          or "")), None),
                          "env_sha256": sha(attempted.get("env") or "")},
            "returned_to": returned_to, "restored": restored}


def record_rollback_op(record: dict) -> Upload:
    """The write of `last-rollback.json` (root's, next to the last healthy record)."""
    return Upload(L.LAST_ROLLBACK, json.dumps(record, indent=2) + "\n", mode="0644")


def parse_rollback(text: str | None) -> dict | None:
    """Pure: last-rollback.json's text -> the record, or None (absent, or not a record)."""
    try:
        record = json.loads(text) if text and text.strip() else None
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) and record.get("failed_step") else None


def describe_rollback(record: dict | None) -> str:
    """One line: when, which step failed and why, what was tried, what it returned to."""
    if not record:
        return "none"
    tried = record.get("attempted") or {}
    back = (f"returned to {describe(record.get('returned_to'))}" if record.get("restored") else
            "restoring the last healthy state failed too")
    return (f"{record.get('at')}: {record.get('failed_step')} failed after changing "
            f"{', '.join(record.get('changed') or []) or '?'} (build {(tried.get('build') or '?').rsplit('/', 1)[-1]}, "
            f"model {tried.get('model')}): {record.get('reason')}; {back}")


def restore_commands(st: dict) -> list[str]:
    """Pure: the commands that put the recorded healthy state back (build, env, unit), then restart."""
    h = st["healthy"] or {}
    cmds = [f"systemctl reset-failed {L.UNIT_NAME} 2>/dev/null; true"]
    if h.get("build") and h["build"] != st["current"]:
        cmds += switch_commands(h["build"], st["current"])
    if h.get("env_sha256") != sha(st["env"]):
        cmds.append(f"install -m 0644 {q(ENV_COPY)} {q(L.ENV_PATH)}")
    if h.get("unit_sha256") != sha(st["unit"]):
        cmds += [f"install -m 0644 {q(UNIT_COPY)} {q(L.UNIT_PATH)}", "systemctl daemon-reload"]
    if h.get("preset_sha256", sha("")) != sha(st["preset"]):
        cmds.append(f"rm -f {q(L.PRESET_PATH)}" if h.get("preset_sha256", sha("")) == sha("") else
                    f"install -m 0644 {q(PRESET_COPY)} {q(L.PRESET_PATH)}")
    cmds.append(f"systemctl restart {L.UNIT_NAME}")
    return cmds


def restore(transport) -> dict:
    """Put the last healthy state back and restart; returns the record restored. Raises when none is recorded."""
    st = read(transport, DeployState())
    if not st["healthy"]:
        raise RemoteCommandFailed("restore last healthy state", 1, "", message="no healthy state is recorded")
    for command in restore_commands(st):
        transport.sudo(command)
    return st["healthy"]
