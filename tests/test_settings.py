"""One settings model, validated once before anything connects: every bad value is exit 2, one `error:` line naming
the setting and where it came from, one `hint:`, no traceback, nothing run on the target."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekit.errors import UsageError
from edgekit.fleet import inventory as inv
from edgekit.provision import options_for
from edgekit.settings import is_loopback, normalize_host, resolve
from tests.conftest import run_cli_inprocess as run_cli

REPO = Path(__file__).resolve().parents[1]


def _refused(res, *words: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), res.stderr
    assert "Traceback" not in res.stderr and not res.stdout.strip()
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("args, words", [
    (["--no-api-key", "--host", "0"], ["only on loopback", "0.0.0.0", "--host (flag)"]),
    (["--no-api-key", "--host", "::0"], ["only on loopback", "--host (flag)"]),
    (["--no-api-key", "--host", "0x0"], ["only on loopback"]),
    (["--no-api-key", "--host", "192.168.1.50"], ["only on loopback"]),
    (["--host", "127.0.0.1\nLLAMA_ARG_SLOT_SAVE_PATH=/var/lib/x"], ["--host (flag)", "control character"]),
    (["--ctx", "-5"], ["--ctx (flag)", "out of range"]),
    (["--parallel", "0"], ["--parallel (flag)"]),
    (["--parallel", "-3"], ["--parallel (flag)"]),
    (["--model-url", "http://x:99999/m.gguf", "--allow-unpinned"], ["--model-url (flag)", "out of range"]),
    (["--cmake-flag", "-DX=1 -DY=2"], ["--cmake-flag (flag)"]),
    (["--cmake-flag", "-DGGML_RPC=ON"], ["RPC"]),
    (["--sha256", "abc", "--model-url", "http://127.0.0.1/m.gguf"], ["--sha256 (flag)"]),
    (["--cors-origin", "*"], ["--cors-origin (flag)", "every web page"]),
    (["--cors-origin", "http://a.lan,http://b.lan"], ["--cors-origin (flag)", "one origin"]),
    (["--cors-origin", "http://a.lan/app"], ["--cors-origin (flag)", "one origin"]),
    (["--cors-origin", "file:///tmp/x.html"], ["--cors-origin (flag)"]),
    (["--cors-origin", "http://a.lan:70000"], ["--cors-origin (flag)", "out of range"]),
])
def test_bad_flags_are_refused_before_connecting(args, words):
    _refused(run_cli("provision", "local", "--dry-run", *args), *words)


def test_inventory_whose_hosts_is_a_string(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[groups.lab]\nhosts = "orin-1"\n')
    _refused(run_cli("provision", "@lab", "--inventory", str(path), "--dry-run"), "groups.lab.hosts", "list")


@pytest.mark.parametrize("body, words", [
    ('[hosts.orin-1]\naddress = "127.0.0.1"\nctx = "big"\n', ["ctx (inventory", "host orin-1", "'big'"]),
    ('[hosts.orin-1]\naddress = "127.0.0.1"\nport = "abc"\n', ["port 'abc'", "host orin-1"]),
    ('[defaults]\nhost = "0.0.0.0"\nno_api_key = true\n[hosts.orin-1]\naddress = "127.0.0.1"\n',
     ["only on loopback", "host (inventory"]),
    ('[hosts.orin-1]\naddress = "127.0.0.1"\n[defaults]\nparallel = 0\n', ["parallel (inventory"]),
])
def test_bad_inventory_values_name_the_file_and_host(tmp_path, body, words):
    path = tmp_path / "lab.toml"
    path.write_text(body)
    _refused(run_cli("provision", "orin-1", "--inventory", str(path), "--dry-run"), *words)


def test_inventory_port_out_of_range_is_a_setting_error(tmp_path):
    """`port` in a host's table is the SSH port; a server port of 70000 from [defaults] is refused too."""
    host = inv.Host("orin-1", settings={"port": 70000}, source="inventory lab.toml, host orin-1")
    with pytest.raises(UsageError, match=r"port \(inventory lab.toml, host orin-1\)"):
        options_for({}, host)


def test_the_repos_own_ansible_inventory_is_accepted():
    hosts = inv.load(REPO / "ansible" / "inventory.example.ini").select(["@jetsons"])
    opts = [options_for({}, h) for h in hosts]
    assert {o.model.name for o in opts} == {"gemma3-270m"} and {o.service.port for o in opts} == {8080}
    assert opts[2].model.n_ctx == 2048 and opts[0].model.sha256 and opts[0].model.source_url


def test_flags_win_over_inventory_and_sources_are_named():
    s = resolve({"ctx": 1024}, {"ctx": "2048", "port": "8181"}, "inventory lab.toml, host a")
    assert (s.ctx, s.port) == (1024, 8181)
    assert s.source("ctx") == "flag" and s.source("port") == "inventory lab.toml, host a"
    assert s.source("parallel") == "default"


@pytest.mark.parametrize("given, origin", [
    (None, None), ("HTTP://Dash.LAN:3000", "http://dash.lan:3000"), ("http://dash.lan:80/", "http://dash.lan"),
    ("https://dash.lan:443", "https://dash.lan"), ("https://10.0.0.5:8443", "https://10.0.0.5:8443"),
    ("http://[::1]:5173", "http://[::1]:5173"), ("LocalHost", "localhost")])
def test_cors_origin_is_written_as_browsers_send_an_origin(given, origin):
    """llama-server compares nothing: it sends the value as Access-Control-Allow-Origin and the browser compares it
    with its page's origin byte for byte, so the setting is kept in the form a browser writes."""
    s = resolve({"cors_origin": given})
    assert s.cors_origin == origin
    from edgekit.provision import options

    assert options(resolve({"cors_origin": given, "allow_unpinned": True})).service.cors_origin == origin


def test_hosts_are_canonical_and_loopback_is_an_allow_list():
    assert normalize_host("0") == "0.0.0.0" and normalize_host("0x0") == "0.0.0.0" and normalize_host("127.1") == "127.0.0.1"
    assert normalize_host("::0") == "::" and normalize_host("orin-1.lab") == "orin-1.lab"
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.50", "orin-1"))
    with pytest.raises(ValueError):
        normalize_host("a b")


@pytest.mark.parametrize("inventory, words", [({"no_api_key": "maybe"}, "no_api_key"),
                                              ({"cmake_flags": 5}, "cmake_flags")])
def test_odd_inventory_types_are_usage_errors_not_tracebacks(inventory, words):
    with pytest.raises(UsageError, match=words):
        resolve({}, inventory, "inventory lab.toml, host a")


def test_the_provision_help_shows_edgekits_own_defaults():
    from edgekit.settings import DEFAULTS

    res = run_cli("provision", "--help")
    text = " ".join(res.stdout.split())
    assert f"(default {DEFAULTS['port']})" in text and f"default {DEFAULTS['parallel']})" in text
    assert f"(default {DEFAULTS['model']})" in text


def test_a_new_setting_is_one_declaration(monkeypatch):
    """A throwaway setting added to the declaration alone is a command-line option, an inventory key, an Ansible
    module argument and a row of the settings reference."""
    import typer
    from typer.testing import CliRunner

    from edgekit import settings
    from edgekit.cli.options import takes_settings
    from edgekit.settings_doc import render

    monkeypatch.setattr(settings, "SETTINGS", [*settings.SETTINGS, settings.Setting(
        "throwaway_knob", int, 3, settings._int(1, 9), "A knob for this test (default {default}).",
        "--throwaway-knob", aliases=("knob",))])
    seen = []
    app = typer.Typer()

    @app.command()
    @takes_settings
    def cmd(flags: dict = None) -> None:
        seen.append(flags)

    res = CliRunner().invoke(app, ["--throwaway-knob", "7", "--no-api-key", "-m", "a", "-m", "b"])
    assert res.exit_code == 0, res.output
    assert seen[-1] == {"throwaway_knob": 7, "api_key": False, "model": "a", "models": ("a", "b")}
    assert "A knob for this test (default 3)." in " ".join(CliRunner().invoke(app, ["--help"]).output.split())
    assert resolve(seen[-1] | {"api_key": None, "model": None, "models": None}).throwaway_knob == 7
    s = resolve({}, {"knob": "5"}, "inventory lab.toml, host a")
    assert s.throwaway_knob == 5 and s.source("throwaway_knob") == "inventory lab.toml, host a"
    with pytest.raises(UsageError, match=r"throwaway_knob \(inventory lab.toml, host a\): 10 is out of range"):
        resolve({}, {"throwaway_knob": 10}, "inventory lab.toml, host a")
    assert settings.ansible_argument_spec()["throwaway_knob"] == {
        "type": "int", "required": False, "default": 3, "no_log": False, "aliases": ["knob"]}
    assert "| `throwaway_knob` | int | `3` | `--throwaway-knob` | `throwaway_knob`, `knob` |" in render()


def test_every_declared_flag_is_an_option_of_provision_and_reaches_the_settings():
    import typer.main

    from edgekit import settings
    from edgekit.cli import app

    command = typer.main.get_command(app).commands["provision"]
    options = {opt for p in command.params for opt in p.opts}
    declared = [s for s in settings.SETTINGS if s.flag]
    assert {s.flag for s in declared} | {s.short for s in declared if s.short} <= options
    assert {p.name for p in command.params} >= {s.name for s in declared}


def test_resolve_never_drops_a_flag_no_setting_declares():
    with pytest.raises(TypeError, match="metrics_prot"):
        resolve({"metrics_prot": 9000})


def test_an_unknown_inventory_key_is_refused_with_the_one_it_resembles(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text('[hosts.orin-1]\naddress = "127.0.0.1"\nmetrics_prot = 9000\n')
    res = run_cli("provision", "orin-1", "--inventory", str(path), "--dry-run")
    _refused(res, "unknown setting 'metrics_prot'", "host orin-1")
    assert "did you mean 'metrics_port'?" in res.stderr


def test_the_settings_reference_is_generated_from_the_declaration():
    from edgekit.settings_doc import PAGE, render

    assert PAGE.read_text() == render(), "docs/settings.md is stale: run `python3 -m edgekit.settings_doc`"
