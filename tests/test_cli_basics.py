"""The CLI as a user runs it: help, `facts local`, targets, and the error funnel's messages and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.errors import UsageError
from edgekit.remote.target import parse_target
from tests.conftest import run_cli, run_cli_inprocess


def test_help_lists_commands():
    res = run_cli("--help")
    assert res.returncode == 0
    for command in ("facts", "sandbox"):
        assert command in res.stdout


def test_facts_help():
    res = run_cli_inprocess("facts", "--help")
    assert res.returncode == 0
    assert "--json" in res.stdout and "--accept-new-host-key" in res.stdout


def test_facts_local_json_has_real_figures():
    res = run_cli("facts", "local", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["jetson"] is None
    assert data["cpus"] >= 1
    assert data["memory"]["total_bytes"] > 2**28
    assert 0 < data["memory"]["available_bytes"] <= data["memory"]["total_bytes"]
    assert data["disk"]["free_bytes"] > 0
    assert data["arch"]


@pytest.mark.parametrize("text, host, user, port", [
    ("jetson.local", "jetson.local", None, None),
    ("nvidia@10.0.0.5:2222", "10.0.0.5", "nvidia", 2222),
    ("ubuntu@[fe80::1]:22", "fe80::1", "ubuntu", 22),
    ("orin-1", "orin-1", None, None),
])
def test_targets(text, host, user, port):
    t = parse_target(text)
    assert (t.host, t.user, t.port) == (host, user, port)


@pytest.mark.parametrize("bad", ["", "a@b@c", "host:99999", "host:port"])
def test_bad_targets_are_usage_errors(bad):
    with pytest.raises(UsageError):
        parse_target(bad)


def test_bad_target_exit_code_and_hint():
    res = run_cli_inprocess("facts", "host:99999")
    assert res.returncode == 2
    assert "error:" in res.stderr and "hint:" in res.stderr


def test_unreachable_host_is_exit_3_with_hint():
    # 127.0.0.1 port 1: nothing listens there, the connection is refused at once.
    res = run_cli_inprocess("facts", "nobody@127.0.0.1:1")
    assert res.returncode == 3, res.stderr
    assert "cannot connect to nobody@127.0.0.1:1" in res.stderr
    assert "hint:" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_identity_file_is_usage_error(tmp_path):
    res = run_cli_inprocess("facts", "nobody@127.0.0.1:1", "-i", str(tmp_path / "nope"))
    assert res.returncode == 2
    assert "identity file not found" in res.stderr


def test_the_demo_runs_in_the_library_and_only_the_cli_prints(monkeypatch, capsys):
    """sandbox/demo.py orchestrates and prints nothing; it tells its reporter (the CLI's DemoPrinter prints)."""
    from types import SimpleNamespace

    from edgekit.sandbox import demo

    class FakeTransport:
        def __init__(self, target):
            self.target = target

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    class FakeStream:
        result = SimpleNamespace(timings={}, finish_reason="stop")

        def __iter__(self):
            return iter(["A GPU ", "computes."])

    sb = SimpleNamespace(name="demo", address="10.77.1.2")
    monkeypatch.setattr(demo.standin, "up", lambda name, jetson, log: sb)
    monkeypatch.setattr(demo, "demo_options", lambda src, log: log("cached") or "opts")
    monkeypatch.setattr(demo, "Transport", FakeTransport)
    monkeypatch.setattr(demo.prov, "provision", lambda context, opts: [])
    monkeypatch.setattr(demo, "endpoint_for", lambda name: SimpleNamespace(url="http://10.77.1.2:8080"))
    monkeypatch.setattr(demo, "LlamaClient", lambda endpoint: SimpleNamespace(chat=lambda *a, **k: FakeStream()))
    told = []
    reporter = SimpleNamespace(steps=None, log=lambda m: told.append(("log", m)),
                               phase=lambda n, text: told.append((n, text)), answer=lambda p: told.append(("answer", p)))
    run = demo.run_demo("demo", "what does a GPU do?", None, reporter)
    assert capsys.readouterr() == ("", "")
    assert [t[0] for t in told] == [1, "log", 2, 3, "answer", "answer"] and run.answer.finish_reason == "stop"
    assert told[3][1] == f"asking {demo.MODEL} at http://10.77.1.2:8080: what does a GPU do?"


def test_login_options_are_one_value(monkeypatch):
    from edgekit.cli import common

    opened = []
    monkeypatch.setattr(common, "open_transport", lambda *args: opened.append(args))
    common.Login(None, True, False).open("orin-1", "/keys/orin")
    common.Login(Path("/keys/mine"), False, True).open("orin-1", "/keys/orin")
    assert opened == [("orin-1", Path("/keys/orin"), True, False, None), ("orin-1", Path("/keys/mine"), False, True, None)]
