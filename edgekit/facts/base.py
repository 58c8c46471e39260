"""A fact is one shell command plus a pure parser of its output. Many facts are read in one round trip."""

from __future__ import annotations

import uuid
from typing import Any, Callable, ClassVar, Iterable


class Fact:
    """Subclasses set `command` (shell, run as the login user; as root with `sudo = True`) and implement
    `parse(output)` (pure). A step reads one with `ctx.fact(TheFact())`: instances of one fact are equal (a test
    hands one in by `given={TheFact(): value}`)."""

    name: ClassVar[str]
    command: ClassVar[str]
    sudo: ClassVar[bool] = False

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    @staticmethod
    def parse(output: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def gather(run: Callable[[str], str], facts: Iterable[type[Fact]]) -> dict[str, Any]:
    """Run every fact's command in one shell script and parse each section with its own parser.

    `run` takes a script and returns its stdout (Transport.run(...).stdout). A fact whose command fails
    or prints nothing gets its parser's answer for empty output (usually None).
    """
    facts = list(facts)
    mark = f"@@edgekit-{uuid.uuid4().hex[:8]}@@"
    # The newline before each mark keeps it on a line of its own after output that lacks one (device-tree
    # strings end in NUL, not newline).
    script = "\n".join(f"printf '\\n{mark}{f.name}\\n'; ( {f.command} ) 2>/dev/null" for f in facts)
    sections: dict[str, list[str]] = {}
    current = None
    for line in run(script).splitlines():
        if line.startswith(mark):
            current = line[len(mark):]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {f.name: f.parse("\n".join(sections.get(f.name, []))) for f in facts}
