"""edgekit's transport over Ansible's own connection: the second implementation of
edgekit.remote.transport.DeviceTransport (the first is fabric's), so the collection runs edgekit's steps through
the play's connection, inventory, ssh settings and become.

A command edgekit runs as root (`sudo=True`) is run sudoable, with the play's become (which must be on unless
Ansible logs in as root); a login-user command is not. Files go up with the connection's put_file to a fresh
temp name and are moved into place with the become (DeviceTransport.put). Every command is given stdin (its own,
or one newline) so that Ansible never asks ssh for a tty: with a tty, stderr would be mixed into stdout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid

import psutil

from ansible_collections.edgekit.jetson.plugins.plugin_utils.checkout import import_edgekit

import_edgekit()

from edgekit.errors import ConnectError, RemoteCommandFailed  # noqa: E402
from edgekit.remote.command import q  # noqa: E402
from edgekit.remote.transport import DeviceTransport, Result  # noqa: E402

TIMED_OUT = 124          # coreutils timeout(1)


class AnsibleTransport(DeviceTransport):
    """Run edgekit's commands through an action plugin's connection (`_low_level_execute_command`)."""

    def __init__(self, action, name: str, on_trace=None):
        self._action = action
        self._name = name
        self.on_trace = on_trace           # Ansible's -vvv: every round trip (DeviceTransport._traced)
        self.round_trips = 0

    @property
    def _connection(self):
        return self._action._connection

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_local(self) -> bool:
        return self._connection.transport in ("local", "ansible.builtin.local")

    @property
    def address(self) -> str:
        if self.is_local:
            return "127.0.0.1"
        return str(self._connection.get_option("host") or self._action._play_context.remote_addr or self._name)

    def _require_become(self) -> None:
        if self._connection.become is None:
            raise ConnectError(f"edgekit runs some commands on {self._name} as root, and {self.user} is not root",
                               hint="set `become: true` on the play or the task (become_user root)")
        user = self._action.get_become_option("become_user")
        if user not in (None, "", "root"):
            raise ConnectError(f"edgekit runs commands as root, not as become_user {user!r}",
                               hint="leave become_user unset (root) for edgekit's tasks")

    def run(self, command: str, *, sudo: bool = False, check: bool = True, env=None, timeout: float | None = None,
            on_line=None, stdin: str | None = None, hint: str | None = None) -> Result:
        script = command
        if env:
            script = " ".join(f"export {k}={q(v)};" for k, v in env.items()) + " " + script
        if timeout is not None:
            script = f"timeout -k 5 {timeout:g} sh -c {q(script)}"
        as_root = sudo and not self.is_root
        if as_root:
            self._require_become()
        start = time.monotonic()
        res = self._action._low_level_execute_command(
            f"sh -c {q(script)}" + ("" if stdin is not None else " </dev/null"), sudoable=as_root,
            in_data=(stdin or "\n").encode(), encoding_errors="surrogate_then_replace")
        out, err = res.get("stdout", ""), res.get("stderr", "")
        result = Result(command, res.get("rc", 0), out, err)
        self._traced(script, as_root, start, result.exit_code)
        if on_line is not None:
            for line in (out + err).replace("\r", "\n").splitlines():
                on_line(line)
        if timeout is not None and result.exit_code == TIMED_OUT:
            raise RemoteCommandFailed(command, -1, out + err, message=f"remote command timed out after {timeout:g}s: "
                                                                     f"{command}")
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_code, out + err, hint=hint)
        return result

    def _copy(self, local: str, remote: str) -> None:
        start = time.monotonic()
        self._connection.put_file(str(local), remote)
        self._traced(f"copy {local} ({os.path.getsize(local)} bytes) -> {remote}", False, start, None)

    def get(self, remote: str, local) -> None:
        start = time.monotonic()
        self._connection.fetch_file(remote, str(local))
        self._traced(f"copy {remote} -> {local}", False, start, None)

    def hold(self, command: str):
        if self.is_local:
            return _LocalHold(self, command)
        if self._connection.transport not in ("ssh", "ansible.builtin.ssh"):
            raise ConnectError(f"edgekit's device lock needs the ssh or local connection, not "
                               f"{self._connection.transport}", hint="use ansible_connection=ssh for edgekit's tasks")
        return _SshHold(self, command)


def _root_prefix(transport: AnsibleTransport) -> str:
    return "" if transport.is_root else "sudo -n -- "


class _SshHold:
    """The root command on its own ssh process (through the play's connection, its ControlMaster included),
    reading that process's stdin: releasing it ends the ssh process, so does the controller's death; either way
    the command on the device sees EOF and ends (as the fabric transport's holder does). Its output goes to a file
    of the login user's, read back to see the marker; the lock needs sudo without a password (or root)."""

    def __init__(self, transport: AnsibleTransport, command: str):
        self._t = transport
        self.tag = f"edgekit-hold-{uuid.uuid4().hex}"
        self.out_path = f"/tmp/.{self.tag}"
        self.output = ""
        self.exit_code: int | None = None
        full = (f": {self.tag}; umask 077; exec {_root_prefix(transport)}sh -c {q(command)} "
                f"> {q(self.out_path)} 2>&1")
        self._thread = threading.Thread(target=self._run, args=(full,), daemon=True)
        self._thread.start()

    def _run(self, full: str) -> None:
        try:
            rc, _, err = self._t._connection.exec_command(f"sh -c {q(full)}", in_data=None, sudoable=False)
            self.exit_code = rc
        except Exception as e:        # the connection's own failure: reported by wait()
            self.output += f"{e}\n"
            self.exit_code = 255

    def _read(self) -> None:
        got = self._t.run(f"cat {q(self.out_path)} 2>/dev/null", check=False).stdout
        self.output = got or self.output

    def wait(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read()
            if marker in self.output:
                return True
            if self.exit_code is not None:
                self._thread.join(timeout=1)
                self._read()
                return marker in self.output
            time.sleep(0.2)
        return False

    def release(self) -> None:
        for pid in _children_with(self.tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        self._thread.join(timeout=20)
        self._t.run(f"rm -f {q(self.out_path)}", check=False)


def _children_with(tag: str) -> list[int]:
    """This process's children whose command line holds `tag` (the ssh process of a hold)."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if any(tag in arg for arg in child.cmdline()):
                found.append(child.pid)
    return found


class _LocalHold:
    """The local connection: the device is this machine, the holder a child process reading our pipe."""

    def __init__(self, transport: AnsibleTransport, command: str):
        self.output = ""
        self.exit_code: int | None = None
        self._proc = subprocess.Popen(["sh", "-c", f"{_root_prefix(transport)}sh -c {q(command)}"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            self.output += line
        self.exit_code = self._proc.wait()

    def wait(self, marker: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while marker not in self.output and self.exit_code is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return marker in self.output

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
