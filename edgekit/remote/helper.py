"""The device helper: edgekit's device-side code as one zipapp, uploaded once per version, run with python3.

Built here from stdlib-only modules (edgekit.device, models.gguf_header, the telemetry collector) and kept on the
device at ~/.cache/edgekit/helper-<sha256 prefix>.pyz (the login user's; folder mode 0700). An upload goes to a
temp name, is checked against the sha256, then renamed into place; a helper already there with the same sha256 is
reused. Run: `python3 PATH SUBCOMMAND ARGS...` (edgekit.device.cli lists them); results come back as event lines.
Secrets go on stdin only, never in argv or the environment.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import tempfile
import uuid
import weakref
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.device.events import parse_event
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice
from edgekit.remote.command import q, sh
from edgekit.remote.transport import ReadOnly

PACKAGE = Path(__file__).resolve().parents[1]        # edgekit/
# The telemetry agent's modules (edgekit.telemetry.collector and what it imports), by path under edgekit/: stdlib
# only; facts/jetson.py: the one nvpmodel parser; errors.py: the parsers' typed ParseError. Listed here, with the
# rest of what runs on the device, so that this layer names paths and imports no domain code.
AGENT_MODULES = ("errors", "telemetry/__init__", "telemetry/sample", "telemetry/tegrastats", "telemetry/jtop",
                 "telemetry/procfs", "telemetry/collector", "facts/__init__", "facts/base", "facts/jetson")
MODULES = (*(f"device/{m}.py" for m in ("__init__", "events", "files", "fetch", "net", "cli")),
           "models/gguf_header.py", "localhttp.py", *(f"{m}.py" for m in AGENT_MODULES))     # paths under edgekit/
MAIN = ("import sys\n"
        "if sys.version_info < (3, 8):\n"
        "    sys.exit('the edgekit helper needs python3 >= 3.8 on the device')\n"
        "from edgekit.device.cli import main\n"
        "sys.exit(main())\n")
FOLDER = ".cache/edgekit"                            # under the login user's home
STALE_MINUTES = 24 * 60
_SHA256 = re.compile(r"^([0-9a-f]{64})\s")
_paths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def zipapp(main: str, modules: tuple[str, ...], packages: tuple[str, ...] = ()) -> bytes:
    """A zipapp of some of edgekit's modules (paths under edgekit/) with `main` as __main__.py: the same bytes for
    the same code (fixed times, fixed order). `packages`: more empty __init__.py to add (edgekit/ has one)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, text: str) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, text)

        add("__main__.py", main)
        for package in ("", *packages):
            add(f"edgekit/{package}__init__.py", "")
        for rel in modules:
            add(f"edgekit/{rel}", (PACKAGE / rel).read_text(encoding="utf-8"))
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def build() -> bytes:
    """The helper zipapp."""
    return zipapp(MAIN, MODULES, ("models/",))


def helper_name(blob: bytes) -> str:
    return f"helper-{hashlib.sha256(blob).hexdigest()[:16]}.pyz"


def state_command(name: str) -> str:
    """What the device has: its $HOME, whether python3 is there, the sha256 of the helper `name` (when present)."""
    return (f"printf 'home=%s\\n' \"$HOME\"; command -v python3 >/dev/null 2>&1 && echo python3=yes; "
            f"sha256sum \"$HOME\"/{FOLDER}/{q(name)} 2>/dev/null; true")


def parse_state(output: str) -> tuple[str, bool, str | None]:
    """Pure: state_command's output -> (home, python3 found, sha256 of the helper or None)."""
    home, python, sha = "", False, None
    for line in output.splitlines():
        if line.startswith("home="):
            home = line[len("home="):]
        elif line == "python3=yes":
            python = True
        elif m := _SHA256.match(line):
            sha = m.group(1)
    return home, python, sha


@dataclass(frozen=True)
class Placed:
    """Where the helper is on a device, and whether it is there (a dry run does not upload it)."""

    path: str
    present: bool


def placed(transport) -> Placed:
    """The helper's path on the device, uploaded first when it is missing or not these bytes (once per transport);
    a read-only transport (a dry run) uploads nothing: the path is where it will be, `present` says if it is."""
    read_only = getattr(transport, "read_only", False)
    key = transport.transport if isinstance(transport, ReadOnly) else transport     # the device's, not the view's
    try:
        known = _paths[key]
        if known.present or read_only:
            return known
    except (KeyError, TypeError):
        pass
    blob = build()
    name, digest = helper_name(blob), hashlib.sha256(blob).hexdigest()
    home, python, sha = parse_state(transport.run(state_command(name)).stdout)
    if not python:
        raise UnsuitableDevice(f"no python3 on {transport.name}: edgekit runs its device helper with it",
                               hint="install it on the device (sudo apt-get install python3), then run again")
    if not home.startswith("/"):
        raise UnsuitableDevice(f"the login user on {transport.name} has no home directory ($HOME is {home!r})",
                               hint=f"edgekit keeps its device helper in ~/{FOLDER}: log in as a user with a home")
    folder = f"{home}/{FOLDER}"
    present = sha == digest
    if not present and not read_only:
        _upload(transport, blob, folder, name, digest)
        present = True
    where = Placed(f"{folder}/{name}", present)
    try:
        _paths[key] = where
    except TypeError:          # a transport that cannot be weakly referenced: asked again next time
        pass
    return where


def helper_path(transport) -> str:
    """The helper's path on the device (uploaded first when missing, except in a dry run: see `placed`)."""
    return placed(transport).path


# Runs the helper from stdin's first line (the zipapp, base64) without writing it anywhere: a dry run's reads on a
# device that lacks this helper. Modules are served from the in-memory zip; the rest of stdin is the helper's.
IN_MEMORY = (
    "import base64,importlib.abc,importlib.util,io,sys,zipfile\n"
    "Z=zipfile.ZipFile(io.BytesIO(base64.b64decode(sys.stdin.buffer.readline())))\n"
    "N=set(Z.namelist())\n"
    "class L(importlib.abc.MetaPathFinder,importlib.abc.Loader):\n"
    " def find_spec(self,name,path,target=None):\n"
    "  b=name.replace('.','/')\n"
    "  if b+'/__init__.py' in N: return importlib.util.spec_from_loader(name,self,is_package=True)\n"
    "  if b+'.py' in N: return importlib.util.spec_from_loader(name,self)\n"
    " def create_module(self,spec): return None\n"
    " def exec_module(self,m):\n"
    "  b=m.__name__.replace('.','/');f=b+'/__init__.py' if b+'/__init__.py' in N else b+'.py'\n"
    "  exec(compile(Z.read(f),f,'exec'),m.__dict__)\n"
    "sys.meta_path.insert(0,L())\n"
    "exec(compile(Z.read('__main__.py'),'__main__.py','exec'),{'__name__':'__main__'})\n")


def _upload(transport, blob: bytes, folder: str, name: str, digest: str) -> None:
    """Upload to a temp name of this run's own, check its sha256, rename it into place. Other helpers (another
    edgekit version's, or the telemetry-*.pyz of the past) and temp files of killed runs go once a day old: a
    younger one may be running right now."""
    path, incoming = f"{folder}/{name}", f"{folder}/.{name}.{uuid.uuid4().hex[:12]}"
    transport.run(f"mkdir -p {q(folder)} && chmod 0700 {q(folder)}")
    with tempfile.NamedTemporaryFile(suffix=".pyz", delete=False) as fh:
        fh.write(blob)
    try:
        transport.put(fh.name, incoming, mode="0600")
    finally:
        os.unlink(fh.name)
    stale = (f"find {q(folder)} -maxdepth 1 -type f \\( -name 'helper-*.pyz' -o -name 'telemetry-*.pyz' -o -name "
             f"'.helper-*' \\) ! -name {q(name)} -mmin +{STALE_MINUTES} -delete 2>/dev/null; true")
    res = transport.run(f"printf '%s  %s\\n' {digest} {q(incoming)} | sha256sum -c --status && "
                        f"mv -f {q(incoming)} {q(path)} && {{ {stale}; }}", check=False)
    if not res.ok:
        transport.run(f"rm -f {q(incoming)}", check=False)
        raise RemoteCommandFailed(f"sha256sum -c {incoming}", res.exit_code, res.stdout + res.stderr,
                                  message=f"the edgekit helper uploaded to {transport.name} does not have sha256 "
                                          f"{digest[:16]}…; it was removed", hint="run again")


def helper_command(transport, subcommand: str, args: list[str] | tuple[str, ...] = ()) -> str:
    """The command line that runs one helper subcommand on the device (uploading the helper first if needed; in a
    dry run the line it will run, the helper uploaded then)."""
    return sh("python3", helper_path(transport), subcommand, *args)


def run_helper(transport, subcommand: str, args: list[str] | tuple[str, ...] = (), stdin: str | None = None,
               on_event: Callable[[dict], None] | None = None, timeout: float | None = None):
    """Run one helper subcommand on the device; -> (its events, the transport's Result). Never raises for the
    helper's own exit code: the caller reads the events (last_event) and the result. In a dry run on a device
    that lacks this helper, it runs from memory (IN_MEMORY): nothing is written to the device."""
    where = placed(transport)
    if where.present:
        command = sh("python3", where.path, subcommand, *args)
    else:
        command = sh("python3", "-c", IN_MEMORY, subcommand, *args)
        stdin = base64.b64encode(build()).decode() + "\n" + (stdin or "")
    return collect_events(lambda c, **kw: transport.run(c, check=False, timeout=timeout, **kw), command, stdin,
                          on_event)


def collect_events(run, command: str, stdin: str | None = None, on_event: Callable[[dict], None] | None = None):
    """Run a helper command line with `run(command, stdin=, on_line=)` (a change, a check or a plain run); -> (its
    events, the result)."""
    events: list[dict] = []

    def on_line(line: str) -> None:
        event = parse_event(line)
        if event is not None:
            events.append(event)
            if on_event:
                on_event(event)

    return events, run(command, stdin=stdin, on_line=on_line)


def last_event(events: list[dict], result, subcommand: str) -> dict:
    """The helper's last event; RemoteCommandFailed (with its output) when it printed none."""
    if events:
        return events[-1]
    raise RemoteCommandFailed(f"python3 helper.pyz {subcommand}", result.exit_code, result.stdout + result.stderr,
                              hint="the device needs python3 (3.8 or newer)")
