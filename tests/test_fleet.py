"""Inventories (edgekit.toml, Ansible INI and YAML), per-host settings, and the fleet runner's failure handling."""

from __future__ import annotations

import pytest

from edgekit.errors import PartialFailure, RemoteCommandFailed, UsageError
from edgekit.fleet import inventory as inv
from edgekit.provision import options_for
from edgekit.fleet.runner import raise_for_failures, run_fleet
from edgekit.models.steps import ModelRequest
from edgekit.provision import ProvisionOptions

TOML = """
[defaults]
model = "chinese-alpaca-2-1.3b"
ctx = 4096

[groups.lab]
hosts = ["orin-1", "orin-2"]
ctx = 2048

[hosts.orin-1]
address = "10.0.0.11"
user = "nvidia"
port = 2222

[hosts.orin-2]
model = "llama-3-chinese-8b-instruct-v3:q4_0"
"""

INI = """
[orins]
orin-a ansible_host=10.1.0.5 ansible_user=ubuntu edgekit_model=chinese-alpaca-2-1.3b:q4_k
orin-b ansible_host=10.1.0.6

[orins:vars]
edgekit_ctx=2048
ansible_port=2200

[xaviers]
xavier-1 ansible_host=10.1.0.9

[all_jetsons:children]
orins
xaviers
"""

YAML = """
all:
  children:
    lab:
      vars:
        edgekit_port: 8081
      hosts:
        orin-y:
          ansible_host: 10.2.0.1
          edgekit_ctx: 1024
"""


def test_toml_layers_defaults_group_host(tmp_path):
    path = tmp_path / "edgekit.toml"
    path.write_text(TOML)
    i = inv.load(path)
    one, two = i.select(["@lab"])
    assert one.target == "nvidia@10.0.0.11:2222"
    assert one.settings == {"model": "chinese-alpaca-2-1.3b", "ctx": 2048}
    assert two.target == "orin-2" and two.settings["model"].startswith("llama-3")
    assert [h.name for h in i.select(["@all", "orin-1", "extra@host:22"])] == ["orin-1", "orin-2", "extra@host:22"]
    assert i.select(["extra@host:22"])[0].target == "extra@host:22"
    with pytest.raises(UsageError, match="no group 'nope'"):
        i.select(["@nope"])


def test_ansible_ini_inventory(tmp_path):
    path = tmp_path / "hosts.ini"
    path.write_text(INI)
    i = inv.load(path)
    a = i.hosts["orin-a"]
    assert a.target == "ubuntu@10.1.0.5:2200"
    assert a.settings == {"ctx": "2048", "model": "chinese-alpaca-2-1.3b:q4_k"}
    assert [h.name for h in i.select(["@all_jetsons"])] == ["orin-a", "orin-b", "xavier-1"]


def test_ansible_yaml_inventory(tmp_path):
    path = tmp_path / "hosts.yml"
    path.write_text(YAML)
    host = inv.load(path).select(["@lab"])[0]
    assert host.target == "10.2.0.1" and host.settings == {"port": 8081, "ctx": 1024}


def test_bad_inventory_files(tmp_path):
    with pytest.raises(UsageError, match="inventory not found"):
        inv.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        inv.load(bad)


def test_host_settings_under_the_command_line():
    host = inv.Host("orin-1", settings={"model": "llama-3-chinese-8b-instruct-v3:q4_0", "ctx": "2048", "port": 9000},
                    source="inventory lab.toml, host orin-1")
    o = options_for({}, host)
    assert (o.model.name, o.model.quant, o.model.n_ctx) == ("llama-3-chinese-8b-instruct-v3", "q4_0", 2048)
    assert o.service.port == 9000 and o.service.n_ctx == 2048
    assert options_for({"port": 9100}, host).service.port == 9100          # an explicit flag wins
    with pytest.raises(UsageError, match="unknown setting 'modle' .inventory lab.toml, host x."):
        options_for({}, inv.Host("x", settings={"modle": "typo"}, source="inventory lab.toml, host x"))


def hosts(n: int) -> list[inv.Host]:
    return [inv.Host(f"h{i}") for i in range(n)]


def test_one_failure_does_not_stop_the_others():
    def job(host, row):
        if host.name == "h1":
            raise RemoteCommandFailed("make", 2, "boom")
        if host.name == "h2":
            raise ValueError("a bug")
        return "fine", host.name

    results = run_fleet(hosts(4), job, forks=2)
    assert [r.status for r in results] == ["ok", "failed", "failed", "ok"]
    assert results[1].exit_code == 4 and "ValueError: a bug" in results[2].message
    with pytest.raises(PartialFailure) as e:
        raise_for_failures(results)
    assert e.value.exit_code == 6 and "h1" in e.value.message and "h2" in e.value.message


def test_rolling_batches_stop_past_max_fail_percent():
    ran = []

    def job(host, row):
        ran.append(host.name)
        if host.name == "h0":
            raise RemoteCommandFailed("x", 1, "")
        return "ok", None

    results = run_fleet(hosts(6), job, forks=2, serial=2, max_fail_percent=40)
    assert sorted(ran) == ["h0", "h1"]           # 1 of 2 failed: 50% > 40%, later batches never start
    assert [r.status for r in results] == ["failed", "ok"] + ["skipped"] * 4
    with pytest.raises(PartialFailure):
        raise_for_failures(results)


def test_all_failed_keeps_the_common_exit_code():
    def job(host, row):
        raise RemoteCommandFailed("x", 1, "")

    with pytest.raises(Exception) as e:
        raise_for_failures(run_fleet(hosts(2), job))
    assert e.value.exit_code == 4


class Recorder:
    """A FleetReporter that keeps what it was told (the CLI's FleetTable draws the same calls)."""

    def __init__(self):
        self.updates, self.finished = [], None

    def update(self, title, results):
        self.updates.append([(r.host, r.status, r.message) for r in results])

    def finish(self, title, results):
        self.finished = (title, [(r.host, r.status, r.message) for r in results])


def test_the_runner_tells_its_reporter_and_draws_nothing(capsys):
    def job(host, row):
        row.step_started("build")
        return "built", None

    reporter = Recorder()
    run_fleet(hosts(2), job, title="build", reporter=reporter)
    assert reporter.updates[0] == [("h0", "pending", ""), ("h1", "pending", "")]
    assert any(("h0", "running", "build...") in rows for rows in reporter.updates)
    assert reporter.finished == ("build", [("h0", "ok", "built"), ("h1", "ok", "built")])
    assert capsys.readouterr() == ("", "")


def test_the_cli_fleet_table_draws_a_row_per_host(capsys):
    from edgekit.cli.common import FleetTable

    run_fleet(hosts(2), lambda host, row: ("seen", None), title="facts", reporter=FleetTable())
    err = capsys.readouterr().err
    assert "facts" in err and all(f"h{i}" in err for i in range(2)) and "seen" in err
