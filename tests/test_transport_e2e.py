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
