"""Facts about what is deployed on a device, for steps to compare with what should be there.

Each is a frozen dataclass (so a test can hand it in: `Context(given={FileText(path): "..."})`): its fields fill
`template` (each value quoted) to make the command, and `parse` is pure. `sudo` facts run as root (root-owned files,
other users' sockets); `read(transport)` facts run edgekit's device helper instead of a command.
"""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass, fields
from typing import Any, Callable, ClassVar

from edgekit import layout as L
from edgekit.facts.build import (BUILT_ON_COMMAND, installed_command, parse_built_on, parse_env_names, parse_installed,
                                 parse_record, read_record_command)
from edgekit.facts.device import DeviceFacts, read_facts
from edgekit.remote.command import q

MISSING = "@@edgekit-missing"


class Fact:
    """A fact with a command template (`{field}` is replaced by the field's value, quoted for the shell), or a
    function `make(*fields)` that writes the command."""

    sudo: ClassVar[bool] = False
    template: ClassVar[str] = ""
    make: ClassVar[Callable[..., str] | None] = None

    @property
    def command(self) -> str:
        if self.make is not None:
            return self.make(*astuple(self))
        return self.template.format(**{f.name: q(v) for f, v in zip(fields(self), astuple(self))})

    @staticmethod
    def parse(output: str) -> Any:  # pragma: no cover - each fact has its own
        raise NotImplementedError


@dataclass(frozen=True)
class Device:
    """All of the device's facts (edgekit.facts.device), read in one round trip."""

    cuda_arch_override: str | None = None
    sudo: ClassVar[bool] = False

    def read(self, transport) -> DeviceFacts:
        return read_facts(transport, self.cuda_arch_override)


@dataclass(frozen=True)
class FileText(Fact):
    """A file's text, or None when it does not exist."""

    path: str
    sudo = True
    template = f"if [ -f {{path}} ]; then echo @@present; cat {{path}}; else echo {MISSING}; fi"

    @staticmethod
    def parse(output: str) -> str | None:
        head, _, text = output.partition("\n")
        return text if head == "@@present" else None


@dataclass(frozen=True)
class FileOwnerMode(Fact):
    """(owner, octal mode) of a file, or None when it does not exist."""

    path: str
    sudo = True
    template = "stat -c '%U %a' {path} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> tuple[str, str] | None:
        parts = output.split()
        return (parts[0], parts[1]) if len(parts) == 2 else None


@dataclass(frozen=True)
class FileSha256(Fact):
    """The sha256 of a file (read as the login user), or None."""

    path: str
    template = "sha256sum {path} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> str | None:
        digest = (output.split() or [""])[0]
        return digest if len(digest) == 64 else None


@dataclass(frozen=True)
class UnitState(Fact):
    """A unit's state as systemd reports it: ActiveState, SubState, MainPID, UnitFileState, NRestarts, ..."""

    unit: str = L.UNIT_NAME
    template = ("systemctl show {unit} -p ActiveState -p SubState -p MainPID -p UnitFileState -p NRestarts "
                "-p ActiveEnterTimestamp -p LoadState")

    @staticmethod
    def parse(output: str) -> dict[str, str]:
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


@dataclass(frozen=True)
class UserGroups(Fact):
    """The groups a user is in, or None when there is no such user."""

    user: str
    template = f"id -nG {{user}} 2>/dev/null || echo {MISSING}"

    @staticmethod
    def parse(output: str) -> list[str] | None:
        return None if MISSING in output else output.split()


@dataclass(frozen=True)
class GpuGroups(Fact):
    """The GPU device groups (video, render) that exist here: only those names ever reach a command."""

    template = "getent group " + " ".join(L.GPU_GROUPS) + " | cut -d: -f1"

    @staticmethod
    def parse(output: str) -> list[str]:
        return [g for g in output.split() if g in L.GPU_GROUPS]


@dataclass(frozen=True)
class PortListener(Fact):
    """Who listens on a TCP port: ss's line (with `users:((...pid=N...))`), '' when the port is free."""

    port: int
    sudo = True
    template = "ss -Hltnp 'sport = :'{port}"

    @staticmethod
    def parse(output: str) -> str:
        return output.strip()


@dataclass(frozen=True)
class RunningBinary(Fact):
    """(the executable process `pid` runs, what `current`'s llama-server resolves to), resolved; None if unknown."""

    pid: str
    sudo = True
    template = f"readlink -f /proc/{{pid}}/exe; readlink -f {q(L.CURRENT)}/bin/llama-server"

    @staticmethod
    def parse(output: str) -> tuple[str, str] | None:
        parts = output.split()
        return (parts[0], parts[1]) if len(parts) == 2 else None


@dataclass(frozen=True)
class DebPackages(Fact):
    """The packages of `names` that dpkg has installed; None when the device has no dpkg."""

    names: tuple[str, ...]
    make = staticmethod(lambda names: f"command -v dpkg-query >/dev/null || {{ echo {MISSING}; exit 0; }}; "
                        f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(q(n) for n in names)} 2>/dev/null")

    @staticmethod
    def parse(output: str) -> set[str] | None:
        if MISSING in output:
            return None
        return {line.split()[0] for line in output.splitlines() if line.endswith("install ok installed")}


@dataclass(frozen=True)
class InstalledBuild(Fact):
    """One build prefix: {'current': where `current` points, 'server': its llama-server exists, 'stamp': dict}."""

    prefix: str
    make = staticmethod(installed_command)
    parse = staticmethod(parse_installed)


@dataclass(frozen=True)
class ServerEnvNames(Fact):
    """The environment names a llama-server build knows (its `--help`, run with an empty environment so no
    variable of the login shell's changes it); None when the binary is not there."""

    server: str
    template = (f"if [ -x {{server}} ]; then echo @@present; env -i PATH=/usr/bin:/bin timeout 60 {{server}} --help "
                f"2>&1; else echo {MISSING}; fi")

    @staticmethod
    def parse(output: str) -> frozenset[str] | None:
        head, _, text = output.partition("\n")
        return parse_env_names(text) if head == "@@present" else None


@dataclass(frozen=True)
class SourceMarker(Fact):
    """The digest of the llama.cpp source unpacked in a directory ('' when none)."""

    src_dir: str
    template = "cat {src_dir}/.edgekit-source 2>/dev/null || true"
    parse = staticmethod(str.strip)


@dataclass(frozen=True)
class GateRecord(Fact):
    """The gate's verdict for a build, when written on this machine; None otherwise."""

    prefix: str
    make = staticmethod(read_record_command)
    parse = staticmethod(parse_record)


@dataclass(frozen=True)
class SystemdVersion(Fact):
    template = "systemctl --version"

    @staticmethod
    def parse(output: str) -> int | None:
        words = output.split()
        return int(words[1]) if len(words) > 1 and words[1].isdecimal() else None


@dataclass(frozen=True)
class BuiltOn(Fact):
    """{'hostname', 'machine_id' (edgekit's app-specific id)} of the device."""

    template = BUILT_ON_COMMAND
    parse = staticmethod(parse_built_on)


@dataclass(frozen=True)
class BuildDirs(Fact):
    """The installed build directories ('mtime name' lines) and where `current` and `previous` point."""

    template = (f"cd {L.INSTALL_ROOT} 2>/dev/null && find . -mindepth 1 -maxdepth 1 -type d ! -name '*.partial' "
                "-printf '%T@ %f\\n'; echo \"@@current $(readlink current)\"; echo \"@@previous $(readlink previous)\"")
    parse = staticmethod(str)


@dataclass(frozen=True)
class HealthyBuild(Fact):
    """The build directory name the last healthy record names ('' when none)."""

    sudo = True
    template = f"cat {q(L.HEALTHY)} 2>/dev/null"

    @staticmethod
    def parse(output: str) -> str:
        try:
            build = (json.loads(output or "{}") or {}).get("build") or ""
        except (ValueError, AttributeError):
            return ""
        return build.rsplit("/", 1)[-1] if isinstance(build, str) else ""


@dataclass(frozen=True)
class RouterChildren(Fact):
    """Router mode: the resident memory of each model's llama-server child, by the alias the router gives it."""

    template = "ps -eo rss=,args="

    @staticmethod
    def parse(output: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in output.splitlines():
            rss, _, args = line.strip().partition(" ")
            words = args.split()
            if rss.isdecimal() and words and words[0].endswith("llama-server") and "--alias" in words[:-1]:
                found[words[words.index("--alias") + 1]] = int(rss) * 1024
        return found


@dataclass(frozen=True)
class PathsPresent(Fact):
    """Which of these paths exist (files, directories or links, dangling ones too), read as root, in the given
    order."""

    paths: tuple[str, ...]
    sudo = True

    @property
    def command(self) -> str:
        return "for p in " + " ".join(q(p) for p in self.paths) + \
            "; do if [ -e \"$p\" ] || [ -L \"$p\" ]; then printf '%s\\n' \"$p\"; fi; done"

    @staticmethod
    def parse(output: str) -> list[str]:
        return [line for line in output.splitlines() if line.startswith("/")]


@dataclass(frozen=True)
class BuildLinks(Fact):
    """Where `current` and `previous` resolve to (`readlink -e`; '' when a link is missing or dangling)."""

    template = f"readlink -e {q(L.CURRENT)}; echo @@; readlink -e {q(L.INSTALL_ROOT + '/previous')}"

    @staticmethod
    def parse(output: str) -> dict[str, str]:
        current, _, previous = (part.strip() for part in output.partition("@@"))
        return {"current": current, "previous": previous}


def read(transport, fact):
    """One fact read outside a run's steps (status, bench, rollback)."""
    if hasattr(fact, "read"):
        return fact.read(transport)
    res = (transport.sudo if fact.sudo else transport.run)(fact.command, check=False)
    return fact.parse(res.stdout)
