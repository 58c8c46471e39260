"""Targets: `[user@]host[:port]`, an alias from ssh_config, or `local` (this machine)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import UsageError

_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9a-fA-F:.]+\]|[^@:\s\[\]]+)(?::(?P<port>\d+))?$")


def format_target(host: str, user: str | None = None, port: int | None = None) -> str:
    """`[user@]host[:port]`, the form parse_target reads back (an IPv6 address in brackets)."""
    text = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if user:
        text = f"{user}@{text}"
    return f"{text}:{port}" if port else text


@dataclass(frozen=True)
class Target:
    """A device to log in to; `local` is this machine."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.host == "local"

    @property
    def display(self) -> str:
        return format_target(self.host, self.user, self.port)


def parse_target(text: str, identity: str | Path | None = None) -> Target:
    """Parse a target string; raise UsageError naming the accepted forms."""
    text = (text or "").strip()
    if text == "local":
        return Target("local")
    m = _TARGET.match(text)
    if not m:
        raise UsageError(f"not a target: {text!r}",
                         hint="use [user@]host[:port], an ssh_config alias, or `local`")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"port out of range in target {text!r}", hint="ports are 1-65535")
    host = m["host"].strip("[]")
    ident = Path(identity).expanduser() if identity else None
    if ident is not None and not ident.is_file():
        raise UsageError(f"identity file not found: {ident}", hint="pass the private key's path to --identity/-i")
    return Target(host=host, user=m["user"], port=port, identity=ident)
