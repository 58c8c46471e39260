"""`edgekit uninstall` and `edgekit rollback` as steps on handed-in facts, no SSH: each Noop and Change branch, and
through a recording transport, the commands a run executes are exactly the ones its dry run printed."""

from __future__ import annotations

import pytest

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.errors import UnsuitableDevice
from edgekit.facts.deployed import BuildLinks, FileText, PathsPresent, UnitState, UserGroups
from edgekit.remote.plan import run_steps
from edgekit.rollback import (AnswersAgain, BuildSwitchedBack, ControllerModel, RollbackPossible, Restarted, SettingsSwitchedBack,
                              rollback_steps)
from edgekit.tuning.facts import TuningRecords
from edgekit.uninstall import (FOLDERS, ControllerForgets, FoldersRemoved, ServiceUserRemoved, TuningRestored,
                               UnitRemoved, uninstall_steps)
from tests.steps_harness import context

RECORDS = TuningRecords.parse("@@file power-mode.json\n{\"id\": 1, \"name\": \"25W\"}\n"
                              "@@file default-target.json\n\"graphical.target\"\n")
OLD, NEW = f"{L.INSTALL_ROOT}/b8000-0123abcd", f"{L.INSTALL_ROOT}/b8100-4567ef01"
ENV_BEFORE = "LLAMA_ARG_MODEL=/opt/edgekit/models/gemma3-270m/gemma3-270m-q4_k_m.gguf\nLLAMA_ARG_ALIAS=gemma3-270m\n"
ENV_NOW = "LLAMA_ARG_MODEL=/opt/edgekit/models/tiny-llama/tiny-llama-f32.gguf\nLLAMA_ARG_ALIAS=tiny-llama\n"


def installed(purge: bool = False) -> dict:
    """A device after provision with tuning: the server unit, no exporter, the records, the user, the folders."""
    return {PathsPresent((L.UNIT_PATH, f"{L.UNIT_PATH}.previous")): [L.UNIT_PATH],
            UnitState(L.UNIT_NAME): {"LoadState": "loaded", "ActiveState": "active"},
            PathsPresent((L.EXPORTER_UNIT_PATH, f"{L.EXPORTER_UNIT_PATH}.previous")): [],
            UnitState(L.EXPORTER_UNIT): {"LoadState": "not-found", "ActiveState": "inactive"},
            TuningRecords(): RECORDS, UserGroups(L.SERVICE_USER): ["edgekit", "video"],
            PathsPresent((*FOLDERS, L.MODELS_DIR, L.PREFIX)):
                [L.ETC_DIR, L.INSTALL_ROOT, L.STATE_DIR, L.MODELS_DIR, L.PREFIX]}


def gone(purge: bool = False) -> dict:
    return {**installed(purge), PathsPresent((L.UNIT_PATH, f"{L.UNIT_PATH}.previous")): [],
            UnitState(L.UNIT_NAME): {"LoadState": "not-found", "ActiveState": "inactive"}, TuningRecords(): {},
            UserGroups(L.SERVICE_USER): None,
            PathsPresent((*FOLDERS, L.MODELS_DIR, L.PREFIX)):
                [] if purge else [L.MODELS_DIR, L.PREFIX]}


def dry_then_real(steps, given: dict):
    """(dry-run results, real results, what the real run sent to the device as text): both runs on the same facts."""
    dry = run_steps(context(given, dry_run=True), steps())
    ctx = context(given)
    real = run_steps(ctx, steps())
    return dry, real, [str(op) for op in ctx.transport.ran]


def printed_changes(results) -> list[str]:
    """What a dry run printed that changes the device (not the checks, not the controller's own work)."""
    return [c for r in results for c in r.commands if not c.startswith(("check: ", "on the controller: "))]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_uninstall_dry_run_prints_exactly_what_runs_then_a_second_uninstall_changes_nothing(home):
    controller_state.save("orin", {"url": "http://10.0.0.5:8080"})
    dry, real, ran = dry_then_real(uninstall_steps, installed())
    assert printed_changes(dry) == ran == printed_changes(real)
    assert [r.status for r in dry] == ["would-change", "ok", "would-change", "would-change", "would-change",
                                       "would-change"]
    assert ran[0] == (f"systemctl disable --now {L.UNIT_NAME} 2>/dev/null; rm -f {L.UNIT_PATH} {L.UNIT_PATH}.previous; "
                      "systemctl daemon-reload; systemctl reset-failed 2>/dev/null; true")
    assert ran[1].startswith("out=$(nvpmodel -m 1 </dev/null 2>&1)") and ran[2] == "systemctl set-default graphical.target"
    assert ran[3] == f"rm -rf {L.TUNING_DIR}" and ran[4] == "userdel edgekit"
    assert ran[5] == f"rm -rf {L.ETC_DIR} {L.INSTALL_ROOT} {L.STATE_DIR}" and ran[6].startswith(f"rmdir {L.PREFIX}")
    assert dry[-1].commands == [f"on the controller: remove {home / 'targets' / 'orin.json'}"]
    assert controller_state.load("orin") is None, "the real run forgot the device on the controller"
    assert "models kept in /opt/edgekit/models" in dry[4].message
    again, _, ran = dry_then_real(uninstall_steps, gone())
    assert ran == [] and [r.status for r in again] == ["ok"] * 6, [r.message for r in again]
    assert again[4].message == "none of edgekit's folders is left; models kept in /opt/edgekit/models"


def test_uninstall_with_purge_models_removes_them_too(home):
    dry, _, ran = dry_then_real(lambda: uninstall_steps(purge_models=True), installed(purge=True))
    assert ran[5] == f"rm -rf {L.ETC_DIR} {L.INSTALL_ROOT} {L.STATE_DIR} {L.MODELS_DIR}"
    assert FoldersRemoved(True).plan(context(gone(purge=True))).reason == "none of edgekit's folders is left"


def test_a_unit_loaded_without_its_file_is_still_stopped_and_a_missing_user_is_a_noop():
    given = {PathsPresent((L.UNIT_PATH, f"{L.UNIT_PATH}.previous")): [],
             UnitState(L.UNIT_NAME): {"LoadState": "loaded", "ActiveState": "failed"}}
    assert "loaded, no file left" in UnitRemoved(L.UNIT_NAME, L.UNIT_PATH).plan(context(given)).summary
    assert ServiceUserRemoved().plan(context({UserGroups(L.SERVICE_USER): None})).reason == "no user edgekit"


def rolled(previous: str = OLD, kept=(f"{L.ENV_PATH}.previous",), env_previous: str | None = ENV_BEFORE) -> dict:
    kept_files = tuple(f"{p}.previous" for p in (L.ENV_PATH, L.PRESET_PATH))
    return {BuildLinks(): {"current": NEW, "previous": previous}, PathsPresent(kept_files): list(kept),
            FileText(f"{L.ENV_PATH}.previous"): env_previous, FileText(L.ENV_PATH): ENV_BEFORE}


def rollback_changes():
    """The rollback steps that change the device (the health wait and the record are the service's own tests')."""
    return [s for s in rollback_steps() if s.name not in ("health", "last healthy")]


def test_rollback_dry_run_prints_exactly_what_runs(home):
    controller_state.save("orin", {"url": "http://10.0.0.5:8080", "model": "tiny-llama"})
    dry, real, ran = dry_then_real(rollback_changes, rolled())
    assert printed_changes(dry) == ran == printed_changes(real)
    assert ran == [f"ln -sfn {NEW} {L.INSTALL_ROOT}/previous.edgekit-tmp && mv -T {L.INSTALL_ROOT}/previous.edgekit-tmp "
                   f"{L.INSTALL_ROOT}/previous",
                   f"ln -sfn {OLD} {L.CURRENT}.edgekit-tmp && mv -T {L.CURRENT}.edgekit-tmp {L.CURRENT}",
                   f"cp -p {L.ENV_PATH} {L.ENV_PATH}.rollback && mv -f {L.ENV_PATH}.previous {L.ENV_PATH} && "
                   f"mv -f {L.ENV_PATH}.rollback {L.ENV_PATH}.previous",
                   f"systemctl reset-failed {L.UNIT_NAME} 2>/dev/null; systemctl restart {L.UNIT_NAME}"]
    assert {r.step: r.message for r in dry}["settings"] == \
        "settings restored: model /opt/edgekit/models/gemma3-270m/gemma3-270m-q4_k_m.gguf"
    assert dry[-1].commands == ["on the controller: record model gemma3-270m for orin"]
    assert controller_state.load("orin")["model"] == "gemma3-270m"


def test_rollback_of_the_settings_only_and_nothing_to_roll_back_to():
    only_settings = rolled(previous=NEW)
    assert BuildSwitchedBack().plan(context(only_settings)).reason == "no previous build (current b8100-4567ef01)"
    assert RollbackPossible().plan(context(only_settings)).reason == f"no previous build; {L.ENV_PATH}.previous kept"
    with pytest.raises(UnsuitableDevice, match="nothing to roll back to on orin") as info:
        run_steps(context(rolled(previous="", kept=())), rollback_steps())
    assert "edgekit status orin" in info.value.hint and info.value.exit_code == 5
    assert Restarted().plan(context({}, changed=set())).reason == "nothing was switched back"
    assert SettingsSwitchedBack().plan(context(rolled(kept=()))).reason == "no earlier settings kept"
    assert ControllerModel().plan(context({})).reason == "settings unchanged"


def test_tuning_restore_controller_forget_and_health_steps_alone(home):
    change = TuningRestored().plan(context({TuningRecords(): RECORDS}))
    assert change.summary == "put back what edgekit changed: default_target, power_mode" and len(change.commands) == 3
    assert TuningRestored().plan(context({TuningRecords(): {}})).reason.startswith("edgekit changed no Jetson tuning")
    assert ControllerForgets().plan(context({})).reason == "this controller keeps nothing for orin"
    assert AnswersAgain().plan(context({})).reason == "not restarted"
    waits = AnswersAgain().plan(context({}, dry_run=True, changed={"restart"}))
    assert [str(op) for op in waits.commands] == [f"check: GET /health where {L.ENV_PATH} says it listens, until it "
                                                  "answers (at most 300 s)"]
