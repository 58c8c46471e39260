"""The edgekit command line: thin typer commands; main() is the one place errors become messages and exit codes."""

from __future__ import annotations

import sys

import typer

from edgekit import errors
from edgekit.cli import app as _app
from edgekit.cli import commands  # noqa: F401  (registers every command on the app)
from edgekit.console import err, error, say

app = _app.app


def main(argv: list[str] | None = None) -> None:
    """Entry point for the `edgekit` console script."""
    try:
        # standalone_mode=False: usage errors come here as exceptions instead of click's own message and exit
        code = app(args=argv, prog_name="edgekit", standalone_mode=False)
    except errors.EdgekitError as e:
        error(e.message, e.hint)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        say(("interrupted", "red"))
        sys.exit(errors.INTERRUPTED)
    except typer.Abort:
        say(("aborted", "red"))
        sys.exit(errors.INTERRUPTED)
    except typer.TyperException as e:
        # Usage errors (unknown option or command, bad value, missing argument). typer bundles its own click, so
        # `click.exceptions` never match; TyperException is the public base of the bundled click's exceptions.
        sys.exit(_report_usage(e, sys.argv[1:] if argv is None else argv))
    # typer.Exit (--help, --version, Ctrl-C inside a command: 130) comes back as a return value in this mode
    code = code if isinstance(code, int) else 0
    if code == errors.INTERRUPTED:
        say(("interrupted", "red"))
    sys.exit(code)


def _report_usage(e: typer.TyperException, argv: list[str]) -> int:
    """Print `error: ...` and `hint: see `edgekit CMD --help`` for a usage error; return its exit code."""
    ctx = getattr(e, "ctx", None)
    code = getattr(e, "exit_code", errors.USAGE)
    message = e.format_message()
    if ctx is not None and message == ctx.get_help():
        # a group or command without its arguments (no_args_is_help): its help is the answer
        err.file.write(message + "\n")
        return code
    error(_sentence(message), f"see `{ctx.command_path if ctx is not None else command_path(argv)} --help`")
    return code


def command_path(argv: list[str]) -> str:
    """The command a command line names ("edgekit models pull"), for errors the parser raises without a context."""
    command, path = typer.main.get_command(app), ["edgekit"]
    for word in argv:
        if word.startswith("-"):
            continue   # groups take no options with values (only --help, --version)
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, path = sub, path + [word]
    return " ".join(path)


def _sentence(message: str) -> str:
    """click's message as one line, starting lower case like edgekit's own ("No such option" -> "no such option")."""
    text = " ".join(message.split())
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        text = text[0].lower() + text[1:]
    return text
