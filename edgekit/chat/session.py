"""Conversation state for `edgekit chat`: system prompt, turns, slash commands, multi-line input, saving.

Multi-line input (documented in `edgekit chat --help`): a line ending in `\\` continues on the next line;
a line that is just `\"\"\"` starts a block that ends at the next `\"\"\"` line (for pastes).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgekit.chat.prompts import Turn, format_prompt
from edgekit.errors import UsageError

FENCE = '"""'
COMMANDS = {
    "/system": "/system [TEXT]   show or set the system prompt (keeps the conversation)",
    "/reset": "/reset           forget the conversation (keeps the system prompt)",
    "/save": "/save FILE       save the conversation: FILE.md as markdown, anything else as JSON",
    "/history": "/history         show the conversation so far",
    "/help": "/help            this list",
    "/quit": "/quit            leave (also /exit, Ctrl-D)",
}


@dataclass
class Conversation:
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def messages(self, pending: str | None = None) -> list[dict]:
        """OpenAI-style messages, with an optional pending user message at the end."""
        out = [{"role": "system", "content": self.system}] if self.system else []
        for t in self.turns:
            out.append({"role": "user", "content": t.user})
            out.append({"role": "assistant", "content": t.assistant or ""})
        if pending is not None:
            out.append({"role": "user", "content": pending})
        return out

    def prompt(self, family: str, pending: str) -> str:
        """The raw prompt (for /completion) of the conversation plus a pending user message."""
        return format_prompt(family, self.system, [*self.turns, Turn(pending)])

    def add(self, user: str, assistant: str) -> None:
        """Record a finished exchange (only after the server answered: a failed request changes nothing)."""
        self.turns.append(Turn(user, assistant))

    def reset(self) -> None:
        self.turns.clear()

    def to_json(self) -> dict:
        return {"system": self.system, "messages": self.messages()}

    def to_markdown(self) -> str:
        out = ["# edgekit chat", ""]
        if self.system:
            out += ["**system:** " + self.system, ""]
        for t in self.turns:
            out += ["**user:** " + t.user, "", "**assistant:** " + (t.assistant or ""), ""]
        return "\n".join(out)

    def save(self, path: str | Path) -> Path:
        """Write atomically: markdown for .md/.markdown, JSON otherwise."""
        p = Path(path).expanduser()
        text = self.to_markdown() if p.suffix.lower() in (".md", ".markdown") else \
            json.dumps(self.to_json(), ensure_ascii=False, indent=2) + "\n"
        if not p.parent.is_dir():
            raise UsageError(f"cannot save to {p}: folder {p.parent} does not exist", hint="give an existing folder")
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Conversation":
        """Read a conversation saved as JSON by save()."""
        p = Path(path).expanduser()
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            conv = cls(system=data.get("system"))
            msgs = [m for m in data["messages"] if m["role"] != "system"]
            for user, assistant in zip(msgs[0::2], msgs[1::2]):
                if user["role"] != "user" or assistant["role"] != "assistant":
                    raise ValueError("messages must alternate user/assistant")
                conv.add(user["content"], assistant["content"])
            return conv
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"cannot load a conversation from {p}: {e}",
                             hint="load a JSON file written by /save") from None


@dataclass(frozen=True)
class Command:
    name: str
    arg: str = ""


def parse_command(line: str) -> Command | None:
    """A slash command, or None for an ordinary message. Unknown commands raise UsageError listing the known ones."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text.partition(" ")
    name = {"/exit": "/quit", "/q": "/quit", "/?": "/help"}.get(name, name)
    if name not in COMMANDS:
        raise UsageError(f"unknown command {name}", hint="commands: " + " ".join(COMMANDS) + " (start with // to "
                                                         "send a message that begins with /)")
    if name == "/save" and not arg.strip():
        raise UsageError("/save needs a file name", hint="e.g. /save chat.md or /save chat.json")
    return Command(name, arg.strip())


def read_message(readline: Callable[[str], str], prompt: str = "> ", more: str = ". ") -> str:
    """Read one message: `\\` at the end of a line continues it, a `\"\"\"` line opens/closes a pasted block.

    `readline(prompt)` returns a line without its newline and raises EOFError at the end of input.
    """
    first = readline(prompt)
    if first.strip() == FENCE:
        lines = []
        while True:
            line = readline(more)
            if line.strip() == FENCE:
                return "\n".join(lines)
            lines.append(line)
    lines = []
    line = first
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = readline(more)
    lines.append(line)
    return "\n".join(lines)


def unescape(message: str) -> str:
    """A message that starts with `//` is sent with one `/` removed (so it can begin with a slash)."""
    return message[1:] if message.startswith("//") else message
