"""Opt-in (EDGEKIT_CUDA_TESTS=1): configure llama.cpp with edgekit's own CUDA flags for sm_87 using the real
nvcc on this machine (/usr/local/cuda, 13.0 here) and compile a few ggml-cuda `.cu` files.

Slow (minutes even for a few files on 2 cores; a full sm_87 ggml-cuda build takes ~50 min) so never in CI.
Needs cuBLAS headers/libs, e.g. `pip install nvidia-cublas` (the wheel matching the toolkit's major version).
Without a GPU driver, -DGGML_CUDA_NO_VMM=ON keeps libcuda out of the link.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.prereqs import unavailable

from edgekit.llamacpp.cmake import plan_build
from edgekit.llamacpp.source import resolve_source
from edgekit.llamacpp.spec import BuildSpec
from edgekit.facts.device import read_facts
from edgekit.remote.target import Target
from edgekit.remote.transport import Transport

pytestmark = pytest.mark.cuda      # slow CUDA compile: deselected unless EDGEKIT_CUDA_TESTS=1 (tests/prereqs.py)

NVCC = "/usr/local/cuda/bin/nvcc"
SOME_CU = ("acc.cu", "arange.cu", "clamp.cu")


def _cublas() -> Path:
    """cuBLAS from the nvidia-cublas wheel: nvidia/cublas/ (CUDA 12 wheels) or nvidia/cu13/ (CUDA 13 wheels)."""
    for module in ("nvidia.cu13", "nvidia.cublas"):
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            continue
        if spec is not None and spec.submodule_search_locations:
            root = Path(list(spec.submodule_search_locations)[0])
            if list((root / "lib").glob("libcublas.so*")):
                return root
    unavailable("cuBLAS", "pip install nvidia-cublas (the wheel for this CUDA major version)")


def fatbin_entries(obj: Path, scratch: Path) -> list[tuple[int, int]]:
    """(kind, sm) of each entry in an object's .nv_fatbin (kind 1 = PTX, 2 = ELF cubin). Read directly, since this
    toolkit ships no cuobjdump: fatbin header (magic 0xBA55ED50, u16 version, u16 header size, u64 size), then
    entries of (u16 kind, u16 version, u32 header size, u64 padded payload size, ..., u32 sm at offset 28)."""
    import struct

    subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", str(obj), str(scratch)], check=True)
    blob = scratch.read_bytes()
    magic, _, header, size = struct.unpack_from("<IHHQ", blob, 0)
    assert magic == 0xBA55ED50, hex(magic)
    out, off = [], header
    while off < header + size:
        kind, _, entry_header, padded = struct.unpack_from("<HHIQ", blob, off)
        out.append((kind, struct.unpack_from("<I", blob, off + 28)[0]))
        off += entry_header + padded
    return out


def test_configure_cuda_87_and_compile_some_cu_files(tmp_path, llama_src):
    if not os.access(NVCC, os.X_OK):
        unavailable("nvcc", f"no {NVCC}")
    arches = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
    assert "compute_87" in arches.split()

    cublas = _cublas()
    libs = {p.name.split(".so")[0]: p for p in (cublas / "lib").glob("libcublas*.so*")}
    source = resolve_source(BuildSpec(source=str(llama_src)))
    with tarfile.open(llama_src) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(source.inner + "/")
                   and f"{source.inner}/models/" not in m.name and f"{source.inner}/docs/" not in m.name]
        tar.extractall(tmp_path, members=members, filter="data")
    src, build = tmp_path / source.inner, tmp_path / "build"

    with Transport(Target("local")) as t:
        facts = read_facts(t)
    assert facts.cuda and facts.cuda["nvcc"].endswith("/bin/nvcc")
    inc = cublas / "include"
    spec = BuildSpec(source=str(llama_src), cuda_arch="87", jobs=2, extra_flags=(
        "-DGGML_CUDA_NO_VMM=ON", f"-DCUDA_cublas_LIBRARY={libs['libcublas']}",
        f"-DCUDA_cublasLt_LIBRARY={libs['libcublasLt']}", f"-DCMAKE_CUDA_FLAGS=-I{inc}", f"-DCMAKE_CXX_FLAGS=-I{inc}"))
    plan = plan_build(facts, spec, source)
    assert "-DGGML_CUDA=ON" in plan.defines and "-DCMAKE_CUDA_ARCHITECTURES=87" in plan.defines
    assert f"-DCMAKE_CUDA_COMPILER={facts.cuda['nvcc']}" in plan.defines

    conf = subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", *plan.defines],
                          capture_output=True, text=True, env={**os.environ, **plan.env})
    assert conf.returncode == 0, conf.stdout[-3000:] + conf.stderr[-3000:]
    assert "CUDA" in conf.stdout

    ninja = (build / "build.ninja").read_text()
    objects = [line.split(":")[0].removeprefix("build ").strip() for line in ninja.splitlines()
               if line.startswith("build ") and any(f"/{cu}.o:" in line for cu in SOME_CU)]
    assert len(objects) == len(SOME_CU), objects
    done = subprocess.run(["ninja", "-C", str(build), "-j", "2", *objects], capture_output=True, text=True,
                          env={**os.environ, **plan.env}, timeout=3 * 3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for obj in objects:
        path = build / obj
        assert path.stat().st_size > 10_000
        entries = fatbin_entries(path, tmp_path / "fatbin.bin")
        assert (2, 87) in entries, entries        # a cubin (ELF) for sm_87, not only PTX
