"""One run per device: the edgekit lock on a real stand-in, a second run waiting and then giving up (exit 5) with
the live holder's name, the lock released when the holding run is SIGKILLed, work a dead run left running finishing
before new work starts, and /run/edgekit out of reach of the board's other users."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgekit.remote.lock import LOCK, LOCK_DIR, OWNER, WORK_LOCK, DeviceBusy, device_lock, work_locked
from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from edgekit.errors import UnsuitableDevice

pytestmark = pytest.mark.e2e

HOLDER = textwrap.dedent("""
    import sys, time
    from edgekit.remote.lock import device_lock, work_locked
    from edgekit.remote.target import parse_target
    from edgekit.remote.transport import Transport
    with Transport(parse_target(sys.argv[1])) as t, device_lock(t, "test holder"):
        print("held", flush=True)
        t.sudo(work_locked("sleep 6; touch /tmp/edgekit-dead-run-work"))
""")


def _start_holder(target: str, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, target], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_and_a_killed_run_releases_the_lock(standin):
    env = {**os.environ}
    with Transport(parse_target(standin.name)) as t:
        t.sudo("rm -f /tmp/edgekit-dead-run-work")
    holder = _start_holder(standin.name, env)
    try:
        with Transport(parse_target(standin.name)) as t:
            waits = []
            started = time.monotonic()
            with pytest.raises(DeviceBusy) as busy:
                with device_lock(t, "second run", wait=3, on_wait=waits.append):
                    pass
            assert time.monotonic() - started >= 3                   # it waited, then gave up
            assert busy.value.exit_code == 5 and "gave up after 3 s" in busy.value.message
            assert "holds the edgekit lock" in busy.value.message and "test holder" in busy.value.message
            assert f"pid {holder.pid}" in busy.value.message and "device pid" in busy.value.message
            assert len(waits) == 1 and "test holder" in waits[0] and "waiting up to 3 s" in waits[0]
            holder.send_signal(signal.SIGKILL)       # the run dies mid-work: its remote `sleep` goes on
            holder.wait()
            deadline = time.monotonic() + 20
            while True:
                try:
                    with device_lock(t, "after the kill", wait=1):
                        # the dead run's work still holds the work lock: this waits for it, never runs beside it
                        out = t.sudo(work_locked("test -e /tmp/edgekit-dead-run-work && echo after")).stdout
                    break
                except UnsuitableDevice:
                    assert time.monotonic() < deadline, "the lock of a SIGKILLed run was never released"
                    time.sleep(0.5)
            assert out.strip() == "after"
    finally:
        if holder.poll() is None:
            holder.kill()


def test_the_locks_are_roots_alone_and_a_busy_message_never_names_a_finished_run(standin):
    with Transport(parse_target(standin.name)) as t:
        assert not t.is_root                                   # the login user: an ordinary user of the board
        with device_lock(t, "a run that finishes"):
            assert "a run that finishes" in t.sudo(f"cat {OWNER}").stdout
        modes = t.sudo(f"stat -c '%a %U:%G %n' {LOCK_DIR} {LOCK} {WORK_LOCK}").stdout.split("\n")
        assert modes[:3] == [f"700 root:root {LOCK_DIR}", f"600 root:root {LOCK}", f"600 root:root {WORK_LOCK}"]
        assert t.sudo(f"test -e {OWNER} || echo gone").stdout.strip() == "gone"   # the finished run took its record
        # an ordinary user can neither take (hold) the lock, nor remove it or plant a file in its place
        for attempt in (f"flock -n {LOCK} true", f"rm -f {LOCK}", f"touch {LOCK_DIR}/planted",
                        f"mv {LOCK} {LOCK_DIR}/x", f"rm -rf {LOCK_DIR}"):
            result = t.run(attempt, check=False)
            assert result.exit_code != 0, attempt
        assert t.sudo(f"ls -A {LOCK_DIR}").stdout.split() == ["lock", "work.lock"]
        # a root process that is not edgekit holds the lock: the message names it, never the finished run
        t.sudo(f"nohup flock -o {LOCK} sleep 30 > /dev/null 2>&1 &")
        message = ""
        try:
            with pytest.raises(DeviceBusy) as busy:
                with device_lock(t, "second run", wait=1):
                    pass
            message = busy.value.message
            assert f"flock -o {LOCK} sleep 30" in message and "not an edgekit run" in message, message
            assert "a run that finishes" not in message
        finally:
            pid = message.split("pid ", 1)[1].split()[0] if "pid " in message else ""
            if pid.isdecimal():
                t.sudo(f"kill {pid}", check=False)
