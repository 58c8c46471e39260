"""The one command builder: shell quoting, and the operations a step's change runs, each printed as it runs.

A `Change` holds a list of operations. A string is a shell command run as root, exactly as printed (build it with
`sh(...)`, which quotes every argument, or `q` for one value inside shell syntax); a `Cmd` runs as the login user.
An `Upload` writes a file atomically and prints as one line: destination, mode, owner, size and sha256
(`secret=True` leaves the sha256 out). A `Check` is a read the step judges (a poll, a verification), a `Local` the
controller's own work (a download to its cache): both printed, neither changes the device. A `Later` is a
device command the run composes from what it learns first, printed with the reason it cannot be shown exactly. `--dry-run` prints
`str(op)` for each; the run executes the same, in the same order, so the dry run is the plan.
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
class Cmd:
    """A shell command run as the login user (a plain string op runs as root)."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Check:
    """A read that decides what happens next (a poll, a request): printed in the plan, changes nothing."""

    text: str

    def __str__(self) -> str:
        return f"check: {self.text}"


@dataclass(frozen=True)
class Local:
    """Work done on the controller (a download to its cache): printed in the plan, runs no device command."""

    text: str

    def __str__(self) -> str:
        return f"on the controller: {self.text}"


@dataclass(frozen=True)
class Later:
    """A device command built from what the run learns first (the sha256 a download computes): printed as what it
    does and why its exact text cannot be known before the run, never as a command with a placeholder in it. The
    step's apply runs the real one in its place."""

    text: str
    why: str

    def __str__(self) -> str:
        return f"then: {self.text} (the exact command is known only during the run: {self.why})"


@dataclass(frozen=True)
class Upload:
    """A file written to the device: from `text` (rendered, generated) or a controller file `local`, atomically.

    `made_by_run` describes content only the run produces (a verdict with its time): printed instead of size and
    sha256. `root=False` writes as the login user (into a directory it owns)."""

    dest: str
    text: str | bytes | None = None
    local: str | None = None
    mode: str = "0644"
    owner: str = "root"
    group: str | None = None
    secret: bool = False
    made_by_run: str | None = None
    root: bool = True
    sha256: str | None = None         # of `local`, when known (saves reading a large file to print the plan)

    @property
    def data(self) -> bytes:
        if self.text is not None:
            return self.text.encode() if isinstance(self.text, str) else self.text
        return Path(self.local or "").read_bytes()

    def __str__(self) -> str:
        owner = self.owner if (self.group or self.owner) == self.owner else f"{self.owner}:{self.group}"
        if not self.root:
            owner = "login user"
        if self.made_by_run:
            return f"upload → {self.dest} ({self.mode} {owner}, {self.made_by_run})"
        if self.text is not None:
            size, digest = len(self.data), hashlib.sha256(self.data).hexdigest()
        else:
            size = Path(self.local or "").stat().st_size if Path(self.local or "").is_file() else None
            digest = self.sha256 or (sha256_file(self.local or "") if size is not None else "checked on arrival")
        what = (f"{size} bytes" if size is not None else "size on arrival") + \
            ("" if self.secret else f", sha256 {digest[:16]}…")
        source = f"{self.local} " if self.local else ""
        return f"upload {source}→ {self.dest} ({self.mode} {owner}, {what})"


    def with_text(self, text: str | bytes) -> "Upload":
        """The same upload with the content the run produced."""
        return Upload(self.dest, text, None, self.mode, self.owner, self.group, self.secret, self.made_by_run,
                      self.root, self.sha256)


Op = str | Cmd | Upload | Check | Local | Later


def device_changes(ops) -> list:
    """The operations that change the device (what a recording transport sees), in order: not the checks, not
    the controller's own work."""
    return [op for op in ops if not isinstance(op, (Check, Local))]


def run_op(transport, op: Op, **kwargs):
    """Run one device operation of a change: a string as root, a Cmd as the login user, an Upload atomically."""
    if isinstance(op, Upload):
        kw = dict(sudo=op.root, mode=op.mode, owner=op.owner, group=op.group) if op.root else dict(mode=op.mode)
        if op.text is None:
            return transport.put(op.local, op.dest, **kw)
        return transport.put_text(op.data, op.dest, **kw)     # as root: over stdin, never in a readable temp file
    if isinstance(op, Cmd):
        return transport.run(op.text, **kwargs)
    if isinstance(op, (Check, Local, Later)):
        raise TypeError(f"{type(op).__name__} is not run as a change: the step's apply does it")
    return transport.sudo(op, **kwargs)
