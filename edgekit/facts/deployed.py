"""Facts about what is deployed on a device, for steps to compare with what should be there.

Each is a frozen dataclass (so a test can hand it in: `Context(given={FileText(path): "..."})`) with a `command`
and a pure `parse`. `sudo` facts run as root (root-owned files, other users' sockets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgekit import layout as L
from edgekit.build.gate import parse_record, read_record_command
from edgekit.build.stamp import BUILT_ON_COMMAND, installed_command, parse_built_on, parse_installed
from edgekit.facts.device import DeviceFacts, read_facts
from edgekit.remote.command import q

MISSING = "@@edgekit-missing"


@dataclass(frozen=True)
class Device:
    """All of the device's facts (edgekit.facts.device), read in one round trip."""

    cuda_arch_override: str | None = None
    sudo: bool = False

    def read(self, transport) -> DeviceFacts:
        return read_facts(transport, self.cuda_arch_override)


@dataclass(frozen=True)
class FileText:
    """A file's text, or None when it does not exist."""

    path: str
    sudo: bool = True

    @property
    def command(self) -> str:
        return f"if [ -f {q(self.path)} ]; then echo @@present; cat {q(self.path)}; else echo {MISSING}; fi"

    @staticmethod
    def parse(output: str) -> str | None:
        head, _, text = output.partition("\n")
        return text if head == "@@present" else None


@dataclass(frozen=True)
class FileOwnerMode:
    """(owner, octal mode) of a file, or None when it does not exist."""

    path: str
    sudo: bool = True

    @property
    def command(self) -> str:
        return f"stat -c '%U %a' {q(self.path)} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> tuple[str, str] | None:
        parts = output.split()
        return (parts[0], parts[1]) if len(parts) == 2 else None


@dataclass(frozen=True)
class FileSha256:
    """The sha256 of a file (read as the login user), or None."""

    path: str
    sudo: bool = False

    @property
    def command(self) -> str:
        return f"sha256sum {q(self.path)} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> str | None:
        parts = output.split()
        return parts[0] if parts and len(parts[0]) == 64 else None


@dataclass(frozen=True)
class UnitState:
    """A unit's state as systemd reports it: ActiveState, SubState, MainPID, UnitFileState, NRestarts, ..."""

    unit: str = L.UNIT_NAME
    sudo: bool = False

    @property
    def command(self) -> str:
        return (f"systemctl show {q(self.unit)} -p ActiveState -p SubState -p MainPID -p UnitFileState "
                "-p NRestarts -p ActiveEnterTimestamp -p LoadState")

    @staticmethod
    def parse(output: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@dataclass(frozen=True)
class UserGroups:
    """The groups a user is in, or None when there is no such user."""

    user: str
    sudo: bool = False

    @property
    def command(self) -> str:
        return f"id -nG {q(self.user)} 2>/dev/null || echo {MISSING}"

    @staticmethod
    def parse(output: str) -> list[str] | None:
        return None if MISSING in output else output.split()


@dataclass(frozen=True)
class GpuGroups:
    """The GPU device groups (video, render) that exist here: only those names ever reach a command."""

    sudo: bool = False

    @property
    def command(self) -> str:
        return "getent group " + " ".join(L.GPU_GROUPS) + " | cut -d: -f1"

    @staticmethod
    def parse(output: str) -> list[str]:
        return [g for g in output.split() if g in L.GPU_GROUPS]


@dataclass(frozen=True)
class PortListener:
    """Who listens on a TCP port: ss's line (with `users:((...pid=N...))`), '' when the port is free."""

    port: int
    sudo: bool = True

    @property
    def command(self) -> str:
        return f"ss -Hltnp {q(f'sport = :{int(self.port)}')}"

    @staticmethod
    def parse(output: str) -> str:
        return output.strip()


@dataclass(frozen=True)
class RunningBinary:
    """(the executable process `pid` runs, what `current`'s llama-server resolves to), resolved; None if unknown."""

    pid: str
    sudo: bool = True

    @property
    def command(self) -> str:
        return f"readlink -f /proc/{int(self.pid)}/exe; readlink -f {q(L.CURRENT)}/bin/llama-server"

    @staticmethod
    def parse(output: str) -> tuple[str, str] | None:
        parts = output.split()
        return (parts[0], parts[1]) if len(parts) == 2 else None


@dataclass(frozen=True)
class DebPackages:
    """The packages of `names` that dpkg has installed; None when the device has no dpkg."""

    names: tuple[str, ...]
    sudo: bool = False

    @property
    def command(self) -> str:
        return (f"command -v dpkg-query >/dev/null || {{ echo {MISSING}; exit 0; }}; "
                f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(q(n) for n in self.names)} 2>/dev/null")

    @staticmethod
    def parse(output: str) -> set[str] | None:
        if MISSING in output:
            return None
        return {line.split()[0] for line in output.splitlines() if line.endswith("install ok installed")}


@dataclass(frozen=True)
class InstalledBuild:
    """One build prefix: {'current': where `current` points, 'server': its llama-server exists, 'stamp': dict}."""

    prefix: str
    sudo: bool = False

    @property
    def command(self) -> str:
        return installed_command(self.prefix)

    @staticmethod
    def parse(output: str) -> dict:
        return parse_installed(output)


@dataclass(frozen=True)
class SourceMarker:
    """The digest of the llama.cpp source unpacked in a directory ('' when none)."""

    src_dir: str
    sudo: bool = False

    @property
    def command(self) -> str:
        return f"cat {q(self.src_dir)}/.edgekit-source 2>/dev/null || true"

    @staticmethod
    def parse(output: str) -> str:
        return output.strip()


@dataclass(frozen=True)
class GateRecord:
    """The gate's verdict for a build, when written on this machine; None otherwise."""

    prefix: str
    sudo: bool = False

    @property
    def command(self) -> str:
        return read_record_command(self.prefix)

    @staticmethod
    def parse(output: str) -> dict | None:
        return parse_record(output)


@dataclass(frozen=True)
class SystemdVersion:
    sudo: bool = False
    command: str = "systemctl --version"

    @staticmethod
    def parse(output: str) -> int | None:
        words = output.split()
        return int(words[1]) if len(words) > 1 and words[1].isdigit() else None


@dataclass(frozen=True)
class BuiltOn:
    """{'hostname', 'machine_id' (edgekit's app-specific id)} of the device."""

    sudo: bool = False
    command: str = BUILT_ON_COMMAND

    @staticmethod
    def parse(output: str) -> dict:
        return parse_built_on(output)


@dataclass(frozen=True)
class BuildDirs:
    """The installed build directories (mtime, name) and where `current` and `previous` point."""

    sudo: bool = False
    command: str = (f"cd {L.INSTALL_ROOT} 2>/dev/null && find . -mindepth 1 -maxdepth 1 -type d ! -name '*.partial' "
                    f"-printf '%T@ %f\\n'; echo \"@@current $(readlink current)\"; "
                    f"echo \"@@previous $(readlink previous)\"")

    @staticmethod
    def parse(output: str) -> str:
        return output


@dataclass(frozen=True)
class HealthyBuild:
    """The build directory name the last healthy record names ('' when none)."""

    sudo: bool = True
    command: str = f"cat {q(L.HEALTHY)} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> str:
        try:
            build = (json.loads(output or "{}") or {}).get("build") or ""
        except (ValueError, AttributeError):
            return ""
        return build.rsplit("/", 1)[-1] if isinstance(build, str) else ""


def read(transport, fact):
    """One fact read outside a run's steps (status, bench, rollback)."""
    if hasattr(fact, "read"):
        return fact.read(transport)
    res = (transport.sudo if fact.sudo else transport.run)(fact.command, check=False)
    return fact.parse(res.stdout)
