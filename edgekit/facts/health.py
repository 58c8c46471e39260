"""Facts `edgekit doctor` reads besides every device fact (edgekit.facts.device.ALL_FACTS): the device's clock, the
installed build (its stamp and what its llama-server links), and the CUDA a login shell finds. Read-only."""

from __future__ import annotations

import json
import re

from edgekit import layout
from edgekit.facts.base import Fact
from edgekit.remote.command import q


class DeviceClock(Fact):
    """The device's clock, seconds since the epoch (`date +%s.%N`); None when unreadable."""

    name = "device_clock"
    command = "date +%s.%N"

    @staticmethod
    def parse(output: str) -> float | None:
        try:
            return float(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None


_LDD = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)", re.M)
_CUDA_DIR = re.compile(r"/cuda-(\d+\.\d+)/")
_CUDART = re.compile(r"libcudart\.so\.(\d+(?:\.\d+)?)")


def cuda_version_of(path: str | None) -> str | None:
    """Pure: the CUDA version a library path names: /usr/local/cuda-12.6/... -> '12.6', libcudart.so.12.2.140 ->
    '12.2', libcudart.so.12 -> '12'; None when it names none."""
    if not path:
        return None
    m = _CUDA_DIR.search(path)
    if m:
        return m[1]
    m = _CUDART.search(path)
    return ".".join(m[1].split(".")[:2]) if m else None


class InstalledServer(Fact):
    """The build `current` points to: its stamp, and the libraries its llama-server resolves (ldd, with the
    service's library path): {'stamp': dict | None, 'ggml': [names], 'cudart': resolved path | None,
    'cudart_version': '12.6' | None}. None when no build is installed."""

    name = "installed_server"
    command = (f"[ -x {q(layout.CURRENT)}/bin/llama-server ] || exit 0; cat {q(layout.CURRENT)}/{layout.STAMP_NAME}; "
               f"echo; echo @@ldd; ldd {q(layout.CURRENT)}/bin/llama-server")

    @staticmethod
    def parse(output: str) -> dict | None:
        if "@@ldd" not in output:
            return None
        stamp_text, _, ldd = output.partition("@@ldd")
        try:
            stamp = json.loads(stamp_text)
        except (ValueError, RecursionError):
            stamp = None
        libs = {name: path for name, path in _LDD.findall(ldd)}
        cudart = next((path for name, path in libs.items() if name.startswith("libcudart.so")), None)
        if cudart is not None and not cudart.startswith("/"):
            cudart = None                         # "not found"
        # a real realpath names the full version (libcudart.so.12.6.68); the soname alone only the major
        return {"stamp": stamp if isinstance(stamp, dict) else None,
                "ggml": sorted(name.split(".so")[0] for name in libs if name.startswith("libggml")),
                "cudart": cudart, "cudart_version": cuda_version_of(cudart)}


class LoginShellCuda(Fact):
    """What a login shell on the device finds: the nvcc on PATH (its release) and LD_LIBRARY_PATH's CUDA folders:
    {'nvcc': path | None, 'nvcc_version': '11.4' | None, 'ld_library_path': [CUDA folders]}. A ~/.bashrc left from
    another JetPack puts another toolkit first here, and builds and tools run by hand pick it up."""

    name = "login_shell_cuda"
    command = ("bash -lc 'echo \"ld=$LD_LIBRARY_PATH\"; n=$(command -v nvcc) && { echo \"nvcc=$n\"; \"$n\" --version; }' "
               "</dev/null")

    @staticmethod
    def parse(output: str) -> dict:
        nvcc = re.search(r"^nvcc=(\S+)", output, re.M)
        release = re.search(r"release (\d+\.\d+)", output)
        ld = re.search(r"^ld=(.*)$", output, re.M)
        folders = [p for p in (ld[1].split(":") if ld else []) if "cuda" in p]
        return {"nvcc": nvcc[1] if nvcc else None, "nvcc_version": release[1] if (nvcc and release) else None,
                "ld_library_path": folders}


DOCTOR_FACTS = [DeviceClock, InstalledServer, LoginShellCuda]
