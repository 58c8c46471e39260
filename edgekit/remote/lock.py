"""One edgekit run per device at a time: a lock held on the device for as long as the run's SSH session lives.

`device_lock(transport, "provision")` starts `flock -n /run/edgekit/lock` on the device (as root) around a
process that reads the run's stdin: when the run ends, or dies (SIGKILL, a dropped network), the channel closes,
that process sees EOF and the lock is released by the kernel. The holder writes who it is (controller host,
pid, since, what) next to the lock, so a second run says who holds it and exits (5). Long commands a run starts
(compiles, downloads) also take `/run/edgekit/work.lock` (`work_locked`), so work left running by a dead run
finishes before a new run's work starts: a rerun never compiles beside a leftover build.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time

from edgekit.remote.command import q
from edgekit.errors import EdgekitError, UnsuitableDevice

LOCK_DIR = "/run/edgekit"
LOCK = f"{LOCK_DIR}/lock"
OWNER = f"{LOCK_DIR}/owner"
WORK_LOCK = f"{LOCK_DIR}/work.lock"
BUSY = 75


def work_locked(script: str) -> str:
    """`script` run while holding the work lock (waits for work a dead run left behind)."""
    return f"mkdir -p {LOCK_DIR} && flock {WORK_LOCK} sh -c {q(script)}"


def holder_command(owner: str) -> str:
    inner = f"printf '%s\\n' {q(owner)} > {OWNER}; echo @@locked; exec cat > /dev/null"
    return f"mkdir -p {LOCK_DIR} && exec flock -n -E {BUSY} {LOCK} sh -c {q(inner)}"


class _Held:
    def __init__(self, transport, command: str):
        self.output = ""
        self.exit_code: int | None = None
        ctx = transport._context()
        prefix, password = "", None
        if not transport.is_root:
            if transport.become_password is not None:
                prefix, password = "sudo -S -p '' -- ", transport.become_password
            else:
                prefix = "sudo -n -- "
        full = f"{prefix}sh -c {q(command)}"
        if transport.is_local:
            self._proc = subprocess.Popen(["sh", "-c", full], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
            if password is not None:
                self._proc.stdin.write(password + "\n")
                self._proc.stdin.flush()
            self._chan = None
            threading.Thread(target=self._read_local, daemon=True).start()
        else:
            self._chan = ctx.client.get_transport().open_session()
            self._chan.exec_command(full)
            if password is not None:
                self._chan.sendall((password + "\n").encode())
            threading.Thread(target=self._read_remote, daemon=True).start()

    def _read_local(self) -> None:
        for line in self._proc.stdout:
            self.output += line
        self.exit_code = self._proc.wait()

    def _read_remote(self) -> None:
        f = self._chan.makefile("r")
        for line in f:
            self.output += line
        self.exit_code = self._chan.recv_exit_status()

    def release(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.shutdown_write()
                self._chan.close()
        else:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
                self._proc.wait(timeout=10)


@contextlib.contextmanager
def device_lock(transport, what: str, enabled: bool = True, timeout: float = 20.0):
    """Hold the device's edgekit lock for the block; raise UnsuitableDevice (5) naming the holder when busy."""
    if not enabled:
        yield
        return
    owner = f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ({what})"
    if not transport.is_root:
        transport.sudo("true")      # no sudo, or a wrong password: the transport's own error (exit 3) and hint
    held = _Held(transport, holder_command(owner))
    deadline = time.monotonic() + timeout
    while "@@locked" not in held.output and held.exit_code is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if "@@locked" not in held.output:
        held.release()
        if held.exit_code == BUSY:
            who = transport.sudo(f"cat {OWNER}", check=False).stdout.strip() or "another edgekit run"
            raise UnsuitableDevice(f"{transport.name} is busy: {who} holds the edgekit lock",
                                   hint="wait for that run to finish (a dead run's lock is released when its SSH "
                                        "session closes), then run again")
        raise EdgekitError(f"could not take the edgekit lock on {transport.name}: "
                           f"{held.output.strip()[-200:] or 'no answer'}",
                           hint="the device needs flock (util-linux) and sudo")
    try:
        yield
    finally:
        held.release()
