"""Generic Linux facts: OS, CPU, memory, disk, init system, sudo, tools on the device."""

from __future__ import annotations

from edgekit.facts.base import Fact
from edgekit.facts.boards import ARM_CORES
from edgekit.layout import CPU_REFUSED
from edgekit.layout import PREFIX as INSTALL_PREFIX
from edgekit.telemetry.procfs import parse_meminfo


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """Pure: (model name, flags) from /proc/cpuinfo (x86 `flags`, Arm `Features`); the first CPU is enough. An Arm
    kernel names no model: the core is named from `CPU implementer` and `CPU part` (boards.ARM_CORES)."""
    model, flags, ids = None, set(), {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if not sep:
            continue
        if key in ("model name", "hardware") and model is None:
            model = value.strip() or None
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("cpu implementer", "cpu part") and key not in ids:
            ids[key] = value.strip().lower()
    if model is None and len(ids) == 2:
        pair = (ids["cpu implementer"], ids["cpu part"])
        model = ARM_CORES.get(pair) or f"Arm core {pair[0]}/{pair[1]}"
    return model, flags


class OsRelease(Fact):
    name = "os_release"
    command = "cat /etc/os-release"

    @staticmethod
    def parse(output: str) -> dict | None:
        fields = {}
        for line in output.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                fields[key.strip()] = value.strip().strip('"')
        if not fields:
            return None
        return {"id": fields.get("ID"), "version_id": fields.get("VERSION_ID"),
                "pretty_name": fields.get("PRETTY_NAME")}


class _Word(Fact):
    """A fact whose command prints one word: the word, or None when it printed nothing."""

    @staticmethod
    def parse(output: str) -> str | None:
        return output.strip() or None


class Hostname(_Word):
    name = "hostname"
    command = "hostname"


class Arch(_Word):
    """The machine as `uname -m` names it: aarch64 on a Jetson, x86_64 on most stand-ins."""

    name = "arch"
    command = "uname -m"


class CpuCount(Fact):
    name = "cpus"
    command = "nproc"

    @staticmethod
    def parse(output: str) -> int | None:
        return int(output) if output.strip().isdecimal() else None


class CpuInfo(Fact):
    """The CPU's model and instruction-set flags as advertised (a VM may advertise more than it can run)."""

    name = "cpu"
    command = ("grep -m1 -E '^(model name|Hardware)' /proc/cpuinfo; grep -m1 -E '^(flags|Features)' /proc/cpuinfo; "
               "grep -m1 '^CPU implementer' /proc/cpuinfo; grep -m1 '^CPU part' /proc/cpuinfo")

    @staticmethod
    def parse(output: str) -> dict | None:
        model, flags = parse_cpuinfo(output)
        return {"model": model, "flags": sorted(flags)} if (model or flags) else None


class CpuRefused(Fact):
    """CPU instruction levels whose llama.cpp build failed the gate on this device (written by the gate)."""

    name = "cpu_refused"
    command = f"cat {CPU_REFUSED}"

    @staticmethod
    def parse(output: str) -> list[str]:
        return sorted({line.split()[0] for line in output.splitlines() if line.strip() and not line.startswith("#")})


class MemInfo(Fact):
    """/proc/meminfo in bytes: total, available, swap total and free."""

    name = "memory"
    command = "cat /proc/meminfo"

    @staticmethod
    def parse(output: str) -> dict | None:
        kib = parse_meminfo(output)
        if "MemTotal" not in kib:
            return None
        return {"total_bytes": kib["MemTotal"] * 1024,
                "available_bytes": kib.get("MemAvailable", kib.get("MemFree", 0)) * 1024,
                "swap_total_bytes": kib.get("SwapTotal", 0) * 1024, "swap_free_bytes": kib.get("SwapFree", 0) * 1024}


class DiskSpace(Fact):
    """Free space where edgekit installs: the install prefix, or its nearest existing parent."""

    name = "disk"
    command = (f"p={INSTALL_PREFIX}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done; "
               "echo \"$p\"; df -P -B1 \"$p\"")

    @staticmethod
    def parse(output: str) -> dict | None:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        if len(lines) < 3:
            return None
        fields = lines[-1].split()
        try:
            return {"path": lines[0], "total_bytes": int(fields[1]), "free_bytes": int(fields[3])}
        except (IndexError, ValueError):
            return None


class InitSystem(Fact):
    name = "systemd"
    command = "cat /proc/1/comm"

    @staticmethod
    def parse(output: str) -> bool:
        return output.strip() == "systemd"


class SudoAccess(Fact):
    """How this login can become root: root, nopasswd, password (a password is required), or none."""

    name = "sudo"
    command = ('if [ "$(id -u)" = 0 ]; then echo root; '
               'elif ! command -v sudo >/dev/null; then echo none; '
               'else out=$(sudo -n true 2>&1) && echo nopasswd || '
               'case "$out" in *"password is required"*) echo password;; *) echo none;; esac; fi')

    @staticmethod
    def parse(output: str) -> str:
        value = output.strip().splitlines()[-1] if output.strip() else "none"
        return value if value in {"root", "nopasswd", "password", "none"} else "none"


TOOLS = ["jtop", "tegrastats", "nvpmodel", "jetson_clocks", "systemctl", "journalctl", "curl", "cmake", "git",
         "ccache", "ninja", "gcc", "g++"]


class Tools(Fact):
    """Absolute paths of the tools edgekit uses, looked up in /usr/sbin and /usr/local/bin too (SSH's PATH is short)."""

    name = "tools"
    command = ("for t in " + " ".join(TOOLS) + "; do "
               "p=$(command -v $t || ls /usr/local/bin/$t /usr/bin/$t /usr/sbin/$t 2>/dev/null | head -n1); "
               "echo \"$t ${p:--}\"; done")

    @staticmethod
    def parse(output: str) -> dict:
        found = {t: None for t in TOOLS}
        for line in output.splitlines():
            name, _, path = line.partition(" ")
            if name in found:
                found[name] = path.strip() if path.strip().startswith("/") else None
        return found
