"""Jetson tuning on a stand-in with Orin Nano 8GB identity (L4T R36.4.3, JetPack 6.2) and NVIDIA's captured
nvpmodel.conf with the Super modes. Real: systemd (targets, the oneshot unit, its order at boot, a reboot), sudo,
SSH. Played by edgekit/sandbox/jetson_tools: nvpmodel and jetson_clocks (their real command-line contract)."""

from __future__ import annotations

import json
import shlex
import subprocess
import time

import pytest

from tests.fixtures import captured as cap
from tests.served import GEMMA_FILE, GEMMA_REPO, cli_in, gemma_gguf  # noqa: F401  (fixture)

pytestmark = pytest.mark.e2e
TUNING = ("--power-mode", "MAXN_SUPER", "--clocks", "max", "--headless")


@pytest.fixture(scope="module")
def board(standin_factory, model_server, gemma_gguf, llama_src, tmp_path_factory, session_dir):  # noqa: F811
    sb = standin_factory("t-tune", jetson="orin-nano-8gb")
    model_server.add(GEMMA_REPO, GEMMA_FILE, gemma_gguf)
    home = tmp_path_factory.mktemp("tune-home")
    cli = cli_in(home, session_dir)
    def ssh(command: str) -> str:
        return subprocess.run(["ssh", "-F", str(sb.ssh_config), sb.name, command], capture_output=True, text=True,
                              timeout=60).stdout.strip()

    base = ["provision", sb.name, "-m", "gemma3-270m", "--llama-src", str(llama_src), "--cpu", "--hf-endpoint",
            model_server.endpoint(sb.host_address), "--fetch-on", "device", "--allow-unpinned", "--threads", "2",
            "--ctx", "1024", "--no-metrics"]
    return {"sb": sb, "cli": cli, "ssh": ssh, "base": base}


def test_dry_run_prints_the_mode_resolved_from_the_conf_the_clocks_unit_and_the_target(board):
    assert board["ssh"]("/usr/sbin/nvpmodel -q | head -1") == "NV Power Mode: 25W"
    assert board["ssh"]("systemctl get-default") == "graphical.target"
    res = board["cli"](*board["base"], *TUNING, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    steps = {s["step"]: s for s in json.loads(res.stdout)["steps"]}
    assert any(c.startswith("nvpmodel -m 2") for c in steps["power mode"]["commands"]), steps["power mode"]
    assert any("edgekit-jetson-clocks.service" in c for c in steps["jetson clocks"]["commands"])
    assert any("set-default multi-user.target" in c for c in steps["headless"]["commands"])
    assert board["ssh"]("/usr/sbin/nvpmodel -q | head -1") == "NV Power Mode: 25W", "a dry run changes nothing"


def test_maxn_super_on_l4t_36_3_is_refused_naming_jetpack_6_2_before_any_change(board):
    """Issue 20's defect: the same board and conf (MAXN_SUPER is id 2 there) with L4T R36.3 (JetPack 6.0) planted
    planned `nvpmodel -m 2` and exited 0. Now exit 5, naming JetPack 6.2 / L4T 36.4.3, the device as it was."""
    ssh, release = board["ssh"], board["ssh"]("cat /etc/nv_tegra_release")
    state = ("/usr/sbin/nvpmodel -q; cat /var/lib/nvpmodel/status; systemctl get-default; "
             "ls -a /var/lib/edgekit /etc/edgekit /opt/edgekit 2>&1; systemctl list-unit-files 'edgekit*' --no-legend")
    ssh(f"echo {shlex.quote(cap.NV_TEGRA_RELEASE_R36_3)} | sudo tee /etc/nv_tegra_release >/dev/null")
    try:
        before = ssh(state)
        for extra in ((), ("--dry-run",)):
            res = board["cli"](*board["base"], "--power-mode", "MAXN_SUPER", *extra)
            assert res.returncode == 5, res.stderr[-3000:]
            assert "JetPack 6.2" in res.stderr and "36.4.3" in res.stderr and "36.3.0" in res.stderr, res.stderr
            assert "nvpmodel -m" not in res.stdout + res.stderr
            assert ssh(state) == before, "a refusal leaves the device as it found it"
    finally:
        ssh(f"echo {shlex.quote(release)} | sudo tee /etc/nv_tegra_release >/dev/null")
    assert ssh("cat /etc/nv_tegra_release") == release


def test_applied_then_a_second_run_changes_nothing(board):
    res = board["cli"](*board["base"], *TUNING, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert board["ssh"]("/usr/sbin/nvpmodel -q | head -1") == "NV Power Mode: MAXN_SUPER"
    assert board["ssh"]("systemctl get-default") == "multi-user.target"
    assert board["ssh"]("systemctl is-enabled edgekit-jetson-clocks.service") == "enabled"
    again = board["cli"](*board["base"], *TUNING, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] == 0, again.stdout[-3000:]


def test_after_a_reboot_the_clocks_oneshot_ran_before_the_server(board):
    sb = board["sb"]
    board["ssh"]("sudo systemctl reboot")
    time.sleep(2)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not sb.ssh_ready():
        time.sleep(0.5)
    assert sb.ssh_ready(), "the stand-in did not come back"
    deadline = time.monotonic() + 60
    while board["ssh"]("systemctl is-active edgekit-llama-server") != "active" and time.monotonic() < deadline:
        time.sleep(1)
    show = board["ssh"]("systemctl show edgekit-jetson-clocks.service -p ExecMainExitTimestampMonotonic -p Result; "
                        "systemctl show edgekit-llama-server -p ExecMainStartTimestampMonotonic")
    props = dict(line.split("=", 1) for line in show.splitlines())
    assert props["Result"] == "success"
    assert 0 < int(props["ExecMainExitTimestampMonotonic"]) <= int(props["ExecMainStartTimestampMonotonic"]), props
    assert "FreqOverride=1" in board["ssh"]("sudo jetson_clocks --show"), "pinned again at boot"
    assert board["ssh"]("/usr/sbin/nvpmodel -q | head -1") == "NV Power Mode: MAXN_SUPER"


def test_uninstall_restores_the_original_mode_and_target(board):
    state = ("/usr/sbin/nvpmodel -q | head -1; systemctl get-default; id edgekit; ls /etc/edgekit /opt/edgekit "
             "/var/lib/edgekit; systemctl is-enabled edgekit-llama-server edgekit-jetson-clocks.service; true")
    before = board["ssh"](state)
    dry = board["cli"]("uninstall", board["sb"].name, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert board["ssh"](state) == before, "a dry run changes nothing"
    planned = {s["step"]: s["commands"] for s in json.loads(dry.stdout)["steps"] if s["status"] == "would-change"}
    assert any(c.startswith("out=$(nvpmodel -m 1 </dev/null") for c in planned["tuning restore"]), planned
    assert planned["remove service user"] == ["userdel edgekit"]
    res = board["cli"]("uninstall", board["sb"].name, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    ran = {s["step"]: s["commands"] for s in json.loads(res.stdout)["steps"] if s["status"] == "changed"}
    assert ran == planned, "the dry run printed the commands the run ran"
    assert board["ssh"]("/usr/sbin/nvpmodel -q | head -1") == "NV Power Mode: 25W"
    assert board["ssh"]("systemctl get-default") == "graphical.target"
    assert board["ssh"]("systemctl is-enabled edgekit-jetson-clocks.service 2>&1; true") != "enabled"


def test_a_second_uninstall_changes_nothing(board):
    res = board["cli"]("uninstall", board["sb"].name, "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["changed"] == 0, [s for s in out["steps"] if s["status"] != "ok"]
