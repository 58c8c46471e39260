"""The docs state testable things; this holds them to it: the README is short and starts with its two commands;
every shell block in README.md and docs/ is valid shell, and every `edgekit ...` command in one parses with the real
CLI (its click parser: nothing runs); every error text troubleshooting.md is keyed by exists in edgekit's code;
doctor's checks are each there; the support matrix is the board table; relative links resolve."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer.main

from edgekit.cli import app
from edgekit.facts import boards
from edgekit.facts.jetson import JetsonRelease

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TWO_COMMANDS = [".ci/setup && edgekit sandbox demo", "python3 -m pytest -v"]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.M | re.S)
SHELL = {"sh", "bash", "shell", "console"}


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def shell_lines(lang: str, body: str) -> list[str]:
    """Commands of a block: every line of a shell block (continuations joined), or the `$ ` lines of an output one."""
    text = re.sub(r"\\\n\s*", " ", body)
    if lang in SHELL:
        return [line[2:] if line.startswith("$ ") else line for line in text.splitlines() if line.strip()]
    return [line[2:] for line in text.splitlines() if line.startswith("$ ")]


def edgekit_commands(line: str) -> list[list[str]]:
    """The argv of every `edgekit ...` in a command line (split at &&, ||, ;, |; comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    words, found, current = list(lexer), [], []
    for word in words + [";"]:
        if word in ("&&", "||", ";", "|", "&"):
            if current and current[0] == "edgekit":
                found.append(current[1:])
            current = []
        else:
            current.append(word)
    return found


def parse(argv: list[str]) -> None:
    """Parse argv with edgekit's own click command tree: groups by name down to the command, whose make_context
    parses and checks every argument and option (nothing is invoked); raises the bundled click's usage errors."""
    command, ctx, args, name = typer.main.get_command(app), None, list(argv), "edgekit"
    while hasattr(command, "get_command"):                    # a group: the next word names a command of it
        ctx = command.context_class(command, info_name=name, parent=ctx)
        if not args:
            raise LookupError(f"`{name}` needs a command")
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        if sub is None:
            raise LookupError(f"no command `{name}`")
        command = sub
    command.make_context(name, args, parent=ctx)


ALL = [(page, lang, body) for page in PAGES for lang, body in blocks(page)]
COMMANDS = [(page.name, line, argv) for page, lang, body in ALL for line in shell_lines(lang, body)
            for argv in edgekit_commands(line)]


def test_readme_is_short_and_starts_with_its_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count("\n") < 150
    lang, first = blocks(ROOT / "README.md")[0]
    assert [line.split("  #")[0].strip() for line in first.splitlines()] == TWO_COMMANDS
    assert text.index("```") < text.index("\n## ")                  # before any section


def test_every_shell_block_is_valid_shell():
    checked = 0
    for page, lang, body in ALL:
        if lang in SHELL:
            r = subprocess.run(["bash", "-n"], input=body.replace("\n$ ", "\n"), capture_output=True, text=True)
            assert r.returncode == 0, f"{page.name}: {r.stderr}\n{body}"
            checked += 1
    assert checked >= 10


def test_there_are_edgekit_commands_in_the_docs():
    assert len(COMMANDS) >= 30
    assert {argv[0] for _, _, argv in COMMANDS} >= {"sandbox", "facts", "provision", "ask", "bench", "doctor",
                                                    "models", "chat", "prometheus"}


@pytest.mark.parametrize("page, line, argv", COMMANDS, ids=[f"{p}:{' '.join(a)[:50]}" for p, _, a in COMMANDS])
def test_every_edgekit_command_in_the_docs_parses(page, line, argv):
    try:
        parse(argv)
    except Exception as e:        # the bundled click's UsageError / BadParameter, with its message
        pytest.fail(f"{page}: `{line}` does not parse: {type(e).__name__}: {getattr(e, 'message', e)}")


def test_the_parser_refuses_what_the_cli_refuses():
    """The check above can fail: an unknown option, a missing argument and an unknown command are refused."""
    for argv in (["bench", "orin", "--no-such-option"], ["bench-compare", "a.json"], ["provison", "orin"],
                 ["models", "nope"], ["doctor"], ["models"]):
        with pytest.raises(Exception) as e:
            parse(argv)
        assert type(e.value).__name__ in ("NoSuchOption", "MissingParameter", "LookupError"), (argv, e.value)


def _code_fragments() -> set[str]:
    """Every string constant in edgekit/ (f-strings: their literal parts)."""
    found: set[str] = set()
    for path in (ROOT / "edgekit").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_troubleshooting_key_is_text_edgekit_prints():
    keys = re.findall(r"^### `(.+)`$", (ROOT / "docs/troubleshooting.md").read_text(encoding="utf-8"), re.M)
    assert len(keys) >= 20
    fragments = _code_fragments()
    missing = [key for key in keys if not any(key in fragment for fragment in fragments)]
    assert missing == [], f"troubleshooting.md keys that edgekit no longer prints: {missing}"


def test_every_doctor_check_is_in_troubleshooting():
    names = set(re.findall(r'Finding\("([a-z0-9-]+)"', (ROOT / "edgekit/doctor.py").read_text()))
    page = (ROOT / "docs/troubleshooting.md").read_text(encoding="utf-8")
    listed = re.search(r"Its\s+checks, by name: (.*?)\.\n", page, re.S)[1]
    assert set(re.findall(r"`([a-z0-9-]+)`", listed)) == names and len(names) == 9
    for name in names:
        assert re.search(rf"^`{name}`, (problem|warning)", page, re.M), name


def test_support_matrix_is_the_board_table():
    page = (ROOT / "docs/support-matrix.md").read_text(encoding="utf-8")
    rows = {m[1]: [c.strip() for c in m[2].split("|")] for m in re.finditer(r"^\| `([a-z0-9-]+)` \|(.*)\|$", page, re.M)}
    assert set(rows) == {b.slug for b in boards.BOARDS}
    for board in boards.BOARDS:
        gpu, release = rows[board.slug][0], rows[board.slug][1]
        assert gpu == f"sm_{boards.module(board.part).compute_capability.replace('.', '')}"
        if board.release:
            l4t = JetsonRelease.parse(board.release)["l4t"]
            assert release == f"{l4t} / {boards.jetpack_for(l4t)}", board.slug
        assert rows[board.slug][4] == "not yet"                      # real hardware: none verified
        # the aarch64 stand-in (emulated) column: only for a board whose CPU a stand-in can show (its cpuinfo)
        assert rows[board.slug][6] == "-" or boards.module(board.part).soc in boards.SOC_CPUINFO, board.slug


def test_relative_links_resolve():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which is not there"
