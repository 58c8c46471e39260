"""The one command builder: shell quoting, and the operations a step's change runs, each printed as it runs.

A `Change` holds a list of operations. A string is a shell command run as root, exactly as printed (build it with
`sh(...)`, which quotes every argument, or `q` for one value inside shell syntax). An `Upload` writes a file
atomically and prints as one line: destination, mode, owner, size and sha256 (`secret=True` leaves the sha256
out). `--dry-run` prints `str(op)` for each; the run executes the same, so the dry run is the plan.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from edgekit.digest import sha256_file


def q(value: object) -> str:
    """One value quoted for the shell (the only spelling of this in edgekit)."""
    return shlex.quote(str(value))


def sh(*args: object) -> str:
    """A command line from arguments, every one quoted."""
    return " ".join(q(a) for a in args)


@dataclass(frozen=True)
class Upload:
    """A file written to the device: from `text` (rendered, generated) or a controller file `local`."""

    dest: str
    text: str | None = None
    local: str | None = None
    mode: str = "0644"
    owner: str = "root"
    group: str | None = None
    secret: bool = False

    @property
    def data(self) -> bytes:
        return self.text.encode() if self.text is not None else Path(self.local or "").read_bytes()

    def __str__(self) -> str:
        if self.text is not None:
            size, digest = len(self.data), hashlib.sha256(self.data).hexdigest()
        else:
            size, digest = Path(self.local or "").stat().st_size, sha256_file(self.local or "")
        owner = self.owner if (self.group or self.owner) == self.owner else f"{self.owner}:{self.group}"
        what = f"{size} bytes" + ("" if self.secret else f", sha256 {digest[:16]}…")
        source = f"{self.local} " if self.local else ""
        return f"upload {source}→ {self.dest} ({self.mode} {owner}, {what})"


Op = str | Upload


def run_op(ctx, op: Op, **kwargs) -> None:
    """Run one operation of a change on the device (as root)."""
    if isinstance(op, Upload):
        if op.text is not None:
            ctx.transport.put_text(op.text, op.dest, sudo=True, mode=op.mode, owner=op.owner, group=op.group)
        else:
            ctx.transport.put(op.local, op.dest, sudo=True, mode=op.mode, owner=op.owner, group=op.group)
    else:
        ctx.transport.sudo(op, **kwargs)
