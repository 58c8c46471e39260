"""The one check of what a test needs from this machine (a pytest plugin, loaded by conftest).

A test states what it needs with `@pytest.mark.needs("tmux", ...)`, or by using a fixture listed in
FIXTURE_NEEDS; every e2e test needs E2E_NEEDS. What is missing is found at collection, before anything boots:
outside CI the test is skipped with the missing prerequisite and how to install it; under CI (CI=true or CI=1,
`.ci/run` sets it) the run stops there with one line per missing prerequisite, naming it. What can only be found
while a test runs goes through `unavailable(name, detail)`: a skip outside CI, a failure under CI. Any other skip
under CI (a plain pytest.skip, a skipif) is turned into a failure too: under CI nothing is skipped.

Opt-in tests (OPT_IN: marker -> the variable that opts in) are deselected unless opted in, not skipped.
The run ends with a line counting the e2e tests that ran.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from typing import Callable

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Prerequisite:
    present: Callable[[], bool]
    install: str          # how to get it, in the words a person would type


def _tool(name: str) -> Callable[[], bool]:
    return lambda: shutil.which(name) is not None


def _module(name: str) -> Callable[[], bool]:
    return lambda: importlib.util.find_spec(name) is not None


def _root() -> bool:
    return os.geteuid() == 0


PREREQUISITES: dict[str, Prerequisite] = {
    "root": Prerequisite(_root, "run the tests as root (.ci/run does)"),
    "systemd-nspawn": Prerequisite(_tool("systemd-nspawn"), "apt-get install systemd-container"),
    "debootstrap": Prerequisite(_tool("debootstrap"), "apt-get install debootstrap"),
    "zstd": Prerequisite(_tool("zstd"), "apt-get install zstd"),
    "nginx": Prerequisite(_tool("nginx"), "apt-get install nginx-light"),
    "tmux": Prerequisite(_tool("tmux"), "apt-get install tmux"),
    "openssl": Prerequisite(_tool("openssl"), "apt-get install openssl"),
    "tmpfs": Prerequisite(lambda: _root() and shutil.which("mount") is not None,
                          "mounting a small tmpfs needs root and mount (util-linux)"),
    "promtool": Prerequisite(_tool("promtool"), "apt-get install prometheus"),
    "prometheus": Prerequisite(_tool("prometheus"), "apt-get install prometheus"),
    "systemd-analyze": Prerequisite(_tool("systemd-analyze"), "apt-get install systemd"),
    "systemd-id128": Prerequisite(lambda: shutil.which("systemd-id128") is not None
                                  and os.path.isfile("/etc/machine-id"), "apt-get install systemd"),
    "tar": Prerequisite(_tool("tar"), "apt-get install tar"),
    "git": Prerequisite(_tool("git"), "apt-get install git"),
    "ssh-keygen": Prerequisite(_tool("ssh-keygen"), "apt-get install openssh-client"),
    "matplotlib": Prerequisite(_module("matplotlib"), "pip install -e '.[test]'"),
    "gguf": Prerequisite(_module("gguf"), "pip install -e '.[test]'"),
    "qemu-user-static": Prerequisite(lambda: os.path.isfile("/usr/lib/binfmt.d/qemu-aarch64.conf"),
                                     "apt-get install qemu-user-static (aarch64 stand-ins run under it)"),
    "aarch64-cross": Prerequisite(lambda: shutil.which("aarch64-linux-gnu-g++") is not None
                                  and os.path.isfile("/usr/lib/aarch64-linux-gnu/libssl.so"),
                                  "dpkg --add-architecture arm64 && apt-get update && apt-get install "
                                  "crossbuild-essential-arm64 libssl-dev:arm64"),
    "openai": Prerequisite(_module("openai"), "pip install -e '.[test]'"),
    "chromium": Prerequisite(_tool("chromium"), "apt-get install chromium"),
    "sched_setaffinity": Prerequisite(lambda: hasattr(os, "sched_getaffinity"), "a Linux host"),
    # tests of what edgekit does where Jetson tools are absent: a Jetson cannot run them
    "not-a-jetson": Prerequisite(lambda: not shutil.which("tegrastats") and not os.path.exists("/etc/nvpmodel.conf")
                                 and not os.path.exists("/run/jtop.sock"), "a machine that is not a Jetson"),
}

E2E_NEEDS = ("root", "systemd-nspawn", "debootstrap", "zstd")

# fixtures that need something of this machine: a test using one (directly or through another fixture) needs it
FIXTURE_NEEDS: dict[str, tuple[str, ...]] = {
    "model_server": ("nginx",),
    "tmux": ("tmux",),
    "tls_cert": ("openssl",),
    "small_disk": ("tmpfs",),
    "prometheus": ("prometheus",),
}

OPT_IN: dict[str, str] = {"cuda": "EDGEKIT_CUDA_TESTS"}


def missing(name: str) -> bool:
    return not PREREQUISITES[name].present()


def describe(name: str) -> str:
    return f"{name} is missing ({PREREQUISITES[name].install})"


def needs_of(item: pytest.Item) -> list[str]:
    names: list[str] = []
    if item.get_closest_marker("e2e"):
        names += E2E_NEEDS
    for mark in item.iter_markers("needs"):
        names += mark.args
    for fixture in getattr(item, "fixturenames", ()):
        names += FIXTURE_NEEDS.get(fixture, ())
    unknown = [n for n in names if n not in PREREQUISITES]
    if unknown:
        raise pytest.UsageError(f"{item.nodeid} needs {unknown}: declare them in tests/prereqs.py PREREQUISITES")
    return list(dict.fromkeys(names))


def unavailable(name: str, detail: str) -> None:
    """What a test needs turned out to be missing while it ran: skip it outside CI, fail it under CI."""
    message = f"{name} is not available: {detail}"
    if in_ci():
        pytest.fail(f"CI cannot run this test: {message}", pytrace=False)
    pytest.skip(message)


def require(name: str) -> None:
    """Check one prerequisite while a test runs (for what collection cannot see)."""
    if missing(name):
        unavailable(name, PREREQUISITES[name].install)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*names): prerequisites of this machine (tests/prereqs.py)")
    config._edgekit_e2e = {"selected": 0, "ran": 0, "passed": 0, "failed": 0, "xfailed": 0}


def pytest_collection_modifyitems(config, items):
    kept, deselected = [], []
    for item in items:
        opt_out = [m for m, var in OPT_IN.items() if item.get_closest_marker(m) and os.environ.get(var) != "1"]
        (deselected if opt_out else kept).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def pytest_collection_finish(session):
    """After -m/-k selection: skip (outside CI) or refuse the run (under CI) for what this machine lacks."""
    absent: dict[str, list[str]] = {}
    for item in session.items:
        gone = [n for n in needs_of(item) if missing(n)]
        for name in gone:
            absent.setdefault(name, []).append(item.nodeid)
        if gone and not in_ci():
            item.add_marker(pytest.mark.skip(reason="; ".join(describe(n) for n in gone)))
    if absent and in_ci():
        lines = [f"CI cannot run {len(ids)} selected tests: {describe(name)}, needed by {ids[0]}"
                 + (f" and {len(ids) - 1} more" if len(ids) > 1 else "") for name, ids in absent.items()]
        raise pytest.UsageError("\n".join(lines) + "\n.ci/setup installs what CI needs")
    session.config._edgekit_e2e["selected"] = sum(1 for item in session.items if item.get_closest_marker("e2e"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        # a skip that did not go through this module (pytest.skip, skipif): under CI it is a failure
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI cannot skip a test: {reason}"
    if item.get_closest_marker("e2e") and report.when == "call":
        stats = item.config._edgekit_e2e
        stats["ran"] += 1
        stats["xfailed" if hasattr(report, "wasxfail") else "passed" if report.passed else "failed"] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = config._edgekit_e2e
    if stats["selected"] and not config.option.collectonly:
        terminalreporter.write_line(f"e2e tests that ran: {stats['ran']} of {stats['selected']} selected "
                                    f"({stats['passed']} passed, {stats['failed']} failed"
                                    + (f", {stats['xfailed']} expected failures" if stats.get("xfailed") else "") + ")")
