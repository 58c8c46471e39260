"""Pure checks of a packed build (pack_build's tar.gz), run on the controller before it is uploaded.

A pack is unpacked on the device as root with `tar -xzf --strip-components=1`. GNU tar strips the first
component *after* its own checks, so a member named `name//tmp/x` is written to `/tmp/x`; tar running as root
also keeps set-uid bits. `check_members` refuses anything that would write outside the unpack directory or that is
not plain files, directories and symlinks inside it; `unpack_command` is the device side (no owners or modes from
the archive, then a mode fix).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from edgekit.digest import sha256_file
from edgekit.errors import UsageError
from edgekit.remote.command import q

_MAX_LINK_HOPS = 40       # like the kernel's symlink limit: a loop is refused, not followed forever
_SHOWN = 8                # problems named in the error


class UnsafePack(UsageError):
    """A packed build whose members could write outside its directory, or carry set-uid bits or devices."""


@dataclass(frozen=True)
class PackContents:
    members: int
    size: int              # bytes of regular files, unpacked
    sha256: str


def stripped(name: str) -> str:
    """What GNU tar's --strip-components=1 leaves of a member name: everything after the first run of slashes
    following the first component (`name//tmp/x` -> `/tmp/x`: absolute, which is why it is refused)."""
    rest = name.lstrip("/")
    cut = rest.find("/")
    return "" if cut < 0 else rest[cut + 1:]


def _top(name: str) -> str:
    return name.lstrip("/").split("/", 1)[0]


def _inside(parts: list[str], links: dict[str, str]) -> bool:
    """Whether a path (components relative to the unpack directory) stays inside it, following the archive's own
    symlinks as the unpacked tree would."""
    resolved: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return False
            resolved.pop()
            continue
        here = "/".join(resolved + [part])
        if here in links:
            hops += 1
            target = links[here]
            if hops > _MAX_LINK_HOPS or target.startswith("/"):
                return False
            todo = target.split("/") + todo
            continue
        resolved.append(part)
    return True


def check_members(members: Iterable[tarfile.TarInfo], top: str | None = None) -> list[str]:
    """Pure: the reasons a pack is unsafe to unpack as root with --strip-components=1 (empty: safe).

    Refused: a name that is absolute or has `..` or empty components (before or after the strip), members outside
    one top directory (`top` when given), duplicates, anything but regular files, directories and symlinks (hard
    links, devices, fifos), set-uid/set-gid/sticky bits, symlinks that are absolute or resolve outside the tree,
    and members written through a symlink."""
    problems: list[str] = []
    members = list(members)
    tops = {_top(m.name) for m in members}
    if top is not None and tops - {top}:
        problems.append(f"members outside {top}/: {', '.join(sorted(tops - {top}))}")
    elif top is None and len(tops) > 1:
        problems.append(f"more than one top directory: {', '.join(sorted(tops))}")
    links: dict[str, str] = {}
    seen: set[str] = set()
    for m in members:
        name = m.name
        rel = stripped(name).rstrip("/") if m.isdir() else stripped(name)
        parts = rel.split("/") if rel else []
        if name.startswith("/") or rel.startswith("/"):
            problems.append(f"{name!r}: absolute name (after --strip-components=1: {rel!r})")
            continue
        if ".." in name.split("/") or "" in parts or "." in parts:
            problems.append(f"{name!r}: `..`, `.` or an empty component in its name")
            continue
        if not (m.isreg() or m.isdir() or m.issym()):
            kind = ("hard link" if m.islnk() else "device" if m.isdev() else "fifo" if m.isfifo()
                    else f"type {m.type!r}")
            problems.append(f"{name!r}: a {kind} (only regular files, directories and symlinks are packed)")
            continue
        if m.mode & 0o7000:
            problems.append(f"{name!r}: set-uid/set-gid/sticky bits (mode {m.mode:04o})")
        if rel in seen:
            problems.append(f"{name!r}: appears twice")
        seen.add(rel)
        if m.issym():
            links[rel] = m.linkname
    for m in members:
        rel = stripped(m.name).rstrip("/")
        if not rel or rel.startswith("/"):
            continue
        parts = rel.split("/")
        through = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links), None)
        if through:
            problems.append(f"{m.name!r}: written through the symlink {through!r}")
        elif m.issym() and (m.linkname.startswith("/") or not _inside(parts[:-1] + m.linkname.split("/"), links)):
            problems.append(f"{m.name!r}: symlink to {m.linkname!r} points outside the build")
    return problems


def check_pack(path: str | Path, sha256: str | None = None, top: str | None = None) -> PackContents:
    """Read a pack on the controller: its sha256 must be `sha256` (what the device will verify after upload) and
    its members pass check_members; raise UnsafePack naming the problems."""
    path = Path(path)
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise UnsafePack(f"{path} does not match the sha256 in its metadata ({digest[:12]}… != {sha256[:12]}…)",
                         hint="fetch the pack again; do not edit a pack by hand")
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UnsafePack(f"{path} is not a readable tar.gz ({e})", hint="fetch the pack again") from None
    problems = check_members(members, top)
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise UnsafePack(f"refusing to install {path.name}: it could write outside its directory or carries "
                         f"unsafe members: {'; '.join(problems[:_SHOWN])}{more}",
                         hint="fetch the pack again from the device that built it, or build on this device "
                              "(`edgekit build TARGET`)")
    return PackContents(len(members), sum(m.size for m in members if m.isreg()), digest)


def unpack_command(tarball: str, dest: str) -> str:
    """Device command (as root): unpack a checked pack into a fresh `dest`, owned by root, with no set-uid bits and
    nothing group- or world-writable."""
    return (f"rm -rf {q(dest)} && mkdir -p {q(dest)} && tar -xzf {q(tarball)} -C {q(dest)} --strip-components=1 "
            f"--no-same-owner --no-same-permissions && chmod -R u+rwX,go+rX,go-w,a-st {q(dest)}")


def checked_unpack_command(local: str | Path, sha256: str, top: str, tarball: str, dest: str) -> str:
    """check_pack on the local pack (raises UnsafePack before anything is uploaded), then its unpack_command."""
    check_pack(local, sha256, top)
    return unpack_command(tarball, dest)
