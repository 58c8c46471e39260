"""The one stderr console. stdout is kept for data (--json, answers) so edgekit pipes cleanly."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False, soft_wrap=False)


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
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        if self._progress is None:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
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
        err.print(f"{self.prefix}[{style}]{result.status:>12}[/] {escape(result.step)}: {escape(result.message)} "
                  f"[dim]({result.seconds:.1f}s)[/]", soft_wrap=True)
        if result.status == "would-change":
            for command in result.commands:
                err.print(f"{self.prefix}{'':>14}[dim]$[/] {escape(command)}", soft_wrap=True)
