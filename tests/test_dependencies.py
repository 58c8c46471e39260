"""What edgekit imports, a plain install brings: every third-party module imported under edgekit/ belongs to a
distribution pyproject.toml declares (or one a declared one requires), or to a named optional extra."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# imported inside a guard, where a missing one is a reported fact rather than a crash
OPTIONAL_ON_PURPOSE = {
    "jtop": "jetson-stats on the device: telemetry says `sudo pip3 install -U jetson-stats` when absent",
}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _third_party_imports() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((ROOT / "edgekit").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in (n.split(".")[0] for n in names):
                if top not in sys.stdlib_module_names and top != "edgekit":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = _closure({_name(r) for r in project["dependencies"]})
    extras = {_name(r): extra for extra, reqs in project["optional-dependencies"].items() if extra != "test"
              for r in reqs}
    distributions = md.packages_distributions()
    imports = _third_party_imports()
    assert "yaml" in imports                         # the YAML inventory reader
    undeclared = {}
    for module, where in imports.items():
        if module in OPTIONAL_ON_PURPOSE:
            continue
        dists = {_name(d) for d in distributions.get(module, [module])}
        if not dists & (required | set(extras)):
            undeclared[module] = where
    assert undeclared == {}, f"imported but not a dependency (add it to pyproject.toml): {undeclared}"

