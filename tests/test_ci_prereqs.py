"""Under CI nothing is skipped: a missing prerequisite fails the run naming it (tests/prereqs.py).

pytest runs in a subprocess with a PATH that lacks one tool (links to every other tool the prerequisites name), so
the check is the real one on this machine; collection alone shows it, nothing boots.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prereqs import E2E_NEEDS, PREREQUISITES, in_ci, missing

ROOT = Path(__file__).resolve().parent.parent
CHAT_E2E = "tests/test_chat_e2e.py"


def _path_without(tmp_path: Path, tool: str) -> str:
    """A PATH holding every tool the prerequisites name that this machine has, except `tool`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in [*PREREQUISITES, "mount"]:
        found = shutil.which(name)
        if found and name != tool:
            (bin_dir / name).symlink_to(found)
    return str(bin_dir)


def _pytest(*args: str, ci: str | None, path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(ROOT)
    if ci is not None:
        env["CI"] = ci
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_ci_is_true_or_1(monkeypatch):
    for value, expected in (("1", True), ("true", True), ("", False), ("0", False), ("false", False)):
        monkeypatch.setenv("CI", value)
        assert in_ci() is expected


def test_ci_fails_at_collection_naming_the_missing_tool(tmp_path):
    r = _pytest("-m", "e2e", "--collect-only", "-q", CHAT_E2E, ci="1", path=_path_without(tmp_path, "tmux"))
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    named = set(re.findall(r"CI cannot run \d+ selected tests: (\S+) is missing", r.stderr))
    # tmux, and whatever else this machine lacks for e2e tests (root, systemd-nspawn, ...), nothing more
    host_lacks = {n for n in E2E_NEEDS if missing(n)}
    assert named == {"tmux"} | host_lacks, r.stderr
    assert "tmux is missing (apt-get install tmux), needed by tests/test_chat_e2e.py::" in r.stderr


def test_outside_ci_the_same_test_is_skipped_naming_the_tool_without_booting_anything(tmp_path):
    r = _pytest("-m", "e2e", "-rs", CHAT_E2E, "-k", "real_terminal", ci=None, path=_path_without(tmp_path, "tmux"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout and "tmux is missing (apt-get install tmux)" in r.stdout


@pytest.mark.needs(*E2E_NEEDS)     # its e2e test runs
def test_ci_turns_any_other_skip_into_a_failure_and_counts_e2e_tests(tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "from tests.prereqs import unavailable\n\n"
        "def test_plain_skip():\n    pytest.skip('no reason that counts')\n\n"
        "@pytest.mark.skipif(True, reason='a skipif')\ndef test_skipif():\n    pass\n\n"
        "def test_runtime_check():\n    unavailable('a gadget', 'not plugged in')\n\n"
        "@pytest.mark.e2e\ndef test_e2e_one():\n    pass\n")
    args = ("-p", "tests.prereqs", "-rA", str(tmp_path / "test_some.py"))
    r = _pytest(*args, ci="1")
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, r.stdout + r.stderr
    assert "CI cannot skip a test: Skipped: no reason that counts" in r.stdout
    assert "CI cannot skip a test: Skipped: a skipif" in r.stdout
    assert "CI cannot run this test: a gadget is not available: not plugged in" in r.stdout
    assert re.search(r"\b2 failed, 1 passed, .*1 error\b", r.stdout), r.stdout     # the skipif fails in setup
    assert "e2e tests that ran: 1 of 1 selected (1 passed, 0 failed)" in r.stdout

    outside = _pytest(*args, ci=None)
    assert outside.returncode == 0 and re.search(r"\b1 passed, 3 skipped\b", outside.stdout), outside.stdout
