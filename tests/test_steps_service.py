"""The service steps on fake facts, no SSH: each Noop and Change branch, and what a Change runs equals what the
dry run printed (tests/steps_harness.py)."""

from __future__ import annotations

import json

import pytest

from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.errors import UnsuitableDevice
from edgekit.facts.deployed import (FileOwnerMode, FileText, GpuGroups, PortListener, RunningBinary, UnitState,
                                    UserGroups)
from edgekit.remote.command import Upload
from edgekit.remote.plan import Change, Noop
from edgekit.remote.run_state import BuildState, ModelState, RunState
from edgekit import healthy
from edgekit.service.settings import render_env, render_unit
from edgekit.service.steps import (ApiKey, DaemonReload, EnvFile, Healthy, PortFree, PresetFile, ServiceOptions,
                                   ServiceRunning,
                                   ServiceUser, UnitFile, _variables)
from tests.steps_harness import context, plan_and_apply

ACTIVE = {"ActiveState": "active", "SubState": "running", "MainPID": "4242", "UnitFileState": "enabled",
          "NRestarts": "0"}
STOPPED = {"ActiveState": "inactive", "SubState": "dead", "MainPID": "0", "UnitFileState": "disabled"}


def run_state(**service) -> RunState:
    return RunState(service=ServiceOptions(**service),
                    models={"smollm2": ModelState("smollm2", f"{L.MODELS_DIR}/smollm2/smollm2.gguf", n_ctx=2048,
                                                  entry={"chat_template": "chatml"})},
                    build=BuildState(f"{L.INSTALL_ROOT}/b1-abc", L.CURRENT, {"backend": "cpu"}),
                    service_groups=["video"])


@pytest.fixture(autouse=True)
def controller_home(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path / "home"))


def test_service_user_exists_is_a_noop():
    dry, _, _ = plan_and_apply(ServiceUser(), {GpuGroups(): ["video"], UserGroups(L.SERVICE_USER): ["edgekit", "video"]})
    assert isinstance(dry, Noop) and "exists (groups video)" in dry.reason


def test_service_user_is_created_then_joins_the_gpu_groups():
    dry, _, ctx = plan_and_apply(ServiceUser(), {GpuGroups(): ["video", "render"], UserGroups(L.SERVICE_USER): None})
    assert isinstance(dry, Change) and dry.shown[0].startswith("useradd --system")
    assert ctx.transport.ran == ["useradd --system --user-group --no-create-home --home-dir "
                                 "/var/lib/edgekit-llama-server --shell /usr/sbin/nologin edgekit",
                                 "usermod -aG video,render edgekit"]
    assert ctx.run.service_groups == ["video", "render"]


def test_service_user_missing_a_group_is_added_only_to_it():
    dry, _, ctx = plan_and_apply(ServiceUser(), {GpuGroups(): ["video", "render"],
                                                 UserGroups(L.SERVICE_USER): ["edgekit", "video"]})
    assert ctx.transport.ran == ["usermod -aG render edgekit"] and dry.summary == "add edgekit to render"


def test_api_key_off_is_a_noop_naming_the_exposure():
    dry, _, _ = plan_and_apply(ApiKey(), {}, run=lambda: run_state(api_key=False, host="127.0.0.1"))
    assert isinstance(dry, Noop) and "127.0.0.1:8080" in dry.reason


def test_api_key_present_is_a_noop_and_the_controller_gets_its_copy():
    given = {FileOwnerMode(L.API_KEY_PATH): ("edgekit", "600"), FileText(L.API_KEY_PATH): "ek-abc\n"}
    _, real, ctx = plan_and_apply(ApiKey(), given, run=run_state)
    assert isinstance(real, Noop) and controller_state.read_api_key(ctx.transport.name) == "ek-abc"


def test_api_key_missing_is_generated_uploaded_secret_and_kept_on_the_controller():
    dry, _, ctx = plan_and_apply(ApiKey(), {FileOwnerMode(L.API_KEY_PATH): None}, run=run_state)
    upload = ctx.transport.ran[1]
    assert isinstance(upload, Upload) and upload.dest == L.API_KEY_PATH and upload.mode == "0600"
    assert upload.owner == "edgekit" and "sha256" not in str(dry.commands[1])     # a secret: no digest printed
    key = controller_state.read_api_key(ctx.transport.name)
    assert upload.data == (key + "\n").encode() and key.startswith("ek-") and ctx.run.api_key_new == key


def test_api_key_with_wrong_mode_keeps_the_key_clients_use():
    given = {FileOwnerMode(L.API_KEY_PATH): ("root", "644"), FileText(L.API_KEY_PATH): "ek-old\n"}
    _, _, ctx = plan_and_apply(ApiKey(), given, run=run_state)
    assert ctx.transport.ran[1].data == b"ek-old\n" and ctx.run.api_key_new is None


@pytest.mark.parametrize("step,render", [(EnvFile(), render_env), (UnitFile(), render_unit)])
def test_rendered_file_up_to_date_is_a_noop(step, render):
    want = render(_variables(context({}, run=run_state())))
    dry, _, _ = plan_and_apply(step, {FileText(step.path): want}, run=run_state)
    assert isinstance(dry, Noop) and "up to date" in dry.reason


@pytest.mark.parametrize("step", [EnvFile(), UnitFile()])
def test_rendered_file_changed_keeps_the_previous_and_uploads_as_printed(step):
    dry, _, ctx = plan_and_apply(step, {FileText(step.path): "old\n"}, run=run_state)
    assert ctx.transport.ran[1] == f"cp -p {step.path} {step.path}.previous"
    assert dry.shown[-1].startswith(f"upload → {step.path} (0644 root, ") and "sha256" in dry.shown[-1]
    assert "-old" in dry.detail["diff"]


def test_rendered_file_missing_is_written_without_a_previous():
    dry, _, ctx = plan_and_apply(EnvFile(), {FileText(L.ENV_PATH): None}, run=run_state)
    assert dry.summary == f"write {L.ENV_PATH}" and len(ctx.transport.ran) == 2
    assert b"LLAMA_ARG_CTX_SIZE=2048" in ctx.transport.ran[1].data


def test_daemon_reload_only_when_the_unit_changed():
    assert isinstance(plan_and_apply(DaemonReload(), {})[0], Noop)
    _, _, ctx = plan_and_apply(DaemonReload(), {}, changed={UnitFile.name})
    assert ctx.transport.ran == ["systemctl daemon-reload"]


def test_port_free_or_held_by_the_service_is_a_noop():
    assert "is free" in plan_and_apply(PortFree(), {PortListener(8080): ""}, run=run_state)[0].reason
    held = 'LISTEN 0 512 0.0.0.0:8080 0.0.0.0:* users:(("llama-server",pid=4242,fd=3))'
    dry = plan_and_apply(PortFree(), {PortListener(8080): held, UnitState(): ACTIVE}, run=run_state)[0]
    assert "served by edgekit-llama-server (PID 4242)" in dry.reason


def test_port_held_by_another_program_is_refused_naming_it():
    other = 'LISTEN 0 511 *:8080 *:* users:(("nginx",pid=77,fd=6))'
    with pytest.raises(UnsuitableDevice, match="nginx") as info:
        plan_and_apply(PortFree(), {PortListener(8080): other, UnitState(): ACTIVE}, run=run_state)
    assert info.value.exit_code == 5 and "--port" in info.value.hint


def test_service_running_and_unchanged_is_a_noop():
    given = {UnitState(): ACTIVE, RunningBinary("4242"): ("/opt/x/bin/llama-server", "/opt/x/bin/llama-server")}
    assert isinstance(plan_and_apply(ServiceRunning(), given)[0], Noop)


def test_service_stopped_is_enabled_and_started():
    _, _, ctx = plan_and_apply(ServiceRunning(), {UnitState(): STOPPED})
    assert ctx.transport.ran == [f"systemctl enable {L.UNIT_NAME}", f"systemctl restart {L.UNIT_NAME}"]


def test_service_restarts_when_its_settings_changed_in_this_run():
    dry, _, ctx = plan_and_apply(ServiceRunning(), {UnitState(): ACTIVE}, changed={"server settings", "port"})
    assert dry.summary == f"restart {L.UNIT_NAME} (server settings changed)"
    assert ctx.transport.ran == [f"systemctl restart {L.UNIT_NAME}"]


def test_service_restarts_when_current_moved_under_it():
    given = {UnitState(): ACTIVE, RunningBinary("4242"): ("/opt/a/bin/llama-server", "/opt/b/bin/llama-server")}
    dry, _, _ = plan_and_apply(ServiceRunning(), given)
    assert "older build than current" in dry.summary


def test_health_is_not_waited_for_in_a_dry_run():
    dry = Healthy().plan(context({}, dry_run=True, run=run_state()))
    assert isinstance(dry, Noop) and "would wait" in dry.reason


def _deploy_state(record: dict | None, env: str = "A=1\n", unit: str = "[Unit]\n") -> dict:
    return {"current": f"{L.INSTALL_ROOT}/b1-abc", "env": env, "unit": unit, "preset": "", "healthy": record}


def test_record_healthy_noop_when_already_recorded():
    st = _deploy_state({"build": f"{L.INSTALL_ROOT}/b1-abc", "env_sha256": healthy.sha("A=1\n"),
                        "unit_sha256": healthy.sha("[Unit]\n"), "model": "m", "at": "t"})
    step = healthy.RecordHealthy()
    assert isinstance(plan_and_apply(step, {healthy.DeployState(): st}, run=run_state, after_health=True)[1], Noop)


def test_record_healthy_copies_env_and_unit_and_uploads_the_record():
    st = _deploy_state(None, env="LLAMA_ARG_ALIAS=smollm2\n")
    _, real, ctx = plan_and_apply(healthy.RecordHealthy(), {healthy.DeployState(): st}, run=run_state,
                                  after_health=True)
    assert ctx.transport.ran[0].startswith("install -d -m 0700 /var/lib/edgekit/last-healthy")
    record = ctx.transport.ran[-1]
    assert record.dest == L.HEALTHY and b'"model": "smollm2"' in record.data


# -- router mode: several models, one service -----------------------------------------------------------------
def router_state(models_max: int = 1) -> RunState:
    run = run_state()
    run.models["gemma3-270m"] = ModelState("gemma3-270m", f"{L.MODELS_DIR}/gemma3-270m/g.gguf", n_ctx=1024, entry={
        "chat_template": "gemma", "sampling": {"temperature": 0.5, "top_k": 40, "unknown": 1}})
    run.models_max = models_max
    return run


def test_router_env_names_the_presets_and_no_single_model():
    env = render_env(_variables(context({}, run=router_state())))
    assert f"LLAMA_ARG_MODELS_PRESET={L.PRESET_PATH}" in env and "LLAMA_ARG_MODELS_MAX=1" in env
    assert "LLAMA_ARG_MODEL=" not in env and "LLAMA_ARG_CTX_SIZE" not in env and "LLAMA_ARG_CHAT_TEMPLATE" not in env


def test_router_presets_carry_each_models_settings_the_default_loaded_at_start():
    dry, _, ctx = plan_and_apply(PresetFile(), {FileText(L.PRESET_PATH): None}, run=router_state)
    text = ctx.transport.ran[-1].data.decode()
    smol, gemma = text.split("[smollm2]")[1].split("[gemma3-270m]")
    assert "chat-template = chatml" in smol and "ctx-size = 2048" in smol and "load-on-startup = true" in smol
    assert "chat-template = gemma" in gemma and "ctx-size = 1024" in gemma and "temp = 0.5" in gemma
    assert "top-k = 40" in gemma and "unknown" not in gemma and "load-on-startup" not in gemma


def test_presets_are_a_noop_with_one_model_and_removed_when_left_behind():
    assert "no router presets" in plan_and_apply(PresetFile(), {FileText(L.PRESET_PATH): None}, run=run_state)[0].reason
    _, _, ctx = plan_and_apply(PresetFile(), {FileText(L.PRESET_PATH): "old"}, run=run_state)
    assert ctx.transport.ran == [f"rm -f {L.PRESET_PATH}"]


def test_router_presets_are_part_of_the_healthy_state_and_restored():
    preset = "version = 1\n\n[smollm2]\nmodel = /m.gguf\n"
    st = {**_deploy_state(None, env="LLAMA_ARG_MODELS_PRESET=/etc/edgekit/models.ini\n"), "preset": preset}
    _, _, ctx = plan_and_apply(healthy.RecordHealthy(), {healthy.DeployState(): st}, run=run_state,
                               after_health=True)
    record = json.loads(ctx.transport.ran[-1].data)
    assert record["model"] == "smollm2" and record["preset_sha256"] == healthy.sha(preset)
    assert f"cp -p {L.PRESET_PATH} /var/lib/edgekit/last-healthy/models.ini" in ctx.transport.ran
    changed = {**st, "healthy": record, "preset": preset + "[other]\n"}
    assert not healthy.is_recorded(changed)
    assert f"install -m 0644 /var/lib/edgekit/last-healthy/models.ini {L.PRESET_PATH}" in \
        healthy.restore_commands(changed)
    single = {**st, "healthy": {**record, "preset_sha256": healthy.sha("")}}
    assert f"rm -f {L.PRESET_PATH}" in healthy.restore_commands(single)


def test_router_children_memory_by_alias():
    from edgekit.facts.deployed import RouterChildren

    ps = (" 190000 /opt/edgekit/llama.cpp/current/bin/llama-server --host 127.0.0.1 --port 41234 --alias gemma3-270m\n"
          "   5000 /usr/bin/python3 helper.pyz --alias not-a-server\n"
          " 120000 /opt/edgekit/llama.cpp/current/bin/llama-server\n")        # the router itself: no alias
    assert RouterChildren.parse(ps) == {"gemma3-270m": 190000 * 1024}


def test_a_rollback_is_recorded_with_what_failed_when_why_and_what_it_returned_to():
    attempted = {"current": "/opt/edgekit/llama.cpp/b2-cpu", "env": "LLAMA_ARG_ALIAS=broken\nLLAMA_ARG_PORT=8080\n",
                 "unit": "", "preset": ""}
    back = {"build": "/opt/edgekit/llama.cpp/b1-cpu", "model": "gemma3-270m", "at": "2026-12-08T00:00:00+0000"}
    record = healthy.rollback_record("health", "llama-server is crash-looping", ["service", "model file: broken"],
                                     attempted, back, True, "2026-12-08T01:02:03+0000")
    assert record["attempted"] == {"build": "/opt/edgekit/llama.cpp/b2-cpu", "model": "broken",
                                   "env_sha256": healthy.sha(attempted["env"])}
    assert record["changed"] == ["model file: broken", "service"] and record["returned_to"] == back
    op = healthy.record_rollback_op(record)
    assert op.dest == L.LAST_ROLLBACK and op.mode == "0644" and op.owner == "root"
    assert healthy.parse_rollback(op.data.decode()) == record
    assert healthy.describe_rollback(record) == (
        "2026-12-08T01:02:03+0000: health failed after changing model file: broken, service (build b2-cpu, model "
        "broken): llama-server is crash-looping; returned to build b1-cpu, model gemma3-270m, recorded "
        "2026-12-08T00:00:00+0000")
    failed_too = healthy.rollback_record("service", "x", ["service"], attempted, back, False, "t")
    assert healthy.describe_rollback(failed_too).endswith("x; restoring the last healthy state failed too")
    assert [healthy.parse_rollback(t) for t in (None, "", "{", "[]", '{"at": 1}')] == [None] * 5
