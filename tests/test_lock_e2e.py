"""One run per device: the edgekit lock on a real stand-in, a second run refused with the holder's name, the lock
released when the holding run is SIGKILLed, and work a dead run left running finishing before new work starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgekit.remote.lock import device_lock, work_locked
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
            with pytest.raises(UnsuitableDevice) as busy:
                with device_lock(t, "second run"):
                    pass
            assert "holds the edgekit lock" in busy.value.message and "test holder" in busy.value.message
            assert f"pid {holder.pid}" in busy.value.message
            holder.send_signal(signal.SIGKILL)       # the run dies mid-work: its remote `sleep` goes on
            holder.wait()
            deadline = time.monotonic() + 20
            while True:
                try:
                    with device_lock(t, "after the kill"):
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
