"""`edgekit facts` and the transport against stand-in devices over real SSH (real sshd, systemd, sudo)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from edgekit.errors import ConnectError, RemoteCommandFailed
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_facts_over_ssh_on_plain_linux(standin):
    res = run_cli("facts", standin.name, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["hostname"] == standin.name
    assert data["systemd"] is True
    assert data["sudo"] == "nopasswd"
    assert data["jetson"] is None and data["cuda"] is None and data["gpu"] is None
    assert data["os"]["id"] == "debian"


def test_facts_with_jetson_identity(standin_factory):
    sb = standin_factory("t-orin", jetson="orin-nano-8gb")
    res = run_cli("facts", sb.name, "--json")
    assert res.returncode == 0, res.stderr
    j = json.loads(res.stdout)["jetson"]
    assert j["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert j["module"].startswith("Jetson Orin Nano 8GB")
    assert j["l4t"].startswith("36.") and j["jetpack"].startswith("6.")
    assert j["compute_capability"] == "8.7"
    table = run_cli("facts", sb.name)
    assert table.returncode == 0
    assert "sm_87" in table.stderr and "JetPack 6.2" in table.stderr


def test_unknown_host_key_refused_then_accepted_explicitly(standin, edgekit_home, tmp_path):
    bare = tmp_path / "empty_config"
    bare.write_text("")
    env = {"EDGEKIT_SSH_CONFIG": str(bare)}
    target = f"jetson@{standin.address}"
    res = run_cli("facts", target, "-i", str(standin.key), env=env)
    assert res.returncode == 3
    assert "unknown host key" in res.stderr and "--accept-new-host-key" in res.stderr
    res = run_cli("facts", target, "-i", str(standin.key), "--accept-new-host-key", "--json", env=env)
    assert res.returncode == 0, res.stderr
    assert standin.address in (edgekit_home / "known_hosts").read_text()
    res = run_cli("facts", target, "-i", str(standin.key), "--json", env=env)
    assert res.returncode == 0, res.stderr


def test_changed_host_key_is_refused(standin, edgekit_home, tmp_path):
    bare = tmp_path / "empty_config"
    bare.write_text("")
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = (other.with_suffix(".pub")).read_text().split()[:2]
    (edgekit_home / "known_hosts").write_text(f"{standin.address} {kind} {blob}\n")
    res = run_cli("facts", f"jetson@{standin.address}", "-i", str(standin.key), env={"EDGEKIT_SSH_CONFIG": str(bare)})
    assert res.returncode == 3
    assert "has CHANGED" in res.stderr


def test_wrong_key_is_exit_3(standin, edgekit_home, tmp_path):
    bare = tmp_path / "empty_config"
    bare.write_text("")
    shutil.copy(standin.known_hosts, edgekit_home / "known_hosts")
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    res = run_cli("facts", f"jetson@{standin.address}", "-i", str(wrong), env={"EDGEKIT_SSH_CONFIG": str(bare)})
    assert res.returncode == 3
    assert "authentication failed for jetson@" in res.stderr and "hint:" in res.stderr


def test_sudo_refused_and_password_sudo(standin):
    with Transport(parse_target(f"guest@{standin.name}")) as t:
        with pytest.raises(ConnectError) as e:
            t.sudo("true")
        assert e.value.exit_code == 3
    with Transport(parse_target(f"sudopw@{standin.name}")) as t:
        with pytest.raises(ConnectError, match="needs a password"):
            t.sudo("true")
    with Transport(parse_target(f"sudopw@{standin.name}"), become_password="edgekit") as t:
        assert t.sudo("id -u").stdout.strip() == "0"
    with Transport(parse_target(f"sudopw@{standin.name}"), become_password="wrong") as t:
        with pytest.raises(ConnectError, match="refused the password"):
            t.sudo("true")


def test_remote_failure_carries_command_code_and_tail(standin):
    with Transport(parse_target(standin.name)) as t:
        with pytest.raises(RemoteCommandFailed) as e:
            t.run("echo first; echo last-words >&2; exit 7")
    assert e.value.status == 7 and e.value.exit_code == 4
    assert "exit 7" in e.value.message and "last-words" in e.value.message


def test_put_is_atomic_and_sets_owner_and_mode(standin, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("hello\n")
    with Transport(parse_target(standin.name)) as t:
        t.sudo("mkdir -p /etc/edgekit-test")
        t.put(src, "/etc/edgekit-test/f.txt", sudo=True, mode="0600")
        out = t.sudo("stat -c '%U %a' /etc/edgekit-test/f.txt; cat /etc/edgekit-test/f.txt; "
                     "ls /etc/edgekit-test; ls /tmp | grep -c edgekit-upload || true").stdout.split("\n")
        t.sudo("rm -rf /etc/edgekit-test")
    assert out[0] == "root 600" and out[1] == "hello"
    assert out[2] == "f.txt"       # no temp file left beside it
    assert out[3] == "0"           # nor in /tmp
