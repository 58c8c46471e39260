"""Typed errors. Library code raises these; only the CLI entry point turns them into messages and exit codes."""

from __future__ import annotations

UNEXPECTED = 1
USAGE = 2
CONNECT = 3
REMOTE = 4
UNSUITABLE = 5
PARTIAL = 6
# `edgekit doctor` by its worst finding (not errors: the command ran and found these)
DOCTOR_WARNING = 7
DOCTOR_PROBLEM = 8
INTERRUPTED = 130


class EdgekitError(Exception):
    """Base class: a message for the user, a hint naming the next thing to try, an exit code."""

    exit_code = UNEXPECTED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(EdgekitError):
    """Bad arguments, configuration or input files."""

    exit_code = USAGE


class ParseError(UsageError, ValueError):
    """Outside data (a file, a device's output, a server's answer) is not what its parser reads.

    Also a ValueError, so the stdlib-only modules the device runs (telemetry, exporter) keep their contract."""


class ConnectError(EdgekitError):
    """Cannot reach, authenticate with, or trust the target."""

    exit_code = CONNECT


class RemoteCommandFailed(EdgekitError):
    """A command on the target exited non-zero."""

    exit_code = REMOTE

    def __init__(self, command: str, exit_code: int, output: str, hint: str | None = None,
                 message: str | None = None):
        self.command = command
        self.status = exit_code
        self.output = output
        tail = "\n".join(output.rstrip().splitlines()[-12:])
        text = message or f"remote command failed (exit {exit_code}): {command}"
        if tail:
            text += "\n" + "\n".join("  | " + line for line in tail.splitlines())
        super().__init__(text, hint)


class UnsuitableDevice(EdgekitError):
    """The device cannot do what was asked (unsupported board, no CUDA, not enough memory or disk)."""

    exit_code = UNSUITABLE


class PartialFailure(EdgekitError):
    """Some hosts of a fleet failed while others succeeded."""

    exit_code = PARTIAL
