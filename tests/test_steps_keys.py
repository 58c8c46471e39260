"""`edgekit key rotate`: its steps on handed-in facts (what restarts, what is printed, the controller's copies) and
the CLI's refusal. The real rotation (old key 401, new key 200, Prometheus scraping with the new token) is in
tests/test_security_e2e.py."""

from __future__ import annotations

from edgekit import keys
from edgekit import layout as L
from edgekit import state as controller_state
from edgekit.facts.deployed import FileOwnerMode, FileText, UnitState
from edgekit.metrics import tokens
from edgekit.remote.command import Upload
from tests.conftest import run_cli_inprocess
from tests.steps_harness import Change, Noop, plan_and_apply

UNIT = ("[Service]\nExecStart=/usr/bin/python3 -I /opt/edgekit/exporter/edgekit-exporter.pyz --host 0.0.0.0 "
        "--port 9838 --token-file /etc/edgekit/exporter-token --interval 5\n")


def test_nothing_to_rotate_is_a_noop_with_the_reason(edgekit_home):
    dry, real, _ = plan_and_apply(keys.ApiKeyRotated(), {FileOwnerMode(L.API_KEY_PATH): None})
    assert isinstance(real, Noop) and "no key to rotate" in real.reason
    dry, real, _ = plan_and_apply(keys.ExporterTokenRotated(), {FileOwnerMode(L.EXPORTER_TOKEN): None})
    assert isinstance(real, Noop) and "no token to rotate" in real.reason


def test_a_stopped_server_gets_a_new_key_and_no_restart(edgekit_home):
    controller_state.save_api_key("orin", "ek-old")
    given = {FileOwnerMode(L.API_KEY_PATH): ("edgekit", "600"), FileText(L.ENV_PATH): "LLAMA_ARG_PORT=8080\n",
             UnitState(): {"ActiveState": "inactive"}}
    dry, real, ctx = plan_and_apply(keys.ApiKeyRotated(), given)
    assert isinstance(real, Change) and not any("restart" in str(op) for op in real.commands)
    assert "never printed" in str(real.commands[0])                # a dry run shows no secret, made or not
    upload = next(op for op in ctx.transport.ran if isinstance(op, Upload))
    new = upload.data.decode().strip()
    assert new.startswith("ek-") and new != "ek-old" and (upload.mode, upload.owner) == ("0600", "edgekit")
    assert controller_state.read_api_key("orin") == new == ctx.run.api_key_new


def test_the_token_restarts_only_the_exporter_and_checks_the_new_token(edgekit_home):
    tokens.save_token("orin", "ekm-old")
    given = {FileOwnerMode(L.EXPORTER_TOKEN): ("edgekit", "600"), UnitState(L.EXPORTER_UNIT): {"ActiveState": "active"},
             FileText(L.EXPORTER_UNIT_PATH): UNIT}
    dry, real, ctx = plan_and_apply(keys.ExporterTokenRotated(), given, answer=lambda command: "200\n")
    assert [str(op) for op in ctx.transport.ran[1:]] == [f"systemctl restart {L.EXPORTER_UNIT}"]
    new = tokens.read_token("orin")
    assert new.startswith("ekm-") and new != "ekm-old"
    assert any("http://127.0.0.1:9838/metrics" in r and L.EXPORTER_TOKEN in r for r in ctx.reads)
    assert not any(L.UNIT_NAME in str(op) for op in ctx.transport.ran)       # llama-server is left alone


def test_rotating_nothing_is_a_usage_error(edgekit_home):
    res = run_cli_inprocess("key", "rotate", "orin", "--no-api-key", "--no-token")
    assert res.returncode == 2 and res.stderr.startswith("error: nothing to rotate")
