"""Keep the measuring off the measured cores: llama-server and llama-bench on one CPU set, the bench client on
the others.

On a stand-in (or `local`) the bench client's threads run on the same cores as the server's, so every request
the client parses costs the server time. For the bench, the service gets a runtime systemd drop-in
(`CPUAffinity=`, under /run so a reboot drops it even if a run is killed) and is restarted; afterwards the
drop-in is removed and the service restarted again. llama-bench runs under `taskset -c` on the same CPUs, and
the client process (on the controller) is limited to the other CPUs with sched_setaffinity.

Everything here that builds commands is pure; `server_pinned` and `client_pinned` apply them.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from edgekit.errors import UsageError
from edgekit.layout import UNIT_NAME
from edgekit.remote.command import Op, Upload, q, run_op, sh

DROPIN_DIR = f"/run/systemd/system/{UNIT_NAME}.service.d"
DROPIN = f"{DROPIN_DIR}/50-edgekit-bench-cpus.conf"


def parse_cpu_list(text: str) -> List[int]:
    """Pure: a CPU list as taskset and /sys/devices/system/cpu/online write it ("0-1,4") -> [0, 1, 4]."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdecimal() or (sep and not hi.isdecimal()) or (sep and int(hi) < int(lo)):
            raise UsageError(f"not a CPU list: {text!r}", hint="write CPUs as 0,1 or 0-3 (as taskset -c does)")
        cpus.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return sorted(cpus)


def cpu_list(cpus: Iterable[int]) -> str:
    """Pure: [0, 1, 4] -> "0,1,4"."""
    return ",".join(str(int(c)) for c in sorted(set(cpus)))


def split_cpus(online: Sequence[int], server: Sequence[int]) -> Tuple[List[int], List[int]]:
    """Pure: (server CPUs, client CPUs = the other online ones). Refuses a split that leaves either side empty."""
    server_set, online_set = set(server), set(online)
    if not server_set or not server_set <= online_set:
        raise UsageError(f"server CPUs {cpu_list(server)} are not among the online CPUs {cpu_list(online)}",
                         hint="pick server CPUs from the online ones")
    client = sorted(online_set - server_set)
    if not client:
        raise UsageError(f"server CPUs {cpu_list(server)} leave no CPU for the bench client",
                         hint="leave at least one online CPU to the client")
    return sorted(server_set), client


def dropin_text(cpus: Sequence[int]) -> str:
    """Pure: the runtime drop-in pinning the service (CPUAffinity takes a space-separated list)."""
    return ("# edgekit bench: llama-server on these CPUs for the run; removed when the bench ends\n"
            "[Service]\nCPUAffinity=\n"        # the empty assignment drops the unit's own (assignments merge)
            f"CPUAffinity={' '.join(str(c) for c in sorted(set(cpus)))}\n")


def dropin_ops(path: str, text: str, before: Sequence[Op] = ()) -> List[Op]:
    """Pure: a runtime drop-in for the service (under /run: a reboot drops it even if a run is killed; `before`:
    files it names, written first) and the service restarted into it. Run as root; printed as they run."""
    return [sh("mkdir", "-p", DROPIN_DIR), *before, Upload(dest=path, text=text, mode="0644"),
            "systemctl daemon-reload", sh("systemctl", "restart", f"{UNIT_NAME}.service")]


def dropout_ops(*paths: str) -> List[Op]:
    """Pure: the drop-in (and what it named) gone, the service restarted on its own settings."""
    return [sh("rm", "-f", *paths), "systemctl daemon-reload", sh("systemctl", "restart", f"{UNIT_NAME}.service")]


def pin_ops(cpus: Sequence[int]) -> List[Op]:
    """Pure: what pins the service to `cpus`."""
    return dropin_ops(DROPIN, dropin_text(cpus))


def unpin_ops() -> List[Op]:
    """Pure: what restores the service's own affinity."""
    return dropout_ops(DROPIN)


def taskset(command: str, cpus: Optional[Sequence[int]]) -> str:
    """Pure: `command` (a quoted command line) run on `cpus` only; unchanged without cpus."""
    return f"taskset -c {q(cpu_list(cpus))} {command}" if cpus else command


@contextmanager
def server_pinned(transport, cpus: Sequence[int]) -> Iterator[None]:
    """The service runs on `cpus` inside the block (restarted into it), and as before after it, also on errors."""
    try:
        for op in pin_ops(cpus):
            run_op(transport, op)
        yield
    finally:
        for op in unpin_ops():
            run_op(transport, op)


@contextmanager
def client_pinned(cpus: Optional[Sequence[int]]) -> Iterator[None]:
    """This process (the bench client and its threads made inside the block) on `cpus`; restored after."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
