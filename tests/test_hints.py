"""Hints name real things: every --option a hint names exists on the command(s) that can print it, every
`edgekit COMMAND` it names exists, and a systemd unit it names is the one edgekit installs.

Hints are found by reading the source (AST): string literals and f-strings passed as `hint=` or assigned to a
variable named `hint`. The commands and their options come from the typer app itself.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

import edgekit
from edgekit.cli import app
from edgekit.layout import UNIT_NAME
from tests.conftest import run_cli_inprocess as run_cli

PACKAGE = Path(edgekit.__file__).resolve().parent
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
UNIT = re.compile(r"(?:systemctl\s+(?:status|start|stop|restart)|journalctl\s+-u)\s+([\w@.-]+)")
IDENTITY, INVENTORY = "every command that logs in to a device", "every command that reads an inventory"

# Which commands can print a hint raised in a library module (longest matching prefix wins). Hints in
# edgekit/cli/X.py belong to the commands defined there. `sandbox demo` runs provisioning too, but with settings
# of its own (a CPU build of a fixed model), so build/model hints are not held against its options.
PRINTED_BY: dict[str, tuple[str, ...] | str] = {
    "bench/": ("bench",),
    "llamacpp/": ("build", "provision"),
    "chat/": ("chat", "ask"),
    "chat/client.py": ("ask", "chat", "bench"),
    "chat/profile.py": ("chat", "ask", "modelfile"),
    "chat/prompts.py": ("chat", "ask", "modelfile"),
    "fleet/": INVENTORY,
    "models/download.py": ("models pull", "provision"),
    "models/steps.py": ("models pull", "provision"),
    "models/request.py": ("models pull", "provision"),
    "models/fetch.py": ("models pull", "provision"),
    "models/router.py": ("provision",),
    "models/drafts.py": ("provision",),
    "models/lora.py": ("provision",),
    # `models fit` prints require_fit's hint too, but with force_flag=False, which leaves out the --force phrase
    # (test_models_fit_hint_leaves_out_force below runs it)
    "models/fit.py": ("models pull", "provision"),
    "provision.py": ("provision",),
    "remote/": IDENTITY,
    "sandbox/": ("sandbox demo",),
    "sandbox/emulation.py": ("sandbox up",),          # --arch: only `sandbox up` makes a foreign stand-in
    "sandbox/rootfs.py": ("sandbox up",),             # --suite/--arch: the demo always uses the default flavor
    "service/": ("provision",),
    "settings.py": ("provision",),
    "tuning/": ("provision",),
    "metrics/": ("provision", "prometheus"),
}

# Known wrong today, in files another change owns; each entry names the fix. Remove an entry once it passes
# (strict: a case that starts passing fails until its entry is removed, so the list cannot go stale).
PENDING: dict[tuple, str] = {}


@dataclass(frozen=True)
class Hint:
    module: str   # path under edgekit/, e.g. "llamacpp/steps.py"
    line: int
    text: str     # the literal parts; interpolations read as {}
    function: str = ""   # the top-level function it is in

    def __str__(self) -> str:
        return f"{self.module}:{self.line}"


def _text(node: ast.AST) -> str:
    """The string literals of an expression in source order (f-string values as {}); `a + b`, `x if c else y` too."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else ""
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else _interpolated(v) for v in node.values)
    return "".join(_text(child) for child in ast.iter_child_nodes(node))


def _interpolated(value: ast.FormattedValue) -> str:
    """An f-string's {value} as {}, except the unit's name (UNIT_NAME, L.UNIT_NAME), which reads as the unit."""
    return UNIT_NAME if ast.unparse(value.value).split(".")[-1] == "UNIT_NAME" else "{}"


def collect_hints() -> list[Hint]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for top in ast.parse(path.read_text(encoding="utf-8")).body:
            function = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else ""
            for node in ast.walk(top):
                if isinstance(node, ast.keyword) and node.arg == "hint":
                    value = node.value
                elif isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                        isinstance(t, ast.Name) and t.id == "hint"
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])):
                    value = node.value
                else:
                    continue
                text = _text(value) if value is not None else ""
                if text:
                    found.append(Hint(module, value.lineno, text, function))
    return found


def cli_callers(module: str) -> dict[str, set[str]]:
    """For edgekit/cli/X.py: {top-level function: the commands that run it}, a command's own function included,
    helpers through the command functions (and other helpers) that name them."""
    dotted = "edgekit." + module[:-3].replace("/", ".")
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    uses = {name: {n.id for n in ast.walk(d) if isinstance(n, ast.Name)} for name, d in defs.items()}
    callers = {name: {c for c, (where, fn) in DEFINED_IN.items() if (where, fn) == (dotted, name)} for name in defs}
    changed = True
    while changed:   # a helper is run by every command that runs a function naming it
        changed = False
        for name in defs:
            for other, names in uses.items():
                if name in names and other != name and not callers[other] <= callers[name]:
                    callers[name] |= callers[other]
                    changed = True
    return callers


def command_options() -> tuple[dict[str, set[str]], dict[str, str]]:
    """{"models pull": {"--target", ...}} for every leaf command, and {command: the module defining it}."""
    options, modules = {}, {}

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, path + [name])
            return
        name = " ".join(path)
        options[name] = {o for p in command.params for o in [*p.opts, *p.secondary_opts] if o.startswith("--")}
        options[name].add("--help")
        modules[name] = (command.callback.__module__, command.callback.__name__)
    walk(typer.main.get_command(app), [])
    return options, modules


OPTIONS, DEFINED_IN = command_options()
GROUPS = {name.split()[0] for name in OPTIONS if " " in name}


def printers(module: str, function: str = "") -> tuple[str, ...]:
    if module.startswith("cli/"):
        callers = cli_callers(module)
        if function in callers:
            return tuple(sorted(callers[function]))
        dotted = "edgekit." + module[:-3].replace("/", ".")
        return tuple(name for name, (where, _) in DEFINED_IN.items() if where == dotted)
    matches = [prefix for prefix in PRINTED_BY if module.startswith(prefix)]
    if not matches:
        return ()
    who = PRINTED_BY[max(matches, key=len)]
    if who in (IDENTITY, INVENTORY):
        flag = "--identity" if who == IDENTITY else "--inventory"
        return tuple(name for name, opts in OPTIONS.items() if flag in opts)
    return who


def named_command(text: str) -> str | None:
    """`edgekit models fit X --board B` -> "models fit"; "edgekit nosuch" -> "nosuch" (does not exist)."""
    words = text.split()
    if len(words) < 2 or words[0] != "edgekit":
        return None
    if words[1] in GROUPS and len(words) > 2 and f"{words[1]} {words[2]}" in OPTIONS:
        return f"{words[1]} {words[2]}"
    return words[1] if words[1] not in GROUPS else f"{words[1]} {words[2] if len(words) > 2 else ''}".strip()


def mentions(hint: Hint) -> tuple[list[str], list[tuple[str, str | None]]]:
    """The edgekit commands a hint names, and each --option with the command it belongs to (None: the command that
    prints the hint). An option belongs to a named command when it is in the same `backtick span` or in a
    phrase ("..., or edgekit chat --url URL") that starts with that command."""
    commands, options = [], []
    spans = re.findall(r"`([^`]*)`", hint.text)
    rest = re.sub(r"`[^`]*`", " ", hint.text)
    phrases = [p.strip() for p in re.split(r",|;|\(|\)|\bor\b|\be\.g\.", rest)]
    for piece in spans + phrases:
        # in backticks, `edgekit X` is a command line; unquoted, only a known command is ("edgekit needs ..." is prose)
        command = named_command(piece) if piece.startswith("edgekit ") else None
        if command and piece not in spans and command.split()[0] not in GROUPS and command not in OPTIONS:
            command = None
        if command:
            commands.append(command)
        options += [(option, command) for option in OPTION.findall(piece)]
    return commands, options


HINTS = collect_hints()


def _option_cases():
    for hint in HINTS:
        for option, named in mentions(hint)[1]:
            for command in ([named] if named else printers(hint.module, hint.function)):
                reason = PENDING.get((hint.module, option, command))
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                yield pytest.param(hint, option, command, id=f"{hint} {option} on {command}", marks=marks)


def test_hints_are_found():
    # the scan itself works: a few hints every version of edgekit has
    texts = " | ".join(h.text for h in HINTS)
    assert len(HINTS) > 50
    assert "--accept-new-host-key" in texts and "edgekit facts" in texts


def test_every_module_whose_hints_name_options_says_who_prints_them():
    unmapped = sorted({h.module for h in HINTS if mentions(h)[1] and not printers(h.module)
                       and any(named is None for _, named in mentions(h)[1])})
    assert not unmapped, f"add these modules to PRINTED_BY (which commands can print their hints): {unmapped}"


@pytest.mark.parametrize("hint, option, command", list(_option_cases()))
def test_hint_option_exists_on_the_command(hint, option, command):
    assert command in OPTIONS, f"{hint}: names `edgekit {command}`, which does not exist"
    assert option in OPTIONS[command], f"{hint}: `{option}` is not an option of `edgekit {command}`: {hint.text!r}"


def test_models_fit_hint_leaves_out_force():
    # models/fit.py is not mapped to `models fit` above: the command asks require_fit to leave --force out
    assert "--force" not in OPTIONS["models fit"]
    res = run_cli("models", "fit", "chinese-alpaca-2-7b-64k:q2_k", "--board", "orin-nano-4gb")
    assert res.returncode == 5 and "hint: try " in res.stderr and "--force" not in res.stderr


@pytest.mark.parametrize("hint", [h for h in HINTS if mentions(h)[0]], ids=str)
def test_hint_names_existing_commands(hint):
    for command in mentions(hint)[0]:
        assert command in OPTIONS, f"{hint}: `edgekit {command}` is not a command: {hint.text!r}"


def _unit_cases():
    for hint in HINTS:
        if UNIT.search(hint.text) or "llama-server unit" in hint.text:
            reason = PENDING.get((hint.module, "unit"))
            yield pytest.param(hint, id=str(hint), marks=[pytest.mark.xfail(reason=reason, strict=True)] if reason
                               else [])


@pytest.mark.parametrize("hint", list(_unit_cases()))
def test_hint_names_the_installed_unit(hint):
    units = UNIT.findall(hint.text)
    assert units and all(u == UNIT_NAME for u in units), f"{hint}: the unit is {UNIT_NAME}: {hint.text!r}"


def test_the_parser_attributes_options_to_the_named_command():
    hint = Hint("chat/endpoint.py", 1, "run `edgekit provision {}` first, or pass --url http://HOST:PORT")
    assert mentions(hint) == (["provision"], [("--url", None)])
    hint = Hint("cli/chat.py", 1, "edgekit chat TARGET, or edgekit chat --url http://HOST:PORT")
    assert mentions(hint) == (["chat", "chat"], [("--url", "chat")])
    hint = Hint("cli/models.py", 1, "e.g. `edgekit models fit x --board orin-nano-4gb`")
    assert mentions(hint) == (["models fit"], [("--board", "models fit")])
    assert printers("remote/transport.py") and all("--identity" in OPTIONS[c] for c in printers("remote/x.py"))
    assert set(printers("cli/chat.py")) == {"ask", "chat", "modelfile"}
    assert printers("cli/chat.py", "_send") == ("ask", "chat") and printers("cli/chat.py", "modelfile") == ("modelfile",)
