"""Fleets for real: three stand-ins provisioned by one command, llama.cpp built once and pushed to the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.served import GEMMA_FILE, GEMMA_REPO

pytestmark = pytest.mark.e2e
NAMES = ["t-fleet1", "t-fleet2", "t-fleet3"]


@pytest.fixture(scope="module")
def fleet(standin_factory, model_server, gemma_gguf, llama_src, tmp_path_factory, session_dir):
    standins = [standin_factory(n) for n in NAMES]
    model_server.add(GEMMA_REPO, GEMMA_FILE, gemma_gguf)
    home = tmp_path_factory.mktemp("fleet-home")
    inventory = home / "edgekit.toml"
    inventory.write_text(
        '[defaults]\nmodel = "gemma3-270m"\nthreads = 1\n\n'
        f'[groups.lab]\nhosts = {json.dumps(NAMES)}\n\n'
        '[groups.broken]\nhosts = ["t-gone"]\n\n'
        '[hosts.t-gone]\naddress = "127.0.0.1"\nport = 1\nuser = "nobody"\n')
    env = {**os.environ, "EDGEKIT_HOME": str(home), "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config"),
           "COLUMNS": "200"}
    # every host fetches from the same controller cache: the model crosses the network once per host, not per pull
    base = ["provision", "--inventory", str(inventory), "--llama-src", str(llama_src), "--cpu",
            "--hf-endpoint", model_server.endpoint("127.0.0.1"), "--fetch-on", "controller", "--json",
            "--allow-unpinned"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, env=env,
                              timeout=3600)

    first = cli(*base[:1], "@lab", *base[1:])
    return {"standins": standins, "home": home, "base": base, "cli": cli, "first": first}


def test_three_hosts_one_build(fleet):
    res = fleet["first"]
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert len(out["builds"]) == 1, out["builds"]
    (build,) = out["builds"].values()
    builder = build["builder"]
    assert builder in NAMES or build["builder"] is None
    hosts = {h["host"]: h for h in out["hosts"]}
    assert set(hosts) == set(NAMES) and all(h["status"] == "changed" for h in hosts.values())
    for name, h in hosts.items():
        steps = {s["step"]: s for s in h["steps"]}
        if name == builder:
            assert "llama-compile" in steps
        else:
            assert "llama-compile" not in steps, f"{name} compiled llama.cpp"
            assert steps["llama-install-pack"]["status"] == "changed"
        assert steps["health"]["status"] == "ok"
        print(name, {s: round(v["seconds"], 1) for s, v in steps.items()})
    for sb in fleet["standins"]:
        with urllib.request.urlopen(f"http://{sb.address}:8080/health", timeout=10) as resp:
            assert resp.status == 200


def test_second_fleet_run_changes_nothing(fleet):
    res = fleet["cli"](*fleet["base"][:1], "@lab", *fleet["base"][1:])
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert all(h["changed"] == 0 for h in out["hosts"]), [(h["host"], h["changed"]) for h in out["hosts"]]
    assert all(b["builder"] is None for b in out["builds"].values()), "the build came from the controller cache"


def test_one_unreachable_host_does_not_stop_the_others(fleet):
    res = fleet["cli"](*fleet["base"][:1], "@lab", "@broken", *fleet["base"][1:])
    assert res.returncode == 6, res.stderr[-3000:]
    out = json.loads(res.stdout)
    status = {h["host"]: h["status"] for h in out["hosts"]}
    assert status["t-gone"] == "failed"
    assert all(status[n] == "ok" for n in NAMES)
    assert "1 of 4 host(s) failed: t-gone" in res.stderr


def test_facts_and_status_on_a_group(fleet):
    res = fleet["cli"]("status", "@lab", "--inventory", str(fleet["home"] / "edgekit.toml"), "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert {r["host"] for r in rows} == set(NAMES)
    assert all(r["value"]["active"] == "active" and r["value"]["health"] == "ok" for r in rows)
    res = fleet["cli"]("facts", "@lab", "--inventory", str(fleet["home"] / "edgekit.toml"), "--json")
    assert res.returncode == 0, res.stderr
    assert {r["host"] for r in json.loads(res.stdout)} == set(NAMES)
