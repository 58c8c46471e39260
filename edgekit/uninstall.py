"""`edgekit uninstall` as steps: the service and exporter units, the Jetson tuning put back, the service user, the
folders (models too with purge_models), then what the controller kept for the device.

Each step reads its facts and returns the exact commands, or a Noop saying what is already gone, so a dry run prints
the plan and a second uninstall changes nothing. `uninstall(ctx, purge_models)` runs them under the device lock; the
Ansible collection runs `uninstall_steps` through its own connection.
"""

from __future__ import annotations

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.facts.deployed import PathsPresent, UnitState, UserGroups
from edgekit.remote.command import Local, q, sh
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Change, Context, Noop, StepResult, run_steps
from edgekit.tuning.facts import TuningRecords
from edgekit.tuning.restore import restore_tuning_commands

FOLDERS = (L.ETC_DIR, f"/var/lib/{L.UNIT_NAME}", L.INSTALL_ROOT, L.BUILD_ROOT, L.GATE_DIR, L.STATE_DIR, L.EXPORTER_DIR,
           L.LORA_DIR)


class UnitRemoved:
    """A unit of edgekit's stopped, disabled and its file (and the copy kept for rollback) removed."""

    def __init__(self, unit: str, path: str):
        self.unit, self.path = unit, path
        self.name = f"remove {unit}"

    def plan(self, ctx: Context):
        files = ctx.fact(PathsPresent((self.path, f"{self.path}.previous")))
        state = ctx.fact(UnitState(self.unit))
        loaded = state.get("LoadState") not in (None, "", "not-found") or \
            state.get("ActiveState") not in (None, "", "inactive")
        if not files and not loaded:
            return Noop(f"{self.unit} is not installed")
        return Change(f"stop, disable and remove {self.unit} ({', '.join(files) or 'loaded, no file left'})",
                      [f"systemctl disable --now {self.unit} 2>/dev/null; rm -f {self.path} {self.path}.previous; "
                       "systemctl daemon-reload; systemctl reset-failed 2>/dev/null; true"])


class TuningRestored:
    """The Jetson settings edgekit changed (power mode, clocks unit, boot target, swap) as they were before, from the
    originals it recorded on the device; read before the records go with the state folder."""

    name = "tuning restore"

    def plan(self, ctx: Context):
        records = ctx.fact(TuningRecords())
        commands = restore_tuning_commands(records)
        if not commands:
            return Noop("edgekit changed no Jetson tuning here (no originals recorded)")
        kept = sorted(k for k in records if not k.endswith("_pending") and k != "clocks_store")
        return Change(f"put back what edgekit changed: {', '.join(kept)}", commands)


class ServiceUserRemoved:
    name = "remove service user"

    def plan(self, ctx: Context):
        if ctx.fact(UserGroups(L.SERVICE_USER)) is None:
            return Noop(f"no user {L.SERVICE_USER}")
        return Change(f"remove user {L.SERVICE_USER}", [sh("userdel", L.SERVICE_USER)])


class FoldersRemoved:
    """edgekit's folders on the device removed (the models too with purge_models); /opt/edgekit once empty."""

    name = "remove folders"

    def __init__(self, purge_models: bool = False):
        self.purge_models = purge_models

    def plan(self, ctx: Context):
        wanted = FOLDERS + ((L.MODELS_DIR,) if self.purge_models else ())
        present = ctx.fact(PathsPresent((*FOLDERS, L.MODELS_DIR, L.PREFIX)))
        gone = [p for p in wanted if p in present]
        kept = "" if self.purge_models or L.MODELS_DIR not in present else f"; models kept in {L.MODELS_DIR}"
        if not gone:
            return Noop(f"none of edgekit's folders is left{kept}")
        ops = ["rm -rf " + " ".join(q(p) for p in gone)]
        if L.PREFIX in present:
            ops.append(f"rmdir {q(L.PREFIX)} 2>/dev/null; true")     # only when nothing else is left in it
        return Change(f"remove {', '.join(gone)}{kept}", ops)


class ControllerForgets:
    """What this controller kept for the device (where it serves, its API key, the exporter's token) removed."""

    name = "controller state"

    def plan(self, ctx: Context):
        target = ctx.transport.name
        files = [p for p in controller_state.files(target) if p.exists()]
        if not files:
            return Noop(f"this controller keeps nothing for {target}")

        def apply(c: Context) -> None:
            controller_state.forget(target)

        return Change(f"forget {target} on this controller", [Local(f"remove {', '.join(map(str, files))}")], apply)


def uninstall_steps(purge_models: bool = False) -> list:
    """In order: units, tuning (before its records go with the state folder), user, folders, the controller's."""
    return [UnitRemoved(L.UNIT_NAME, L.UNIT_PATH), UnitRemoved(L.EXPORTER_UNIT, L.EXPORTER_UNIT_PATH),
            TuningRestored(), ServiceUserRemoved(), FoldersRemoved(purge_models), ControllerForgets()]


def uninstall(ctx: Context, purge_models: bool = False) -> list[StepResult]:
    """Remove the service, its user, settings and builds (models too with purge_models), under the device lock (a
    dry run takes none and changes nothing)."""
    with device_lock(ctx.transport, "uninstall", enabled=not ctx.dry_run, on_wait=ctx.lock_wait):
        return run_steps(ctx, uninstall_steps(purge_models))
