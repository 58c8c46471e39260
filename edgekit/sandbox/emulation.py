"""Foreign-architecture stand-ins: the kernel's binfmt_misc runs their binaries through qemu-user.

An aarch64 stand-in's programs (its systemd, sshd, python3, llama-server) are aarch64 ELF files. The host kernel
hands each one to the interpreter registered for its ELF header in /proc/sys/fs/binfmt_misc. The registration must
carry the F (fix-binary) flag: the kernel then opens qemu-aarch64-static once, at registration, so it runs inside
a container whose root has no qemu; and the C (credentials) flag: a set-uid program (sudo) runs with the program's
credentials, not the interpreter's (without it `sudo` in the stand-in says its effective uid is not 0). Debian's qemu-user-static ships the line in /usr/lib/binfmt.d/; on a host
without systemd-binfmt (a container, a CI VM) edgekit writes that line itself.

`parse_entry` (an entry's status file) and `parse_conf` (a binfmt.d line) are pure; `ensure` checks and, when
needed, registers, raising UsageError with what to do when the host refuses.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UsageError

BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_D = Path("/usr/lib/binfmt.d")

# Debian architecture -> (what `uname -m` says there, the binfmt entry's name: qemu-user-static's binfmt.d file)
ARCHES: dict[str, tuple[str, str]] = {
    "amd64": ("x86_64", ""),
    "arm64": ("aarch64", "qemu-aarch64"),
}
INSTALL_HINT = "apt-get install qemu-user-static"
REQUIRED_FLAGS = "FC"          # F: interpreter fixed at registration; C: set-uid programs keep their credentials


def machine(arch: str) -> str:
    """`uname -m` of a Debian architecture (amd64 -> x86_64, arm64 -> aarch64)."""
    return ARCHES[arch][0]


def host_arch() -> str:
    """This machine's Debian architecture name."""
    by_machine = {m: a for a, (m, _) in ARCHES.items()}
    return by_machine.get(os.uname().machine, os.uname().machine)


@dataclass(frozen=True)
class Entry:
    """A binfmt_misc registration as the kernel reports it."""

    enabled: bool
    interpreter: str | None
    flags: str

    @property
    def fixed(self) -> bool:
        """F: the interpreter was opened at registration, so containers need no copy of it."""
        return "F" in self.flags

    @property
    def usable(self) -> bool:
        """Enabled, with every flag a stand-in needs (REQUIRED_FLAGS)."""
        return self.enabled and all(f in self.flags for f in REQUIRED_FLAGS)


def parse_entry(text: str) -> Entry | None:
    """Pure: /proc/sys/fs/binfmt_misc/NAME (`enabled`, `interpreter /usr/...`, `flags: POF`, ...); None if empty."""
    enabled, interpreter, flags, seen = False, None, "", False
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word in ("enabled", "disabled"):
            enabled, seen = word == "enabled", True
        elif word == "interpreter":
            interpreter = rest.strip() or None
        elif word == "flags:":
            flags = rest.strip()
    return Entry(enabled, interpreter, flags) if seen else None


@dataclass(frozen=True)
class Registration:
    """One binfmt.d line: `:name:type:offset:magic:mask:interpreter:flags`."""

    name: str
    line: str
    interpreter: str
    flags: str

    def with_flags(self, flags: str) -> Registration:
        fields = self.line.split(":")
        fields[7] = flags
        return Registration(self.name, ":".join(fields), self.interpreter, flags)


def parse_conf(text: str) -> Registration | None:
    """Pure: the first registration line of a binfmt.d file (comments skipped); None if there is none."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        fields = line.split(":")
        if len(fields) != 8 or fields[0] != "" or not fields[1] or fields[2] not in ("M", "E"):
            return None
        return Registration(fields[1], line, fields[6], fields[7])
    return None


def ensure(arch: str, log=lambda msg: None) -> Entry | None:
    """Make sure this host runs `arch` binaries through qemu-user with the F flag; None when it runs them itself.

    Mounts binfmt_misc if it is not, registers Debian's line (with F added) if the entry is missing, and
    re-registers an entry that lacks F or is disabled. Every refusal is a UsageError naming what to do."""
    if arch not in ARCHES:
        raise UsageError(f"no stand-ins for architecture {arch!r}", hint="use --arch " + " or --arch ".join(ARCHES))
    if arch == host_arch():
        return None
    name = ARCHES[arch][1]
    conf = BINFMT_D / f"{name}.conf"
    reg = parse_conf(conf.read_text()) if conf.is_file() else None
    if reg is None or not Path(reg.interpreter).exists():
        raise UsageError(f"{arch} stand-ins run under qemu-user emulation, and qemu-user-static is not installed "
                         f"({conf} {'names no interpreter that exists' if conf.is_file() else 'is missing'})",
                         hint=INSTALL_HINT)
    if not (BINFMT / "register").exists():
        proc = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not (BINFMT / "register").exists():
            raise UsageError(f"cannot mount binfmt_misc at {BINFMT}: {proc.stderr.strip() or 'not available'}",
                             hint="this host's kernel must allow binfmt_misc (modprobe binfmt_misc as root); inside "
                                  "a container, register qemu-aarch64 on its host with the F flag "
                                  f"(`{INSTALL_HINT}` there)")
        log(f"mounted binfmt_misc at {BINFMT}")
    entry = _read_entry(name)
    if entry and entry.usable and entry.interpreter and Path(entry.interpreter).exists():
        return entry
    reg = reg.with_flags(reg.flags + "".join(f for f in REQUIRED_FLAGS if f not in reg.flags))
    if entry is not None:
        lacking = "".join(f for f in REQUIRED_FLAGS if f not in entry.flags)
        why = "disabled" if not entry.enabled else f"flags {entry.flags or 'none'}, without {lacking}"
        log(f"re-registering {name} ({why}): a container needs the interpreter fixed at registration (F) and "
            "set-uid programs their own credentials (C)")
        _write(BINFMT / name, "-1", name)
    _write(BINFMT / "register", reg.line, name)
    entry = _read_entry(name)
    if entry is None or not entry.usable:
        raise UsageError(f"the kernel did not take the {name} registration with the flags {REQUIRED_FLAGS}",
                         hint=f"check `cat {BINFMT / name}`")
    log(f"registered {name} with binfmt_misc (interpreter {entry.interpreter}, flags {entry.flags})")
    return entry


def _read_entry(name: str) -> Entry | None:
    try:
        return parse_entry((BINFMT / name).read_text())
    except OSError:
        return None


def _write(path: Path, text: str, name: str) -> None:
    try:
        path.write_text(text)
    except OSError as e:
        raise UsageError(f"this host refused the binfmt_misc registration of {name}: {e.strerror}",
                         hint="register needs root in the host's initial namespace; in a container, register "
                              f"qemu-aarch64 on its host with the F flag (`{INSTALL_HINT}` there)") from None


# qemu-user keeps the host's first two real-time signals for itself: host SIGRTMIN+n reaches an emulated program as
# SIGRTMIN+(n-2) (measured with qemu 7.2, tests/test_aarch64.py). systemd-nspawn halts a booted container with
# SIGRTMIN+3, which the emulated systemd reads as SIGRTMIN+1: "isolate rescue.target" (the rescue shell the issue
# saw). An emulated stand-in is sent SIGRTMIN+5 instead, which its systemd reads as SIGRTMIN+3: halt.
QEMU_RT_SHIFT = 2
SYSTEMD_HALT = 3                       # systemd(1): SIGRTMIN+3 halts the machine


def kill_signal(arch: str) -> str | None:
    """systemd-nspawn's --kill-signal for a stand-in of `arch`, so its systemd halts (None: nspawn's own)."""
    return None if arch == host_arch() else f"SIGRTMIN+{SYSTEMD_HALT + QEMU_RT_SHIFT}"


# Drop-ins written into a foreign-architecture stand-in only (never into a rootfs a real board gets, never into
# edgekit's own units): what qemu-user cannot do, and what is done instead. docs/aarch64-standin.md lists them.
DROPIN_NAME = "50-edgekit-emulated.conf"
STANDIN_DROPINS: dict[str, str] = {
    # qemu-user cannot set up a unit's credentials directory (systemd 252: "Failed to set up credentials: Invalid
    # argument"), so these early units fail at boot. None of their credentials exist in a stand-in: drop them.
    **{unit: "[Service]\nLoadCredential=\n" for unit in (
        "systemd-sysctl.service", "systemd-sysusers.service", "systemd-tmpfiles-setup.service",
        "systemd-tmpfiles-setup-dev.service", "systemd-tmpfiles-clean.service")},
}


def plant_standin_dropins(root: Path) -> list[str]:
    """Write STANDIN_DROPINS into a stand-in's /etc/systemd/system; -> the units they change."""
    for unit, text in STANDIN_DROPINS.items():
        folder = root / "etc/systemd/system" / f"{unit}.d"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / DROPIN_NAME).write_text("# edgekit stand-in under qemu-user emulation only "
                                          "(docs/aarch64-standin.md)\n" + text)
    return sorted(STANDIN_DROPINS)
