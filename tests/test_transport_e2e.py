"""The transport's writes and host-key hint over real SSH on a stand-in: a temp name another local user created
first is never written through, and the changed-key hint's command really fixes what edgekit refused."""

from __future__ import annotations

import re
import shlex
import subprocess
import uuid

import pytest

from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e


def test_put_ignores_a_temp_name_planted_by_another_user(standin, tmp_path):
    remote = f"/tmp/edgekit-e2e-{uuid.uuid4().hex[:8]}"
    src = tmp_path / "f"
    src.write_text("from the controller\n")
    with Transport(parse_target(f"guest@{standin.name}")) as guest:
        guest.run(f"echo guest > {remote}.victim && chmod 666 {remote}.victim && "
                  f"ln -s {remote}.victim {remote}.edgekit-tmp")
    try:
        with Transport(parse_target(standin.name)) as t:
            t.put(src, remote, mode="0640")
            assert t.run(f"cat {remote}").stdout == "from the controller\n"
            assert t.run(f"stat -c '%U %a %F' {remote}").stdout.split() == ["jetson", "640", "regular", "file"]
            assert t.run(f"cat {remote}.victim").stdout == "guest\n"
            t.sudo(f"mkdir -p /etc/edgekit-e2e && ln -sfn /etc/shadow /etc/edgekit-e2e/env.edgekit-tmp")
            before = t.sudo("sha256sum /etc/shadow").stdout
            t.put(src, "/etc/edgekit-e2e/env", sudo=True, mode="0600", owner="root")
            assert t.sudo("sha256sum /etc/shadow").stdout == before
            assert t.sudo("stat -c '%U %a' /etc/edgekit-e2e/env").stdout.split() == ["root", "600"]
            assert t.sudo("ls -A /etc/edgekit-e2e").stdout.split() == ["env", "env.edgekit-tmp"]
            script = t.put_temp(src, "edgekit-device-fetch")
            assert re.fullmatch(r"/tmp/edgekit-device-fetch\.\w{8}", script)
            assert t.run(f"stat -c '%U %a' {script}").stdout.split() == ["jetson", "600"]
    finally:
        with Transport(parse_target(standin.name)) as t:
            t.sudo(f"rm -rf {remote} {remote}.victim {remote}.edgekit-tmp /etc/edgekit-e2e /tmp/edgekit-device-fetch.*",
                   check=False)


def test_changed_host_key_hint_runs_and_fixes_it(standin, edgekit_home, tmp_path):
    bare = tmp_path / "empty_config"
    bare.write_text("")
    env = {"EDGEKIT_SSH_CONFIG": str(bare)}
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = edgekit_home / "known_hosts"
    known.write_text(f"{standin.address} {kind} {blob}\n")
    target = f"jetson@{standin.address}"
    res = run_cli("facts", target, "-i", str(standin.key), env=env)
    assert res.returncode == 3 and "has CHANGED" in res.stderr
    hint = " ".join(res.stderr.split())
    commands = re.findall(r"`(ssh-keygen [^`]*)`", hint)
    assert commands == [f"ssh-keygen -f {shlex.quote(str(known))} -R {shlex.quote(standin.address)}"], hint
    subprocess.run(shlex.split(commands[0]), check=True, capture_output=True)
    res = run_cli("facts", target, "-i", str(standin.key), "--accept-new-host-key", "--json", env=env)
    assert res.returncode == 0, res.stderr


def test_ctrl_c_stops_waiting_for_a_remote_command(standin):
    """A remote command without a pty ignores the ^C invoke would send: edgekit closes the channel and raises."""
    import _thread
    import threading
    import time

    with Transport(parse_target(standin.name)) as t:
        t.run("true")                                        # connected before the clock starts
        timer = threading.Timer(1.0, _thread.interrupt_main)
        start = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            t.run("sleep 30")
        assert time.monotonic() - start < 10, "Ctrl-C waited for the remote command to end"


def test_a_secret_in_flight_is_never_readable_by_another_user(standin):
    """While a root-owned secret waits on the device for `install`, its staged copy is the login user's 0600 file
    in a 0700 folder: the stand-in's `guest` user tries to read it at that moment and cannot. It travelled on stdin
    (no command line holds it, no controller temp file) and lands 0640 root:jetson as asked."""
    secret = f"sk-{uuid.uuid4().hex}"
    seen: dict = {}

    class Watching(Transport):
        def run(self, command, **kwargs):
            staged = re.search(r"install -m \S+ -o \S+ -g \S+ '?(/tmp/edgekit-upload\.\w+)/upload", command)
            if staged:                                       # the secret is on the device, about to be installed
                folder = staged.group(1)
                seen["modes"] = super().run(f"stat -c '%a %U' {folder} {folder}/upload", sudo=True).stdout.split("\n")
                with Transport(parse_target(f"guest@{standin.name}")) as guest:
                    seen["guest"] = guest.run(f"cat {folder}/upload; ls {folder}", check=False)
            return super().run(command, **kwargs)

    traced: list = []
    try:
        with Watching(parse_target(standin.name)) as t:
            t.sudo("mkdir -p /etc/edgekit-e2e")
            t.on_trace = traced.append
            t.put_text(secret + "\n", "/etc/edgekit-e2e/api-key", sudo=True, mode="0640", owner="root", group="jetson")
            assert t.sudo("stat -c '%a %U:%G' /etc/edgekit-e2e/api-key; cat /etc/edgekit-e2e/api-key").stdout.split(
                "\n")[:2] == ["640 root:jetson", secret]
            assert t.run("ls -d /tmp/edgekit-upload.* 2>/dev/null || echo none").stdout.strip() == "none"
        assert seen["modes"][:2] == ["700 jetson", "600 jetson"], seen
        assert seen["guest"].exit_code != 0 and secret not in seen["guest"].stdout, seen["guest"]
        assert "Permission denied" in seen["guest"].stderr
        assert traced and not any(secret in str(tr) for tr in traced)     # never on a command line
    finally:
        with Transport(parse_target(standin.name)) as t:
            t.sudo("rm -rf /etc/edgekit-e2e", check=False)
