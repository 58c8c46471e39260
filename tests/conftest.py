"""Shared test fixtures: an isolated EDGEKIT_HOME per test, and stand-in devices (real systemd + sshd).

Stand-ins are session-scoped and shared: `standin_factory(name, jetson=None)` boots one once per session.
End-to-end tests are marked `e2e`; what they and other tests need of this machine is checked in one place,
tests/prereqs.py: outside CI a test whose prerequisite is missing is skipped naming it; under CI (CI=1) the run fails.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.llamacpp import spec

# tests/prereqs.py: what tests need of this machine (skip outside CI, fail under CI); tests/modelserver.py: Hub-like
# nginx `model_server`; tests/served.py: `served_standin`
pytest_plugins = ["prereqs", "modelserver", "served"]

LLAMA_SDIST = spec.SDIST_FILE               # the pin lives in edgekit/llamacpp/spec.py
LLAMA_SDIST_SHA256 = spec.SDIST_SHA256
TEST_CACHE = Path(os.environ.get("EDGEKIT_TEST_CACHE", "/var/cache/edgekit/test"))


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("edgekit-session")
    (path / "ssh_config").write_text("")
    return path


@pytest.fixture(autouse=True)
def edgekit_home(tmp_path, monkeypatch, session_dir) -> Path:
    """Every test gets its own EDGEKIT_HOME and never reads the developer's ~/.ssh/config."""
    home = tmp_path / "edgekit-home"
    home.mkdir()
    monkeypatch.setenv("EDGEKIT_HOME", str(home))
    monkeypatch.setenv("EDGEKIT_SSH_CONFIG", str(session_dir / "ssh_config"))
    for var in ("EDGEKIT_BECOME_PASS", "CUDA_DOCKER_ARCH", "HF_ENDPOINT", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def standin_factory(session_dir):
    """Boot stand-ins on demand (one per name per session); all are taken down at the end of the session."""
    from edgekit.sandbox import rootfs, standin

    made: dict[str, object] = {}

    def get(name: str, jetson: str | None = None, suite: str = rootfs.SUITE, arch: str | None = None):
        """`arch`: Debian's architecture name (None: this machine's; arm64 boots under qemu-user emulation)."""
        key = f"{name}:{jetson}:{suite}:{arch}"
        if key not in made:
            sb = standin.up(name, jetson, suite=suite, arch=arch)
            made[key] = sb
            with open(session_dir / "ssh_config", "a") as fh:
                fh.write(sb.ssh_config.read_text() + "\n")
        return made[key]

    yield get
    for sb in made.values():
        standin.down(sb.name)


@pytest.fixture(scope="session")
def standin(standin_factory):
    """One plain (non-Jetson) stand-in shared by the session: host alias `t-plain`, user `jetson`."""
    return standin_factory("t-plain")


@pytest.fixture(scope="session")
def llama_src() -> Path:
    """The llama-cpp-python sdist (vendors llama.cpp 0c1e570), fetched from PyPI once and checked by sha256."""
    dest = TEST_CACHE / "src"
    path = dest / LLAMA_SDIST
    if not path.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                        f"{spec.SDIST_PACKAGE}=={spec.SDIST_VERSION}", "-d", str(dest)], check=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == LLAMA_SDIST_SHA256, f"{path} has sha256 {digest}, expected {LLAMA_SDIST_SHA256}"
    return path


def run_cli_inprocess(*args: str) -> subprocess.CompletedProcess:
    """The real entry point (`edgekit.cli.main`, its error funnel and exit codes) in this process: for tests that
    only parse and validate (no device), 10x faster than a subprocess. stdout/stderr as a user sees them."""
    import contextlib
    import io

    from edgekit.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(["edgekit", *args], code, out.getvalue(), err.getvalue())


def run_cli(*args: str, input: str | None = None, env: dict | None = None, timeout: float = 600):
    """Run the real `edgekit` entry point in a subprocess (exit codes and stderr exactly as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, input=input,
                          env={**os.environ, **(env or {})}, timeout=timeout)
