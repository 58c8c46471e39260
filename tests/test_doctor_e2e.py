"""`edgekit doctor` over real SSH on an Orin Nano 8GB stand-in: clean, it finds nothing (exit 0); with three pains
planted (L4T 36.4.7, Super mode on a board whose GPU tops out at 624.75 MHz, a nearly full /opt/edgekit), it names
all three with their fixes (exit 8); and it changed nothing on the device.

Planted the way the stand-in plants a Jetson: /etc/nv_tegra_release is a file, the GPU's hardware cap is read by
the stand-in jetson_clocks (edgekit/sandbox/jetson_tools) from /etc/edgekit-standin/jetson-hw, and the small
disk is a real 64 MiB tmpfs mounted at /opt/edgekit."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.e2e

PAINS = {"nvmap-l4t", "super-capped", "disk"}
SNAPSHOT = ("sha256sum /etc/nv_tegra_release /etc/nvpmodel.conf /var/lib/nvpmodel/status 2>&1; "
            "ls -la /opt /etc/systemd/system; systemctl get-default; findmnt -n /opt/edgekit; true")


@pytest.fixture(scope="module")
def board(standin_factory):
    sb = standin_factory("t-doctor", jetson="orin-nano-8gb")
    ssh = ["ssh", "-F", str(sb.ssh_config), sb.name]

    def sh(command: str, check: bool = True) -> str:
        return subprocess.run(ssh + [command], capture_output=True, text=True, check=check, timeout=120).stdout

    sh("sudo nvpmodel -m 2 && sudo nvpmodel -q")     # MAXN_SUPER
    return sb, sh


def doctor(sb) -> tuple[int, dict, str]:
    r = run_cli("doctor", sb.name, "--json", env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)}, timeout=180)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}, r.stderr


def test_doctor_on_a_clean_stand_in_finds_nothing(board):
    sb, sh = board
    before = sh(SNAPSHOT)
    code, report, err = doctor(sb)
    assert code == 0 and report["findings"] == [], (report, err)
    assert len(report["checks"]) == 9
    assert sh(SNAPSHOT) == before                                  # read-only
    plain = run_cli("doctor", sb.name, env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)}, timeout=180)
    assert plain.returncode == 0 and "none of the 9 known pains found" in plain.stderr


def test_doctor_names_three_planted_pains_with_their_fixes(board):
    sb, sh = board
    sh("sudo sed -i 's/REVISION: 4\\.3,/REVISION: 4.7,/' /etc/nv_tegra_release && "
       "sudo mkdir -p /etc/edgekit-standin && echo gpu_max=624750000 | sudo tee /etc/edgekit-standin/jetson-hw && "
       "sudo mkdir -p /opt/edgekit && sudo mount -t tmpfs -o size=64m tmpfs /opt/edgekit && "
       "sudo dd if=/dev/zero of=/opt/edgekit/fill bs=1M count=60 status=none")
    try:
        before = sh(SNAPSHOT)
        code, report, err = doctor(sb)
        assert sh(SNAPSHOT) == before                              # read-only
        found = {x["check"]: x for x in report["findings"]}
        assert set(found) == PAINS, (report, err)
        assert code == 8 and report["exit_code"] == 8
        assert "L4T 36.4.7" in found["nvmap-l4t"]["found"] and "dist-upgrade" in found["nvmap-l4t"]["fix"]
        assert "power mode MAXN_SUPER, but the GPU tops out at 625 MHz" in found["super-capped"]["found"]
        assert f"edgekit provision {sb.name} --power-mode MAXN_SUPER" in found["super-capped"]["fix"]
        assert re.search(r"^\d MiB free of 64 MiB at /opt/edgekit", found["disk"]["found"]), found["disk"]
        assert "free space on the file system holding /opt/edgekit" in found["disk"]["fix"]
        table = run_cli("doctor", sb.name, env={"EDGEKIT_SSH_CONFIG": str(sb.ssh_config)}, timeout=180)
        assert table.returncode == 8 and "3 found (9 checks)" in table.stderr
    finally:
        sh("sudo umount /opt/edgekit; sudo rm -rf /etc/edgekit-standin /opt/edgekit; "
           "sudo sed -i 's/REVISION: 4\\.7,/REVISION: 4.3,/' /etc/nv_tegra_release", check=False)
