"""What to build: the pinned llama.cpp version (the ONE place it is recorded), device paths, and BuildSpec."""

from __future__ import annotations

from dataclasses import dataclass

# The pinned llama.cpp release. b11312 is commit 0c1e570, the one the llama-cpp-python sdist below vendors, so
# the default git clone and the sdist the tests and `sandbox demo` push build the same code.
LLAMA_CPP_VERSION = "b11312"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
LLAMA_CPP_REPO = "https://github.com/ggml-org/llama.cpp"

# The llama-cpp-python sdist pinned by sha256 (PyPI): llama.cpp's source for `sandbox demo`, the tests and the
# benchmarks (the ONE place; shell scripts read it with `python3 -c`).
SDIST_PACKAGE = "llama-cpp-python"
SDIST_VERSION = "0.3.36"
SDIST_FILE = f"llama_cpp_python-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_INNER = f"llama_cpp_python-{SDIST_VERSION}/vendor/llama.cpp"

# Source archives edgekit recognises without a .git: sha256 -> (version, commit, path of llama.cpp inside).
KNOWN_SOURCES = {SDIST_SHA256: (LLAMA_CPP_VERSION, LLAMA_CPP_COMMIT, SDIST_INNER)}
# llama-cpp-python sdists by version, for trees unpacked from one (no sha256 of a tree to match).
SDIST_VENDORED = {SDIST_VERSION: (LLAMA_CPP_VERSION, LLAMA_CPP_COMMIT)}

TARGETS = ("llama-server", "llama-bench", "llama-cli")

# Device layout: edgekit/layout.py (re-exported here for the build modules).
from edgekit.layout import (BUILD_ROOT, CCACHE_DIR, CURRENT, INSTALL_ROOT, LOG_DIR, PACK_DIR,  # noqa: E402,F401
                            SOURCE_CACHE, STAMP_NAME)

BUILD_DEPS = ("build-essential", "cmake", "ninja-build", "git", "ccache", "libssl-dev", "curl")  # curl: the gate
# apt without its default patience: a device that cannot reach its mirror fails in seconds, not 10 minutes.
APT_OPTS = "-o Acquire::Retries=0 -o Acquire::http::Timeout=15 -o Acquire::https::Timeout=15"

# Memory per parallel compile job: plain C++ vs nvcc on ggml-cuda's template-heavy files (an 8 GB Orin Nano
# OOMs at high -j with CUDA).
GIB = 2**30
PER_JOB_CPP = int(1.0 * GIB)
PER_JOB_CUDA = int(2.5 * GIB)
# Free disk needed for source + build tree + install.
DISK_NEED_CPU = 3 * GIB
DISK_NEED_CUDA = 8 * GIB


@dataclass(frozen=True)
class BuildSpec:
    """Desired llama.cpp build. `source`: None (git clone of `version`), a local tree/tarball path, or a URL."""

    version: str = LLAMA_CPP_VERSION
    source: str | None = None
    cpu_only: bool = False
    cuda_arch: str | None = None      # override: 87, compute_87, sm_87, 8.7 (also CUDA_DOCKER_ARCH)
    jobs: int | None = None           # None: from CPUs and available RAM
    keep: int = 3                     # installed builds kept (current and previous always kept)
    repo: str = LLAMA_CPP_REPO        # for the default git clone
    extra_flags: tuple[str, ...] = () # more -DNAME=VALUE for cmake (part of the flags hash)
    install_deps: bool = True         # apt-get install missing build tools (False: report them, install nothing)
    cpu_level: str | None = None      # CPU instruction level (edgekit.facts.isa); None: the best that passes the gate
