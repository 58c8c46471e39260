"""The exporter's install step on fake facts, no SSH: ExporterInstalled( installs, is a no-op when all is in place,
keeps the token Prometheus holds, refuses a taken port or no token off loopback before any change, and checks
/metrics answers after a start. What a Change runs equals what the dry run printed (tests/steps_harness.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgekit import layout as L
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.facts.deployed import FileOwnerMode, FileSha256, FileText, PortListener, UnitState
from edgekit.metrics import bundle, tokens
from edgekit.metrics.steps import (EXAMPLE, EXPORTER_PYZ, EXPORTER_TOKEN, EXPORTER_UNIT, EXPORTER_UNIT_PATH,
                                   ExporterInstalled, ExporterOptions, ExporterPortFree, JtopGroup,
                                   render_exporter_unit)
from edgekit.remote.command import Check, Local, Upload
from edgekit.remote.plan import Change, Noop
from tests.steps_harness import plan_and_apply

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ekm-" + "t" * 43
ACTIVE = {"ActiveState": "active", "SubState": "running", "MainPID": "777", "UnitFileState": "enabled"}
STOPPED = {"ActiveState": "inactive", "SubState": "dead", "MainPID": "0", "UnitFileState": "disabled"}
OURS = 'LISTEN 0 5 0.0.0.0:9838 0.0.0.0:* users:(("python3",pid=777,fd=3))'


def answer(status: str = "200"):
    def reply(command: str) -> str:
        if "urllib.request" in command:
            return f"{status}\n"
        if command.startswith("journalctl"):
            return "edgekit-exporter: cannot read the token file /etc/edgekit/exporter-token: Permission denied\n"
        return ""
    return reply


def in_place(options: ExporterOptions | None = None, changes: dict | None = None) -> dict:
    options = options or ExporterOptions()
    given = {UnitState(EXPORTER_UNIT): ACTIVE, PortListener(options.port): OURS,
             FileSha256(EXPORTER_PYZ): bundle.sha256(), FileOwnerMode(EXPORTER_TOKEN): ("edgekit", "600"),
             FileText(EXPORTER_TOKEN): TOKEN + "\n", JtopGroup(): ["jtop"],
             FileText(EXPORTER_UNIT_PATH): render_exporter_unit(options, ["jtop"])}
    given.update(changes or {})
    return given


def test_the_rendered_unit_in_systemd_is_the_template_rendered():
    assert (ROOT / "systemd/edgekit-exporter.service").read_text() == render_exporter_unit(*EXAMPLE)


@pytest.mark.needs("systemd-analyze")
def test_systemd_knows_every_directive_of_the_unit(tmp_path):
    unit = tmp_path / f"{EXPORTER_UNIT}.service"
    unit.write_text(render_exporter_unit(*EXAMPLE))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "Unknown" not in p.stderr + p.stdout, p.stderr


def test_the_unit_is_hardened_and_runs_the_zipapp_with_the_token():
    unit = render_exporter_unit(ExporterOptions(), [])
    assert ("ExecStart=/usr/bin/python3 -I /opt/edgekit/exporter/edgekit-exporter.pyz --host 0.0.0.0 --port 9838 "
            "--token-file /etc/edgekit/exporter-token --interval 5") in unit
    for line in ("User=edgekit", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateDevices=yes",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "MemoryMax=96M", "CapabilityBoundingSet=",
                 "SystemCallFilter=@system-service"):
        assert f"\n{line}\n" in unit, line
    assert "SupplementaryGroups" not in unit and "SupplementaryGroups=jtop" in render_exporter_unit(ExporterOptions(),
                                                                                                    ["jtop"])
    assert "--no-token" in render_exporter_unit(ExporterOptions(host="127.0.0.1", token=False), [])


def test_all_in_place_is_a_noop():
    tokens.save_token("orin", TOKEN)
    dry, real, ctx = plan_and_apply(ExporterInstalled(), in_place(), answer())
    assert isinstance(real, Noop) and "active (PID 777) on 0.0.0.0:9838, bearer token" in real.reason
    assert ctx.transport.ran == []


def test_a_fresh_device_gets_the_zipapp_token_and_unit_then_a_checked_start():
    given = in_place(changes={UnitState(EXPORTER_UNIT): STOPPED, PortListener(9838): "", FileSha256(EXPORTER_PYZ): None,
                        FileOwnerMode(EXPORTER_TOKEN): None, FileText(EXPORTER_UNIT_PATH): None, JtopGroup(): []})
    del given[FileText(EXPORTER_TOKEN)]                     # not read when there is no file
    dry, real, ctx = plan_and_apply(ExporterInstalled(), given, answer())
    assert isinstance(real, Change) and real.summary == "start edgekit-exporter (exporter, token, unit)"
    kinds = [" ".join(op.split()[:2]) if isinstance(op, str) else type(op).__name__ for op in real.commands]
    assert kinds == ["install -d", "Upload", "install -d", "Upload", "Local", "Upload", "systemctl daemon-reload",
                     "systemctl enable", "systemctl restart", "Check"]
    pyz, token, unit = [op for op in ctx.transport.ran if isinstance(op, Upload)]
    assert (pyz.dest, pyz.mode, pyz.owner, pyz.data) == (EXPORTER_PYZ, "0644", "root", bundle.build())
    assert (token.dest, token.mode, token.owner, token.group) == (EXPORTER_TOKEN, "0600", "edgekit", "edgekit")
    assert real.commands[3].secret and "sha256" not in str(real.commands[3])   # a secret: no digest printed
    saved = tokens.read_token("orin")
    assert token.data == (saved + "\n").encode() and saved.startswith("ekm-")
    assert oct(tokens.token_path("orin").stat().st_mode & 0o777) == "0o600"
    assert unit.dest == EXPORTER_UNIT_PATH and b"--token-file /etc/edgekit/exporter-token" in unit.data
    assert ctx.transport.ran[-2:] == ["systemctl enable edgekit-exporter", "systemctl restart edgekit-exporter"]
    [poll] = ctx.reads
    assert "http://127.0.0.1:9838/metrics" in poll and EXPORTER_TOKEN in poll and saved not in poll


def test_a_token_with_the_wrong_owner_is_kept_not_replaced():
    given = in_place(changes={FileOwnerMode(EXPORTER_TOKEN): ("root", "644"),
                              FileText(EXPORTER_TOKEN): "ekm-held-by-prom\n"})
    _, real, ctx = plan_and_apply(ExporterInstalled(), given, answer())
    [token] = [op for op in ctx.transport.ran if isinstance(op, Upload)]
    assert token.data == b"ekm-held-by-prom\n" and tokens.read_token("orin") == "ekm-held-by-prom"
    assert real.summary == "restart edgekit-exporter (token)"


def test_a_missing_controller_copy_is_fetched_without_touching_the_device():
    dry, real, ctx = plan_and_apply(ExporterInstalled(), in_place(), answer())
    assert isinstance(dry, Noop) and "copied to the controller" in real.reason
    assert ctx.transport.ran == [] and tokens.read_token("orin") == TOKEN


def test_a_changed_unit_is_uploaded_reloaded_and_restarted():
    tokens.save_token("orin", TOKEN)
    options = ExporterOptions(port=9900, interval_s=2)
    given = in_place(options, {FileText(EXPORTER_UNIT_PATH): render_exporter_unit(ExporterOptions(), ["jtop"])})
    _, real, ctx = plan_and_apply(ExporterInstalled(options), given, answer())
    assert [op if isinstance(op, str) else op.dest for op in ctx.transport.ran] == [
        EXPORTER_UNIT_PATH, "systemctl daemon-reload", "systemctl restart edgekit-exporter"]
    assert "--port 9900" in real.detail["diff"] and "--interval 2" in real.detail["diff"]


def test_an_inactive_exporter_is_started_and_a_disabled_one_enabled():
    tokens.save_token("orin", TOKEN)
    _, real, ctx = plan_and_apply(ExporterInstalled(), in_place(changes={UnitState(EXPORTER_UNIT): {
        **ACTIVE, "UnitFileState": "disabled"}}), answer())
    assert real.summary == "enable edgekit-exporter (not enabled)" and ctx.transport.ran == [
        "systemctl enable edgekit-exporter"]
    _, real, ctx = plan_and_apply(ExporterInstalled(), in_place(changes={UnitState(EXPORTER_UNIT): {
        **STOPPED, "UnitFileState": "enabled"}, PortListener(9838): ""}), answer())
    assert real.summary == "start edgekit-exporter (not active)" and isinstance(real.commands[-1], Check)


def test_a_port_taken_by_another_program_is_refused_before_any_change():
    given = in_place(changes={UnitState(EXPORTER_UNIT): STOPPED, PortListener(9838):
                        'LISTEN 0 5 *:9838 *:* users:(("nvidia_gpu_expo",pid=55,fd=3))'})
    with pytest.raises(UnsuitableDevice, match="port 9838 on orin is already in use by") as e:
        plan_and_apply(ExporterInstalled(), given, answer())
    assert "nvidia_gpu_expo" in e.value.message


def test_the_port_is_checked_before_any_change():
    dry, _, ctx = plan_and_apply(ExporterPortFree(), {UnitState(EXPORTER_UNIT): STOPPED, PortListener(9838): ""})
    assert isinstance(dry, Noop) and dry.reason == "port 9838 is free" and ctx.transport.ran == []
    dry, _, _ = plan_and_apply(ExporterPortFree(), {UnitState(EXPORTER_UNIT): ACTIVE, PortListener(9838): OURS})
    assert dry.reason == "port 9838 is served by edgekit-exporter (PID 777)"
    with pytest.raises(UnsuitableDevice, match="already in use by"):
        plan_and_apply(ExporterPortFree(), {UnitState(EXPORTER_UNIT): STOPPED, PortListener(9838): OURS})
    with pytest.raises(UnsuitableDevice, match="without a token"):
        plan_and_apply(ExporterPortFree(ExporterOptions(token=False)), {})


def test_no_token_is_refused_off_loopback_and_allowed_on_it():
    with pytest.raises(UnsuitableDevice, match="without a token"):
        plan_and_apply(ExporterInstalled(ExporterOptions(token=False)), {}, answer())
    options = ExporterOptions(host="127.0.0.1", token=False)
    given = {UnitState(EXPORTER_UNIT): STOPPED, PortListener(9838): "", FileSha256(EXPORTER_PYZ): bundle.sha256(),
             JtopGroup(): [], FileText(EXPORTER_UNIT_PATH): None}
    _, real, ctx = plan_and_apply(ExporterInstalled(options), given, answer())
    assert not [op for op in real.commands if isinstance(op, (Local, Upload)) and getattr(op, "dest", "") ==
                EXPORTER_TOKEN]
    [unit] = [op for op in ctx.transport.ran if isinstance(op, Upload)]
    assert b"--host 127.0.0.1 --port 9838 --no-token" in unit.data
    assert tokens.read_token("orin") is None


def test_an_exporter_that_does_not_answer_fails_with_its_journal():
    tokens.save_token("orin", TOKEN)
    with pytest.raises(RemoteCommandFailed, match="did not answer /metrics with 200") as e:
        plan_and_apply(ExporterInstalled(),
                       in_place(changes={UnitState(EXPORTER_UNIT): STOPPED, PortListener(9838): ""}), answer("401"))
    assert "Permission denied" in e.value.output and "edgekit provision orin" in e.value.hint


def test_the_device_paths_live_under_edgekit_prefixes():
    assert EXPORTER_PYZ.startswith(L.PREFIX + "/") and EXPORTER_TOKEN.startswith(L.ETC_DIR + "/")
