"""A thin transport to the device: run, sudo, put, get, hold. One interface (DeviceTransport), two
implementations: `Transport` here (fabric for SSH, invoke for `local`) and the Ansible connection's
(ansible/collections/ansible_collections/edgekit/jetson/plugins/plugin_utils/transport.py), so the CLI and the
Ansible collection run the same steps.

Commands run without a pty (stderr stays separate). Root-owned files are uploaded to a temp path and moved
into place with sudo. Failures raise typed errors carrying the command, its exit code and its output tail.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import re
import shutil
import socket
import tempfile
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Protocol

import invoke
import paramiko
import fabric.runners
from fabric import Config, Connection

from edgekit import paths
from edgekit.redact import redact
from edgekit.remote.command import q
from edgekit.errors import ConnectError, RemoteCommandFailed
from edgekit.remote.target import Target

SUDO_PROMPT = "[edgekit-sudo] password: "


@dataclass(frozen=True)
class Trace:
    """One remote round trip, for `-v`: what ran (secrets masked), whether as root, how long, its exit code (None:
    a file copy)."""

    host: str
    what: str
    sudo: bool
    seconds: float
    exit_code: int | None


@dataclass
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _WholeStdin(io.StringIO):
    """stdin for a remote command, handed over at once: invoke reads its in_stream one character per 10 ms poll,
    which made a 200-byte request take 2 s."""

    def read(self, size: int | None = -1) -> str:
        return super().read(-1)


class _InterruptibleRemote(fabric.runners.Remote):
    """Ctrl-C stops waiting for a remote command: invoke would write ^C to its stdin (which a command without a pty
    ignores) and wait on. The channel is closed and the interrupt raised (exit 130); work the command started on the
    device finishes there under the work lock (edgekit.remote.lock), before any later run's work starts."""

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        self.channel.close()
        raise interrupt


class _LineSink(io.TextIOBase):
    """A stream that hands complete lines to a callback (build progress, download progress)."""

    def __init__(self, on_line: Callable[[str], None]):
        self._on_line = on_line
        self._buf = ""

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.replace("\r", "\n").split("\n")
        for line in lines:
            self._on_line(line)
        return len(text)

    def flush(self) -> None:  # invoke flushes; nothing is held back but a partial line
        pass


class Held(Protocol):
    """A root command that runs until released (the device lock's holder, edgekit.remote.lock)."""

    output: str
    exit_code: int | None

    def wait(self, marker: str, timeout: float) -> bool:
        """Wait until the command printed `marker` (True) or ended or `timeout` passed (False)."""

    def release(self) -> None: ...


class DeviceTransport(ABC):
    """The one transport interface steps and facts use: run (as the login user, or as root with sudo), put
    (atomic, through a fresh temp name), get, and hold (a root command that lives as long as this session).
    An implementation gives run, _copy, get, hold and the device's names; the file writes, the round-trip count
    and the -v trace are shared."""

    read_only = False            # see ReadOnly
    become_password: str | None = None
    on_trace: Callable[[Trace], None] | None = None     # -v: called after every round trip (a command, a copy)
    round_trips = 0              # commands run and files copied on the device, for the run's summary
    _user: str | None = None

    @property
    @abstractmethod
    def name(self) -> str:
        """The device as the user named it (messages, controller state)."""

    @property
    @abstractmethod
    def is_local(self) -> bool: ...

    @property
    @abstractmethod
    def address(self) -> str:
        """The address the controller reaches the device at."""

    @abstractmethod
    def run(self, command: str, *, sudo: bool = False, check: bool = True,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            on_line: Callable[[str], None] | None = None, stdin: str | None = None,
            hint: str | None = None) -> Result:
        """Run a shell command (as root with sudo); raise RemoteCommandFailed on non-zero exit when check is true."""

    @abstractmethod
    def _copy(self, local: str, remote: str) -> None:
        """Copy a controller file to a path the login user may write."""

    @abstractmethod
    def get(self, remote: str, local: str | Path) -> None:
        """Copy a device file (readable by the login user) to the controller."""

    @abstractmethod
    def hold(self, command: str) -> Held:
        """Start a root command that runs until released, or until this session ends (the controller died)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def user(self) -> str:
        if self._user is None:
            self._user = self.run("id -un").stdout.strip()
        return self._user

    @property
    def is_root(self) -> bool:
        return self.user == "root"

    def sudo(self, command: str, **kwargs) -> Result:
        return self.run(command, sudo=True, **kwargs)

    def _traced(self, what: str, sudo: bool, start: float, exit_code: int | None) -> None:
        """Count one round trip; with -v, report it (secrets masked: the sudo password, and anything named like a
        key or token, as edgekit.redact finds them)."""
        self.round_trips += 1
        if self.on_trace is not None:
            self.on_trace(Trace(self.name, redact(what, [self.become_password]), sudo, time.monotonic() - start,
                                exit_code))

    # -- files (shared by every implementation) ------------------------------------------------------------------------------------------
    def put(self, local: str | Path, remote: str, *, sudo: bool = False, mode: str = "0644",
            owner: str = "root", group: str | None = None) -> None:
        """Copy a file to the device atomically: a fresh temp name (mktemp) in the destination's directory, then
        rename into place with mode and owner. A name someone else created is never written through, and a
        directory at `remote` is an error (`mv -T`), not a place to drop the file into."""
        local = str(local)
        template = q(_temp_template(remote))
        if not sudo:
            tmp = self.run(f"{_stale_temps_cleanup(remote)}; mktemp {template}").stdout.strip()
            try:
                self._copy(local, tmp)
                self.run(f"chmod {q(mode)} {q(tmp)} && mv -fT {q(tmp)} {q(remote)}")
            except BaseException:
                self.run(f"rm -f {q(tmp)}", check=False)
                raise
            return
        staged = self.run(f"{STAGE} && : > \"$d/upload\" && echo \"$d\"").stdout.strip()
        try:
            self._copy(local, f"{staged}/upload")
            self._install(f"{staged}/upload", remote, mode, owner, group)
        finally:
            self.run(f"rm -rf {q(staged)}", check=False)

    def _install(self, staged: str, remote: str, mode: str, owner: str, group: str | None) -> None:
        """Root installs a staged file at `remote`: a mktemp name next to it (0600 root), then mode, owner, rename."""
        template = q(_temp_template(remote))
        self.sudo(f"{_stale_temps_cleanup(remote)}; part=$(mktemp {template}) && "
                  f"{{ install -m {q(mode)} -o {q(owner)} -g {q(group or owner)} {q(staged)} \"$part\" && "
                  f"mv -fT \"$part\" {q(remote)} || {{ rm -f \"$part\"; exit 1; }}; }}")

    def put_temp(self, local: str | Path, prefix: str = "edgekit", mode: str = "0600") -> str:
        """Copy a file to a fresh temp file on the device (mktemp in /tmp, the login user's); -> its path. For
        scripts run once: a fixed /tmp name could be created first by another local user."""
        tmp = self.run(f"mktemp {q(f'/tmp/{prefix}.XXXXXXXX')}").stdout.strip()
        try:
            self._copy(str(local), tmp)
            self.run(f"chmod {q(mode)} {q(tmp)}")
        except BaseException:
            self.run(f"rm -f {q(tmp)}", check=False)
            raise
        return tmp

    def put_text(self, text: str | bytes, remote: str, *, sudo: bool = False, mode: str = "0644",
                 owner: str = "root", group: str | None = None) -> None:
        """Write text to a remote file atomically (see put). As root, the text travels on the command's stdin into a
        file created 0600 in a 0700 folder of the login user's (STAGE): no other user of the device can read it,
        not even for a moment (secrets: the API key, the exporter token)."""
        try:
            data = text if isinstance(text, str) else text.decode("utf-8")
        except UnicodeDecodeError:
            data = None
        if sudo and data is not None:
            staged = self.run(f"{STAGE} && cat > \"$d/upload\" && echo \"$d\"", stdin=data).stdout.strip()
            try:
                self._install(f"{staged}/upload", remote, mode, owner, group)
            finally:
                self.run(f"rm -rf {q(staged)}", check=False)
            return
        with tempfile.NamedTemporaryFile("wb", delete=False) as fh:     # 0600 on the controller
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
        try:
            self.put(fh.name, remote, sudo=sudo, mode=mode, owner=owner, group=group)
        finally:
            os.unlink(fh.name)


class Transport(DeviceTransport):
    """Run commands on one device over SSH (fabric), or on this machine (`local`). Use as a context manager,
    or call close()."""

    def __init__(self, target: Target, become_password: str | None = None,
                 accept_new_host_key: bool = False, connect_timeout: float = 10.0,
                 on_trace: Callable[[Trace], None] | None = None):
        self.target = target
        self.on_trace = on_trace           # -v: called after every round trip (a command, a file copy)
        self.round_trips = 0               # commands run and files copied on the device, for the run's summary
        self.become_password = become_password
        self._accept_new = accept_new_host_key
        self._timeout = connect_timeout
        self._ctx: invoke.Context | Connection | None = None
        self._user: str | None = None

    # -- connection -------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.target.display

    @property
    def is_local(self) -> bool:
        return self.target.is_local

    @property
    def address(self) -> str:
        """The address the controller reaches the device at (the ssh_config HostName, resolved)."""
        if self.is_local:
            return "127.0.0.1"
        return self._context().host

    def _context(self):
        if self._ctx is None:
            self._ctx = invoke.Context() if self.is_local else self._connect()
        return self._ctx

    def _connect(self) -> Connection:
        t = self.target
        config = Config(ssh_config=_ssh_config(), overrides={"runners": {"remote": _InterruptibleRemote}})
        connect_kwargs: dict = {}
        if t.identity:
            connect_kwargs["key_filename"] = [str(t.identity)]
        conn = Connection(t.host, user=t.user, port=t.port, config=config,
                          connect_timeout=int(self._timeout), connect_kwargs=connect_kwargs)
        client = conn.client
        for hosts_file in _known_hosts_files(conn.ssh_config):
            try:
                client.load_host_keys(str(hosts_file))
            except (OSError, paramiko.SSHException):
                pass
        client.set_missing_host_key_policy(
            _AcceptAndRecord(paths.known_hosts()) if self._accept_new else paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException as e:
            name = host_key_name(conn.host, conn.port)
            raise ConnectError(
                f"host key for {t.display} has CHANGED (got {e.key.get_name()} {e.key.get_base64()[:24]}...)",
                hint=changed_key_hint(name, _files_holding(name, _known_hosts_files(conn.ssh_config)))) from None
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e):
                raise ConnectError(
                    f"unknown host key for {t.display}: refusing to connect to a host edgekit cannot verify",
                    hint="check the fingerprint (ssh-keyscan), then run again with --accept-new-host-key "
                         f"to record it in {paths.known_hosts()}") from None
            if isinstance(e, paramiko.AuthenticationException):
                raise ConnectError(
                    f"authentication failed for {conn.user}@{t.host}:{conn.port}: {e}",
                    hint="pass the right key with --identity/-i, or add it to ssh-agent; "
                         f"check `ssh {conn.user}@{t.host}` works") from None
            raise ConnectError(f"cannot connect to {t.display}: {e}",
                               hint="check the address and that sshd runs on the device") from None
        except (socket.timeout, TimeoutError) as e:
            raise ConnectError(f"cannot connect to {t.display}: timed out after {self._timeout:g}s ({e})",
                               hint="check the address, the network, and that the device is powered on") from None
        except OSError as e:
            raise ConnectError(f"cannot connect to {t.display}: {e.strerror or e}",
                               hint="check the address and port, and that sshd runs on the device") from None
        return conn

    def close(self) -> None:
        if isinstance(self._ctx, Connection):
            self._ctx.close()
        self._ctx = None

    def __enter__(self) -> "Transport":
        return self

    def run(self, command: str, *, sudo: bool = False, check: bool = True,
            env: Mapping[str, str] | None = None, timeout: float | None = None,
            on_line: Callable[[str], None] | None = None, stdin: str | None = None,
            hint: str | None = None) -> Result:
        """Run a shell command; raise RemoteCommandFailed on non-zero exit when check is true."""
        script = command
        if env:
            script = " ".join(f"export {k}={q(v)};" for k, v in env.items()) + " " + script
        wrapped = f"sh -c {q(script)}"
        kwargs = dict(hide=True, warn=True, pty=False, timeout=timeout,
                      in_stream=_WholeStdin(stdin) if stdin is not None else False)
        if on_line is not None:
            kwargs["out_stream"] = _LineSink(on_line)
            kwargs["err_stream"] = _LineSink(on_line)
            kwargs["hide"] = False
        ctx = self._context()
        start = time.monotonic()
        try:
            if sudo and not self.is_root:
                if self.become_password is not None:
                    ctx.config.sudo.prompt = SUDO_PROMPT
                    res = ctx.sudo(wrapped, password=self.become_password, **kwargs)
                else:
                    res = ctx.run(f"sudo -n -- {wrapped}", **kwargs)
            else:
                res = ctx.run(wrapped, **kwargs)
        except invoke.exceptions.AuthFailure:
            raise ConnectError(f"sudo on {self.name} refused the password",
                               hint="check EDGEKIT_BECOME_PASS or the password given to --ask-become-pass") from None
        except invoke.exceptions.CommandTimedOut as e:
            self._traced(script, sudo, start, -1)
            raise RemoteCommandFailed(command, -1, (e.result.stdout or "") + (e.result.stderr or ""),
                                      message=f"remote command timed out after {timeout:g}s: {command}") from None
        self._traced(script, sudo, start, res.exited)
        out = res.stdout or ""
        err = (res.stderr or "").replace(SUDO_PROMPT, "")
        result = Result(command, res.exited, out, err)
        if sudo and not self.is_root and res.exited == 1 and "a password is required" in err:
            raise ConnectError(
                f"sudo on {self.name} needs a password for {self.user}",
                hint="pass --ask-become-pass (or set EDGEKIT_BECOME_PASS), or allow NOPASSWD sudo for this user")
        if sudo and not self.is_root and ("is not in the sudoers file" in err or "may not run sudo" in err):
            raise ConnectError(f"sudo refused on {self.name}: {self.user} may not use sudo",
                               hint=f"add {self.user} to the sudo group on the device, or log in as a user who can")
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_code, out + err, hint=hint)
        return result

    def _copy(self, local: str, remote: str) -> None:
        ctx = self._context()
        start = time.monotonic()
        if isinstance(ctx, Connection):
            ctx.put(local, remote, preserve_mode=False)    # the mktemp'd file stays 0600 (not the local file's mode)
        else:
            shutil.copyfile(local, remote)
        self._traced(f"copy {local} ({os.path.getsize(local)} bytes) -> {remote}", False, start, None)

    def get(self, remote: str, local: str | Path) -> None:
        ctx = self._context()
        start = time.monotonic()
        if isinstance(ctx, Connection):
            ctx.get(remote, str(local))
        else:
            shutil.copyfile(remote, local)
        self._traced(f"copy {remote} -> {local}", False, start, None)

    def hold(self, command: str) -> Held:
        """The command on its own channel reading stdin: when this session ends, or the controller dies, the
        channel closes, the command sees EOF and ends."""
        return _ChannelHold(self, command)


class ReadOnly:
    """A dry run's view of a transport (remote.plan.Context makes it): commands run as on the transport it wraps,
    but nothing is uploaded (put refuses: a step wrote outside its change), and edgekit's device helper, when it is
    not on the device yet, runs from memory (edgekit.remote.helper). The wrapped transport is left as it was."""

    read_only = True

    def __init__(self, transport) -> None:
        self.transport = transport

    def __getattr__(self, name: str):
        return getattr(self.transport, name)

    def _refuse(self, remote: str):
        raise RuntimeError(f"a dry run writes nothing on the device, but {remote} was to be uploaded to "
                           f"{self.transport.name}: a step planned a write outside its change")

    def put(self, local, remote: str, **kwargs) -> None:
        self._refuse(remote)

    def put_text(self, text: str, remote: str, **kwargs) -> None:
        self._refuse(remote)

    def put_temp(self, local, prefix: str = "edgekit", mode: str = "0600") -> str:
        self._refuse(f"/tmp/{prefix}.XXXXXXXX")


class _ChannelHold:
    """A root command on its own SSH channel (or a local process) reading stdin until this session closes it."""

    def __init__(self, transport: Transport, command: str):
        self.output = ""
        self.exit_code: int | None = None
        prefix, password = "", None
        if not transport.is_root:
            if transport.become_password is not None:
                prefix, password = "sudo -S -p '' -- ", transport.become_password
            else:
                prefix = "sudo -n -- "
        full = f"{prefix}sh -c {q(command)}"
        ctx = transport._context()
        if transport.is_local:
            self._proc = subprocess.Popen(["sh", "-c", full], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
            if password is not None:
                self._proc.stdin.write(password + "\n")
                self._proc.stdin.flush()
            self._chan = None
            threading.Thread(target=self._read_local, daemon=True).start()
        else:
            self._chan = ctx.client.get_transport().open_session()
            self._chan.exec_command(full)
            if password is not None:
                self._chan.sendall((password + "\n").encode())
            threading.Thread(target=self._read_remote, daemon=True).start()

    def _read_local(self) -> None:
        for line in self._proc.stdout:
            self.output += line
        self.exit_code = self._proc.wait()

    def _read_remote(self) -> None:
        f = self._chan.makefile("r")
        for line in f:
            self.output += line
        self.exit_code = self._chan.recv_exit_status()

    def wait(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while marker not in self.output and self.exit_code is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return marker in self.output

    def release(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.shutdown_write()
                self._chan.close()
        else:
            with contextlib.suppress(Exception):
                self._proc.stdin.close()
                self._proc.wait(timeout=10)


# Where a root-owned upload waits for `install`: a fresh 0700 folder of the login user's holding a 0600 file.
STAGE = "umask 077 && d=$(mktemp -d /tmp/edgekit-upload.XXXXXXXX)"


def _temp_template(remote: str) -> str:
    """mktemp's template for a temp file next to `remote` (same directory, so the final mv is a rename)."""
    directory, base = posixpath.split(remote)
    return posixpath.join(directory or ".", f".{base}.edgekit-XXXXXX")


STALE_TEMP_MINUTES = 60


def _stale_temps_cleanup(remote: str) -> str:
    """Remove temp files of earlier puts to the same destination left by killed runs: untouched for an hour (an
    upload in progress keeps writing to its own). Other users' files in a sticky directory are left alone."""
    directory, base = posixpath.split(remote)
    pattern = re.sub(r"([*?\[\\])", r"\\\1", f".{base}.edgekit-") + "??????"
    return (f"find {q(directory or '.')} -maxdepth 1 -type f -name {q(pattern)} "
            f"-mmin +{STALE_TEMP_MINUTES} -delete 2>/dev/null")


def host_key_name(host: str, port: int | None) -> str:
    """The name known_hosts files (OpenSSH's and paramiko's) give a host: `host` on port 22, else `[host]:port`."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def _files_holding(name: str, files: list[Path]) -> list[Path]:
    """The known_hosts files with a key for `name` (hashed entries too)."""
    found = []
    for path in files:
        try:
            if paramiko.HostKeys(str(path)).lookup(name):
                found.append(path)
        except (OSError, paramiko.SSHException, ValueError):
            continue
    return found


def changed_key_hint(name: str, files: list[Path]) -> str:
    """The hint for a changed host key: the exact command that removes the old key from each file holding it
    (edgekit's own known_hosts when none is found)."""
    files = files or [paths.known_hosts()]
    commands = " and ".join(f"`ssh-keygen -f {q(str(f))} -R {q(name)}`" for f in files)
    hint = f"if the device was re-flashed, remove its old key with {commands}, then retry with --accept-new-host-key"
    return hint


class _AcceptAndRecord(paramiko.MissingHostKeyPolicy):
    """--accept-new-host-key: trust a first-seen key and record it in edgekit's known_hosts."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="ascii") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


def _ssh_config() -> paramiko.SSHConfig:
    """EDGEKIT_SSH_CONFIG alone when set (tests); else edgekit's own (stand-ins) and then ~/.ssh/config."""
    only = os.environ.get("EDGEKIT_SSH_CONFIG")
    files = [Path(only)] if only else [paths.home() / "ssh_config", Path.home() / ".ssh" / "config"]
    config = paramiko.SSHConfig()
    for path in files:
        if path.is_file():
            with open(path, encoding="utf-8") as fh:
                config.parse(fh)
    return config


def _known_hosts_files(ssh_config) -> list[Path]:
    files = [paths.known_hosts()]
    if not os.environ.get("EDGEKIT_SSH_CONFIG"):
        files.append(Path.home() / ".ssh" / "known_hosts")
    for entry in (ssh_config.get("userknownhostsfile") or "").split():
        files.append(Path(os.path.expanduser(entry)))
    return [f for f in files if f.is_file()]
