"""`edgekit rollback` as steps: back to the previous llama.cpp build and the previous server settings (model, ctx, the
router's presets), a restart, the service answering again, recorded as the last healthy state.

Each step reads its facts and returns the exact commands or a Noop; the check before them refuses (exit 5) when
there is nothing to roll back to, before any change. `rollback(ctx)` runs them under the device lock; the Ansible
collection runs `rollback_steps()` through its own connection.
"""

from __future__ import annotations

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.errors import UnsuitableDevice
from edgekit.facts.deployed import BuildLinks, FileText, PathsPresent
from edgekit.llamacpp.current import switch_commands
from edgekit.remote.command import Check, Local, q
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Change, Context, Noop, StepResult, run_steps
from edgekit import healthy
from edgekit.service.settings import parse_env

SETTINGS = (L.ENV_PATH, L.PRESET_PATH)          # the settings and, in router mode, the models' presets
HEALTH_TIMEOUT_S = 300


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _model(env_text: str | None) -> str | None:
    env = parse_env(env_text or "")
    return env.get("LLAMA_ARG_MODEL") or env.get("LLAMA_ARG_MODELS_PRESET")


class RollbackPossible:
    """Refuses before any change when the device keeps neither a previous build nor previous settings."""

    name = "rollback check"

    def plan(self, ctx: Context):
        links = ctx.fact(BuildLinks())
        kept = ctx.fact(PathsPresent(tuple(f"{p}.previous" for p in SETTINGS)))
        build = links["previous"] and links["previous"] != links["current"]
        if not build and not kept:
            raise UnsuitableDevice(f"nothing to roll back to on {ctx.transport.name}: one build and one setting only",
                                   hint=f"see `edgekit status {ctx.transport.name}`")
        said = [f"previous build {_name(links['previous'])}" if build else "no previous build",
                *(f"{p} kept" for p in kept)]
        return Noop("; ".join(said))


class BuildSwitchedBack:
    name = "build"

    def plan(self, ctx: Context):
        links = ctx.fact(BuildLinks())
        current, previous = links["current"], links["previous"]
        if not previous or previous == current:
            return Noop(f"no previous build (current {_name(current) or 'none'})")
        return Change(f"build: {_name(current)} -> {_name(previous)}", switch_commands(previous, current),
                      detail={"from": _name(current), "to": _name(previous)})


class SettingsSwitchedBack:
    """The env file (and router presets) swapped with the copies the last change kept: a second rollback undoes it."""

    name = "settings"

    def plan(self, ctx: Context):
        kept = ctx.fact(PathsPresent(tuple(f"{p}.previous" for p in SETTINGS)))
        if not kept:
            return Noop("no earlier settings kept")
        model = _model(ctx.fact(FileText(f"{L.ENV_PATH}.previous"))) if f"{L.ENV_PATH}.previous" in kept else None
        ops = []
        for path in (p.removesuffix(".previous") for p in kept):
            ops.append(f"cp -p {path} {path}.rollback && mv -f {path}.previous {path} && "
                       f"mv -f {path}.rollback {path}.previous")
        return Change(f"settings restored: model {model or 'as before'}", ops, detail={"model": model})


class Restarted:
    """The service restarted when a build or settings were switched back (reset-failed first: after a crash loop
    systemd refuses a restart, "start request repeated too quickly")."""

    name = "restart"

    def plan(self, ctx: Context):
        if not {BuildSwitchedBack.name, SettingsSwitchedBack.name} & ctx.changed:
            return Noop("nothing was switched back")
        return Change(f"restart {L.UNIT_NAME}",
                      [f"systemctl reset-failed {L.UNIT_NAME} 2>/dev/null; systemctl restart {L.UNIT_NAME}"])


class AnswersAgain:
    """The restored service answers /health where its env file says it listens (at most HEALTH_TIMEOUT_S)."""

    name = "health"

    def plan(self, ctx: Context):
        if Restarted.name not in ctx.changed:
            return Noop("not restarted")

        detail: dict = {}

        def apply(c: Context) -> None:
            from edgekit.provision import wait_as_configured     # orchestration: provision's wait, as it restores
            detail["healthy_after_s"] = round(wait_as_configured(c, HEALTH_TIMEOUT_S), 1)

        return Change("the service answers again",
                      [Check(f"GET /health where {L.ENV_PATH} says it listens, until it answers "
                             f"(at most {HEALTH_TIMEOUT_S} s)")], apply, detail)


class ControllerModel:
    """The default model this controller records for the device (ask/chat/bench use it), as the restored settings
    name it."""

    name = "controller model"

    def plan(self, ctx: Context):
        if SettingsSwitchedBack.name not in ctx.changed:
            return Noop("settings unchanged")
        # a dry run reads the settings the switch will restore (still the .previous copy); a run, the restored ones
        env = parse_env(ctx.fact(FileText(L.ENV_PATH + (".previous" if ctx.dry_run else ""))) or "")
        alias = env.get("LLAMA_ARG_ALIAS")
        if not alias or not controller_state.load(ctx.transport.name):
            return Noop("this controller records no model for it")

        def apply(c: Context) -> None:
            controller_state.set_model(c.transport.name, alias)

        return Change(f"default model {alias} on this controller", [Local(f"record model {q(alias)} for "
                                                                           f"{ctx.transport.name}")], apply)


def rollback_steps() -> list:
    return [RollbackPossible(), BuildSwitchedBack(), SettingsSwitchedBack(), Restarted(), AnswersAgain(),
            healthy.RecordHealthy(), ControllerModel()]


def rollback(ctx: Context) -> list[StepResult]:
    """Switch back to the previous build and the previous server settings, restart, check it answers, record it as
    the last healthy state; under the device lock (a dry run takes none and changes nothing)."""
    with device_lock(ctx.transport, "rollback", enabled=not ctx.dry_run, on_wait=ctx.lock_wait):
        return run_steps(ctx, rollback_steps())
