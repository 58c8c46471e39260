"""One edgekit run per device at a time: a lock held on the device for as long as the run's SSH session lives.

`device_lock(transport, "provision")` starts `flock -n /run/edgekit/lock` on the device (as root) around a
process that reads the run's stdin: when the run ends, or dies (SIGKILL, a dropped network), the channel closes,
that process sees EOF and the lock is released by the kernel. The holder writes who it is (controller host,
pid, since, what, and its device pid) next to the lock while it holds it and removes that record before letting
go; a second run asks the kernel who holds the lock (/proc/locks), names it (the record only when its pid is the
holder's: never a finished run), waits up to WAIT_SECONDS and then exits 5 naming the holder. Long commands a run
starts (compiles, downloads) also take `/run/edgekit/work.lock` (`work_locked`), so work left running by a dead run
finishes before a new run's work starts (at most WORK_WAIT_SECONDS): a rerun never compiles beside a leftover
build. /run/edgekit is root's 0700 and its files 0600: a user of the board can neither hold nor remove them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from edgekit.remote.command import q
from edgekit.errors import EdgekitError, UnsuitableDevice

LOCK_DIR = "/run/edgekit"
LOCK = f"{LOCK_DIR}/lock"
OWNER = f"{LOCK_DIR}/owner"
WORK_LOCK = f"{LOCK_DIR}/work.lock"
BUSY = 75
WAIT_SECONDS = 30.0             # how long a run waits for another run's device lock before it gives up (exit 5)
WORK_WAIT_SECONDS = 4 * 3600    # how long new work waits for work a dead run left running (a compile on a Nano)
# /run/edgekit and its files are root's alone (0700/0600): a user of the board cannot open, hold or remove them.
PREPARE = (f"(umask 077 && mkdir -p {LOCK_DIR} && chown root:root {LOCK_DIR} && chmod 0700 {LOCK_DIR} && "
           f"touch {LOCK} {WORK_LOCK} && chown root:root {LOCK} {WORK_LOCK} && chmod 0600 {LOCK} {WORK_LOCK})")
# Who holds the lock, as the kernel says (/proc/locks: the holder's pid by the lock file's inode), with the owner
# record the holding run wrote: "holder PID START :: ARGS" lines, then "owner DEVICE-PID TEXT" (root only).
WHO = (f"ino=$(stat -c %i {LOCK} 2>/dev/null) || exit 0; "
       "awk -v ino=\"$ino\" '$2 == \"FLOCK\" {n = split($6, a, \":\"); if (a[n] == ino) print $5}' /proc/locks | "
       "while read -r p; do printf 'holder %s %s :: %s\\n' \"$p\" \"$(ps -o lstart= -p \"$p\" | tr -s ' ')\" "
       f"\"$(ps -o args= -p \"$p\")\"; done; [ -f {OWNER} ] && printf 'owner %s\\n' \"$(cat {OWNER})\"; true")


class DeviceBusy(UnsuitableDevice):
    """Another run (or any process) holds the device's edgekit lock past the wait: exit 5, naming the holder."""


def work_locked(script: str, wait: float = WORK_WAIT_SECONDS) -> str:
    """`script` run while holding the work lock (waits for work a dead run left behind, at most `wait` seconds:
    then it exits 75 with a line saying so)."""
    give_up = f"echo 'edgekit: work a previous run left running still holds {WORK_LOCK} after {wait:.0f} s' >&2"
    return (f"{PREPARE} && {{ flock -w {wait:.0f} -E {BUSY} {WORK_LOCK} sh -c {q(script)} || "
            f"{{ rc=$?; [ $rc -ne {BUSY} ] || {give_up}; (exit $rc); }}; }}")


def holder_command(owner: str, wait: float = WAIT_SECONDS) -> str:
    """Wait up to `wait` s for the lock; the holder then records itself (its device pid: the flock process's, which
    /proc/locks names) and removes that record before it lets go, so the record never names a finished run."""
    record = f"{OWNER}.$PPID"
    inner = (f"printf '%s %s\\n' \"$PPID\" {q(owner)} > {record} && mv -f {record} {OWNER}; echo @@locked; "
             f"cat > /dev/null; rm -f {OWNER}")
    return f"{PREPARE} && exec flock -w {wait:.0f} -E {BUSY} {LOCK} sh -c {q(inner)}"


def describe_holder(output: str) -> str | None:
    """Pure: WHO's output -> who holds the lock ("HOST pid N since ... (what), device pid P" for an edgekit run,
    "pid P (ARGS, since START), not an edgekit run" for anything else), or None when nothing holds it now.

    An owner record counts only when its device pid is the one the kernel names as the holder."""
    holders, owner = [], None
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "holder":
            pid, _, more = rest.partition(" ")
            start, _, args = more.partition(" :: ")
            if pid.isdecimal():
                holders.append((pid, start.strip(), args.strip()))
        elif word == "owner":
            owner_pid, _, text = rest.partition(" ")
            if owner_pid.isdecimal() and text.strip():
                owner = (owner_pid, text.strip())
    for pid, start, args in holders:
        if owner and owner[0] == pid:
            return f"{owner[1]}, device pid {pid}"
    if holders:
        pid, start, args = holders[0]
        detail = ", ".join(x for x in (args or "a process that has exited", f"since {start}" if start else "") if x)
        return f"pid {pid} ({detail}), not an edgekit run"
    return None


@contextlib.contextmanager
def device_lock(transport, what: str, enabled: bool = True, timeout: float = 20.0, wait: float = WAIT_SECONDS,
                on_wait=None):
    """Hold the device's edgekit lock for the block. A busy device: `on_wait(text)` names the holder, the run waits
    up to `wait` seconds, then raises DeviceBusy (exit 5) naming the holder. `timeout`: for the device to answer."""
    if not enabled:
        yield
        return
    owner = f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')} ({what})"
    if not transport.is_root:
        transport.sudo("true")      # no sudo, or a wrong password: the transport's own error (exit 3) and hint
    held = transport.hold(holder_command(owner, wait))     # the transport's: fabric's channel, Ansible's ssh
    started = time.monotonic()
    deadline = started + timeout + wait
    told, locked = False, False
    while not locked and held.exit_code is None and time.monotonic() < deadline:
        locked = held.wait("@@locked", max(0.0, min(1.0, deadline - time.monotonic())))
        if not locked and not told and on_wait is not None and time.monotonic() - started > 1.0:
            who = holder(transport)
            if who:
                on_wait(f"waiting up to {wait:.0f} s for the edgekit lock on {transport.name}: {who} holds it")
            told = True
    if not locked:
        held.release()
        if held.exit_code == BUSY:
            who = holder(transport) or "another process (it let go just now)"
            raise DeviceBusy(f"{transport.name} is busy: {who} holds the edgekit lock; gave up after {wait:.0f} s",
                             hint="wait for that run to finish and run again (a dead run's lock is released when its "
                                  "SSH session closes); a process that is not an edgekit run can be stopped on the "
                                  "device with `sudo kill PID`")
        raise EdgekitError(f"could not take the edgekit lock on {transport.name}: "
                           f"{held.output.strip()[-200:] or 'no answer'}",
                           hint="the device needs flock (util-linux) and sudo")
    try:
        yield
    finally:
        held.release()


def holder(transport) -> str | None:
    """Who holds the device's edgekit lock now (describe_holder), or None."""
    return describe_holder(transport.sudo(WHO, check=False).stdout)
