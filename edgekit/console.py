"""The one stderr console. stdout is kept for data (--json, answers) so edgekit pipes cleanly.

Text that comes from outside (messages, hints, paths, model names, URLs, server errors) is data, never rich
markup: `pip install 'edgekit[plots]'` must print as written. Print it with say(), error(), note(), warning(), and
tables with DataTable; these never read markup. `err.print` with markup is for fixed literals only.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Optional, Union

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

err = Console(stderr=True, highlight=False, soft_wrap=False)

Part = Union[str, Text, tuple]   # tuple: (text, style)


def plain(value: Any, style: str = "") -> Any:
    """A str as Text that rich never reads as markup; anything else (None, Text, tables) as it is."""
    return Text(value, style=style) if isinstance(value, str) else value


def line(*parts: Part) -> Text:
    """One line from parts: a str is plain text, a (text, style) pair is styled text; nothing is markup."""
    return Text.assemble(*parts)


def say(*parts: Part) -> None:
    """Print one line on stderr from parts (see line()); a long line stays one logical line."""
    err.print(line(*parts), soft_wrap=True)


def error(message: str, hint: Optional[str] = None) -> None:
    """`error: MESSAGE` and, when there is one, `hint: HINT` on stderr."""
    say(("error:", "bold red"), " ", message)
    if hint:
        say(("hint:", "dim"), " ", hint)


def warning(message: str) -> None:
    say(("warning:", "yellow"), " ", message)


def note(message: str) -> None:
    say(("note:", "dim"), " ", message)


class DataTable(Table):
    """A rich Table whose str title, headers and cells are data, never markup; style a cell with plain(text, style)."""

    def __init__(self, *headers: Any, title: Any = None, **kwargs: Any):
        super().__init__(*headers, title=plain(title), **kwargs)   # str headers go through add_column

    def add_column(self, header: RenderableType = "", *args: Any, **kwargs: Any) -> None:
        super().add_column(plain(header), *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        super().add_row(*[plain(c) for c in cells], **kwargs)


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    sys.stdout.flush()


STATUS_STYLE = {"ok": "green", "changed": "yellow", "would-change": "cyan", "failed": "bold red"}


class StepPrinter:
    """Reports steps on stderr: one line each (ok / changed / would-change / failed) and a live progress bar."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix
        self._progress = None
        self._task = None

    def step_started(self, step: str) -> None:
        pass

    def progress(self, step: str, text: str, completed: float | None = None, total: float | None = None) -> None:
        if self._progress is None:
            self._progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(),
                                      TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                      console=err, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("", total=None)
        self._progress.update(self._task, description=f"{self.prefix}{step}: {text}"[:100],
                              completed=completed, total=total)

    def step_finished(self, result) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        style = STATUS_STYLE.get(result.status, "white")
        say(self.prefix, (f"{result.status:>12}", style), f" {result.step}: {result.message} ",
            (f"({result.seconds:.1f}s)", "dim"))
        if result.status == "would-change":
            for command in result.commands:
                say(f"{self.prefix}{'':>14}", ("$", "dim"), f" {command}")


class Tracer:
    """`-v`: each remote round trip on stderr as it completes (host, `$` as the login user or `#` as root, the
    command with secrets masked by the transport, seconds, exit code), counted for the run's summary. One tracer
    serves every transport of a command (a fleet's too: lines carry the host)."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.seconds = 0.0
        self.hosts: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, trace) -> None:
        with self._lock:
            self.round_trips += 1
            self.seconds += trace.seconds
            self.hosts.add(trace.host)
        if trace.exit_code is None:
            outcome = (f"({trace.seconds:.2f}s)", "dim")
        else:
            outcome = (f"({trace.seconds:.2f}s, exit {trace.exit_code})", "dim" if trace.exit_code == 0 else "red")
        say((f"[{trace.host}] ", "dim"), ("# " if trace.sudo else "$ ", "dim"), trace.what, " ", outcome)

    def summary(self) -> None:
        if self.round_trips:
            say((f"{self.round_trips} remote round trip(s)", "bold"),
                f" to {', '.join(sorted(self.hosts))}, {self.seconds:.1f}s waiting on them")
