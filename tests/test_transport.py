"""The transport's file writes and host-key hints, on the `local` transport and with paramiko's connect faked:
uploads go through a fresh mktemp name (a name another user made first is never written through), and the
changed-host-key hint is a command that really removes the key edgekit checked."""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
import time
from pathlib import Path

import paramiko
import pytest

from tests.prereqs import require
from fabric import Connection

from edgekit import paths
from edgekit.errors import ConnectError, RemoteCommandFailed
from edgekit.remote.target import parse_target
from edgekit.remote.transport import ReadOnly, Transport, changed_key_hint, host_key_name

KEY_OLD = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILq/qZe8oVPE6B5Ht4gyz3L+HGGJ8uo9K/GSt4WbxCBw"
KEY_NEW = "AAAAC3NzaC1lZDI1NTE5AAAAIBfjYv4o48yn3c3jrhyHicmPSErNv043fJ7ptt3VyxkF"


@pytest.fixture
def local():
    with Transport(parse_target("local")) as t:
        yield t


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_put_writes_through_a_fresh_temp_name(local, tmp_path):
    src = tmp_path / "src"
    src.write_text("new")
    dest_dir = tmp_path / "d"
    dest_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (dest_dir / "f.edgekit-tmp").symlink_to(victim)     # the old fixed temp name, made first by someone else
    local.put(src, str(dest_dir / "f"), mode="0640")
    assert victim.read_text() == "untouched"
    dest = dest_dir / "f"
    assert not dest.is_symlink() and dest.read_text() == "new" and stat.S_IMODE(dest.stat().st_mode) == 0o640
    assert _files(dest_dir) == ["f", "f.edgekit-tmp"]      # nothing of ours left behind


def test_put_onto_a_directory_fails_instead_of_dropping_the_file_inside(local, tmp_path):
    """`python3 /tmp/x.py` runs a directory's __main__.py: a directory planted at the destination must not
    receive the file (plain `mv` would move it inside and the caller would run the planted __main__.py)."""
    src = tmp_path / "src"
    src.write_text("print('ours')\n")
    planted = tmp_path / "tmp" / "script.py"
    planted.mkdir(parents=True)
    (planted / "__main__.py").write_text("print('planted')\n")
    with pytest.raises(RemoteCommandFailed):
        local.put(src, str(planted))
    assert _files(planted) == ["__main__.py"] and _files(planted.parent) == ["script.py"]


def test_put_removes_stale_temps_of_killed_runs_only(local, tmp_path):
    src = tmp_path / "src"
    src.write_text("new")
    d = tmp_path / "models"
    d.mkdir()
    stale, busy, other = d / ".m[1].gguf.edgekit-AAAAAA", d / ".m[1].gguf.edgekit-BBBBBB", d / ".x.gguf.edgekit-CCCCCC"
    for p in (stale, busy, other):
        p.write_text("partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    local.put(src, str(d / "m[1].gguf"))
    assert _files(d) == [busy.name, other.name, "m[1].gguf"]


def test_put_that_fails_leaves_no_temp(local, tmp_path):
    src = tmp_path / "src"
    src.write_text("new")
    dest_dir = tmp_path / "d"
    dest_dir.mkdir()
    with pytest.raises(RemoteCommandFailed):
        local.put(src, str(dest_dir / "f"), mode="not-a-mode")     # chmod fails after the copy
    assert _files(dest_dir) == []


@pytest.mark.needs("root")      # sudo puts as root: the local transport runs them directly as root
def test_sudo_put_writes_through_a_fresh_temp_name(local, tmp_path):
    src = tmp_path / "src"
    src.write_text("new")
    dest_dir = tmp_path / "etc"
    dest_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (dest_dir / "env.edgekit-tmp").symlink_to(victim)
    local.put(src, str(dest_dir / "env"), sudo=True, mode="0600")
    dest = dest_dir / "env"
    assert victim.read_text() == "untouched" and dest.read_text() == "new"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600 and dest.stat().st_uid == 0
    assert _files(dest_dir) == ["env", "env.edgekit-tmp"]


def test_put_temp_is_a_fresh_private_file(local, tmp_path):
    src = tmp_path / "script.py"
    src.write_text("print(1)\n")
    a, b = local.put_temp(src, "edgekit-device-fetch"), local.put_temp(src, "edgekit-device-fetch")
    try:
        assert a != b and re.fullmatch(r"/tmp/edgekit-device-fetch\.\w{8}", a)
        assert Path(a).read_text() == "print(1)\n" and stat.S_IMODE(os.stat(a).st_mode) == 0o600
        assert os.stat(a).st_uid == os.geteuid()
    finally:
        for p in (a, b):
            Path(p).unlink(missing_ok=True)


# -- a changed host key ---------------------------------------------------------------------------------------------
def test_host_key_names_follow_openssh():
    assert host_key_name("10.0.0.5", 22) == "10.0.0.5" and host_key_name("orin", None) == "orin"
    assert host_key_name("10.0.0.5", 2222) == "[10.0.0.5]:2222"
    hint = changed_key_hint("[10.0.0.5]:2222", [Path("/home/me/.config/edgekit/known_hosts")])
    assert "`ssh-keygen -f /home/me/.config/edgekit/known_hosts -R '[10.0.0.5]:2222'`" in hint
    assert "--accept-new-host-key" in hint


class _Key:
    def get_name(self):
        return "ssh-ed25519"

    def get_base64(self):
        return KEY_NEW


def _changed_key_error(monkeypatch, target: str) -> ConnectError:
    def refuse(self, *a, **kw):
        raise paramiko.BadHostKeyException(self.host, _Key(), _Key())

    monkeypatch.setattr(Connection, "open", refuse)
    with pytest.raises(ConnectError) as e:
        Transport(parse_target(target))._context()
    return e.value


@pytest.mark.parametrize("target, name", [("jetson@10.0.0.5:2222", "[10.0.0.5]:2222"),
                                          ("jetson@10.0.0.5", "10.0.0.5")])
def test_changed_host_key_hint_is_a_command_that_removes_it(monkeypatch, target, name):
    known = paths.known_hosts()
    known.write_text(f"{name} {KEY_OLD}\nother-host {KEY_OLD}\n")
    error = _changed_key_error(monkeypatch, target)
    assert "has CHANGED" in error.message and error.exit_code == 3
    commands = re.findall(r"`(ssh-keygen [^`]*)`", error.hint)
    assert commands == [f"ssh-keygen -f {shlex.quote(str(known))} -R {shlex.quote(name)}"], error.hint
    require("ssh-keygen")
    subprocess.run(shlex.split(commands[0]), check=True, capture_output=True)
    assert paramiko.HostKeys(str(known)).lookup(name) is None
    assert paramiko.HostKeys(str(known)).lookup("other-host") is not None


def test_changed_host_key_hint_names_each_file_holding_it(monkeypatch, tmp_path, session_dir):
    extra = tmp_path / "ssh_known_hosts"
    extra.write_text(f"[10.0.0.5]:2222 {KEY_OLD}\n")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  UserKnownHostsFile {extra}\n")
    monkeypatch.setenv("EDGEKIT_SSH_CONFIG", str(config))
    paths.known_hosts().write_text("")
    error = _changed_key_error(monkeypatch, "jetson@10.0.0.5:2222")
    assert f"`ssh-keygen -f {extra} -R '[10.0.0.5]:2222'`" in error.hint
    assert str(paths.known_hosts()) not in error.hint


def test_every_round_trip_is_traced_with_its_time_and_exit_code_and_secrets_masked(tmp_path):
    """-v: the one transport reports each command (secrets masked) and file copy as it completes, and counts them;
    a dry run's transport uploads nothing."""
    seen = []
    with Transport(parse_target("local"), become_password="hunter2-sudo", on_trace=seen.append) as t:
        t.run("sleep 0.2; echo --api-key ek-abcdef123456 hunter2-sudo >/dev/null", env={"HF_TOKEN": "hf_x" * 10})
        t.run("exit 3", check=False)
        src = tmp_path / "src"
        src.write_text("x")
        t.put(src, str(tmp_path / "dest"))
        assert t.round_trips == len(seen) and len(seen) >= 4        # mktemp, the copy, chmod+mv
        with pytest.raises(RuntimeError, match="a dry run writes nothing on the device"):
            ReadOnly(t).put(src, str(tmp_path / "other"))
    first, failed = seen[0], seen[1]
    assert first.what.startswith("export HF_TOKEN=<redacted>;") and "--api-key <redacted>" in first.what
    assert "ek-abcdef123456" not in first.what and "hunter2-sudo" not in first.what and "hf_x" not in first.what
    assert first.seconds >= 0.2 and first.exit_code == 0 and first.host == "local" and not first.sudo
    assert failed.exit_code == 3 and failed.what == "exit 3"
    copy = next(s for s in seen if s.exit_code is None)
    assert copy.what.startswith(f"copy {src} (1 bytes) -> {tmp_path}/.dest.edgekit-")
    assert not (tmp_path / "other").exists()


def test_verbose_prints_each_remote_command_and_counts_them(tmp_path):
    """`-v` on a command that reaches a device (here `local`): each command on stderr with its exit code, and the
    count at the end."""
    from tests.conftest import run_cli_inprocess

    res = run_cli_inprocess("logs", "local", "-n", "1", "-v")
    lines = res.stderr.splitlines()
    traced = [line for line in lines if line.startswith("[local] ")]
    assert any("journalctl -u edgekit-llama-server -n 1 --no-pager" in line and "exit " in line for line in traced)
    assert re.fullmatch(r"\d+ remote round trip\(s\) to local, [\d.]+s waiting on them", lines[-1]), lines[-1]
    assert int(lines[-1].split()[0]) == len(traced) >= 2        # who logs in (id -un), then journalctl
