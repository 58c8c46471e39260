"""Pure tests of the build: cmake command lines from facts (Jetson and stand-in), jobs, flags hash, stamps,
source identification, progress parsing, pruning. No device, no compiler: seconds."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import SourceInfo, flags_hash, jobs_for, parse_progress, plan_build
from edgekit.llamacpp.source import fetch_commands, find_root, pack_tree, resolve_source, tarball_source
from edgekit.facts.build import parse_installed, parse_stamp
from edgekit.llamacpp.stamp import describe, make_stamp, stamp_matches
from edgekit.llamacpp.current import prune_candidates, switch_commands
from edgekit.llamacpp.steps import linked_ggml
from edgekit.facts.deployed import DebPackages
from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.facts.cuda import CudaToolkit
from edgekit.facts.device import derive
from edgekit.facts.jetson import DeviceCompatible, DeviceModel, JetsonRelease
from tests.fixtures import captured as cap

NVCC_12_6 = "@@nvcc /usr/local/cuda-12.6/bin/nvcc\n" + cap.NVCC_VERSION_JP6_CUDA_12_6
SDIST = SourceInfo("tarball", S.LLAMA_CPP_VERSION, S.LLAMA_CPP_COMMIT, "832db069" * 8,
                   local=f"/x/{S.SDIST_FILE}", inner=S.SDIST_INNER)


def jetson_facts(nvcc: str | None = NVCC_12_6, mem_gb: float = 7.4, cpus: int = 6, free_gb: float = 40.0,
                 arch_override: str | None = None):
    """DeviceFacts of an Orin Nano 8GB on L4T R36.4.4 (JetPack 6), from captured raw outputs."""
    raw = {
        "hostname": "orin", "arch": "aarch64", "cpus": cpus, "systemd": True, "sudo": "nopasswd",
        "memory": {"total_bytes": int(mem_gb * 2**30), "available_bytes": int(mem_gb * 0.85 * 2**30),
                   "swap_total_bytes": 0, "swap_free_bytes": 0},
        "disk": {"path": "/opt/edgekit", "total_bytes": int(64 * 2**30), "free_bytes": int(free_gb * 2**30)},
        "l4t": JetsonRelease.parse(cap.NV_TEGRA_RELEASE_R36_4_4), "dt_model": DeviceModel.parse(cap.DT_MODEL_ORIN_NANO_JP5),
        "dt_compatible": DeviceCompatible.parse(cap.DT_COMPATIBLE_ORIN_NANO_JP5_AS_DISPLAYED.replace("nvidia,", "\0nvidia,")),
        "cuda": CudaToolkit.parse(nvcc) if nvcc else None,
    }
    return derive("orin", raw, arch_override)


def test_jetson_dry_run_commands_build_cuda_for_sm87_with_absolute_nvcc():
    facts = jetson_facts()
    plan = plan_build(facts, S.BuildSpec(source="/x/sdist.tar.gz"), SDIST)
    configure = plan.configure_command()
    assert "-DGGML_CUDA=ON" in configure
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in configure
    assert "-DCMAKE_CUDA_COMPILER=/usr/local/cuda-12.6/bin/nvcc" in configure
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in configure and "-DLLAMA_BUILD_TESTS=OFF" in configure
    assert configure.startswith(f"cmake -S {S.BUILD_ROOT}/{plan.id}/src -B {S.BUILD_ROOT}/{plan.id}/build -G Ninja")
    assert plan.build_command().endswith("--target llama-server llama-bench llama-cli -j 2")
    # 8 GB Orin Nano: 6.3 GiB available / 2.5 GiB per nvcc job -> 2 jobs, and a word about swap
    assert plan.jobs == 2 and "no swap" in plan.jobs_note
    assert plan.prefix == f"/opt/edgekit/llama.cpp/b11312-{plan.flags_hash}"
    assert plan.backend == "cuda" and plan.cuda_version == "12.6"


def test_cuda_arch_override_and_cuda_docker_arch(monkeypatch):
    plan = plan_build(jetson_facts(), S.BuildSpec(cuda_arch="compute_72"), SDIST)
    assert "-DCMAKE_CUDA_ARCHITECTURES=72" in plan.defines
    monkeypatch.setenv("CUDA_DOCKER_ARCH", "compute_87")
    facts = jetson_facts(arch_override=None)
    assert facts.gpu["source"] == "override"
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in plan_build(facts, S.BuildSpec(), SDIST).defines
    with pytest.raises(UsageError, match="CUDA architecture"):
        plan_build(jetson_facts(), S.BuildSpec(cuda_arch="ampere"), SDIST)


def test_no_cuda_refuses_unless_cpu():
    facts = jetson_facts(nvcc=None)
    with pytest.raises(UnsuitableDevice) as e:
        plan_build(facts, S.BuildSpec(), SDIST)
    assert e.value.exit_code == 5 and "--cpu" in e.value.hint and "L4T R36.4.4" in e.value.message
    plan = plan_build(facts, S.BuildSpec(cpu_only=True), SDIST)
    assert "-DGGML_CUDA=OFF" in plan.defines and not any("CUDA_ARCH" in d for d in plan.defines)
    assert plan.backend == "cpu" and plan.flags_summary().startswith("CPU-only, CPU ")


def test_cuda_without_known_arch_asks_for_cuda_arch():
    facts = derive("pc", {"arch": "x86_64", "cpus": 16, "l4t": None, "dt_model": None, "dt_compatible": [],
                          "memory": {"available_bytes": 100 * 2**30},
                          "cuda": CudaToolkit.parse(NVCC_12_6.replace("cuda-12.6", "cuda"))})
    with pytest.raises(UsageError, match="architecture") as e:
        plan_build(facts, S.BuildSpec(), SDIST)
    assert "--cuda-arch" in e.value.hint
    plan = plan_build(facts, S.BuildSpec(cuda_arch="90"), SDIST)
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in plan.defines and plan.jobs == 16


def test_disk_too_small_is_refused_with_hint():
    with pytest.raises(UnsuitableDevice, match="not enough disk") as e:
        plan_build(jetson_facts(free_gb=2.0), S.BuildSpec(), SDIST)
    assert "free space" in e.value.hint


def test_jobs_from_ram_and_cpus():
    assert jobs_for(jetson_facts(mem_gb=64, cpus=12), cuda=True)[0] == 12
    assert jobs_for(jetson_facts(mem_gb=7.4, cpus=6), cuda=False)[0] == 6
    assert jobs_for(jetson_facts(mem_gb=3.4, cpus=6), cuda=True)[0] == 1
    assert jobs_for(jetson_facts(), cuda=True, requested=1)[0] == 1
    with pytest.raises(UsageError):
        jobs_for(jetson_facts(), cuda=True, requested=0)


def test_flags_hash_changes_with_flags_not_with_nvcc_path():
    a = plan_build(jetson_facts(), S.BuildSpec(), SDIST)
    b = plan_build(jetson_facts(nvcc=NVCC_12_6.replace("cuda-12.6", "cuda")), S.BuildSpec(), SDIST)
    c = plan_build(jetson_facts(), S.BuildSpec(cuda_arch="72"), SDIST)
    d = plan_build(jetson_facts(), S.BuildSpec(cpu_only=True), SDIST)
    assert a.flags_hash == b.flags_hash
    assert len({a.flags_hash, c.flags_hash, d.flags_hash}) == 3
    assert flags_hash("b1", ["-DX=1", "-DY=2"], None) == flags_hash("b1", ["-DY=2", "-DX=1"], None)


def test_stamp_roundtrip_and_match():
    plan = plan_build(jetson_facts(), S.BuildSpec(), SDIST)
    stamp = make_stamp(plan, SDIST, 912.3, "2026-01-01T00:00:00+00:00", ["libggml-cuda"])
    text = json.dumps(stamp)
    assert stamp_matches(parse_stamp(text), plan)
    other = plan_build(jetson_facts(), S.BuildSpec(cpu_only=True), SDIST)
    assert not stamp_matches(parse_stamp(text), other)
    assert parse_stamp("{half") is None and parse_stamp('{"x": 1}') is None
    assert describe(stamp) == f"llama.cpp b11312 (CUDA sm_87, CPU armv8-a, flags {plan.flags_hash})"
    inst = parse_installed(f"@@current {plan.prefix}\n@@server yes\n@@stamp\n{text}")
    assert inst["current"] == plan.prefix and inst["server"] and inst["stamp"]["duration_s"] == 912.3
    assert parse_installed("@@current \n@@stamp\n") == {"current": None, "server": False, "stamp": None}


def test_ninja_progress_lines():
    assert parse_progress("[ 45/222] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o") == \
        (45, 222, "Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o")
    assert parse_progress("[222/222] Linking CXX executable bin/llama-server") == (222, 222,
                                                                                   "Linking CXX executable bin/llama-server")
    assert parse_progress("-- Configuring done (2.1s)") is None
    assert parse_progress("[ 12%] Building C object") is None


def _tar(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


LLAMA_FILES = ["CMakeLists.txt", "ggml/CMakeLists.txt", "include/llama.h", "tools/server/CMakeLists.txt"]


def test_find_root_in_archive_listings():
    names = [f"pkg-1/vendor/llama.cpp/{f}" for f in LLAMA_FILES] + ["pkg-1/setup.py", "pkg-1/CMakeLists.txt"]
    assert find_root(names) == "pkg-1/vendor/llama.cpp"
    assert find_root([f"./{f}" for f in LLAMA_FILES]) == ""
    assert find_root(["pkg/CMakeLists.txt", "pkg/include/llama.h"]) is None


def test_tarball_that_is_not_llama_cpp_is_refused(tmp_path):
    bad = _tar(tmp_path / "other.tar.gz", {"other-1.0/CMakeLists.txt": "project(other)", "other-1.0/README": ""})
    with pytest.raises(UsageError, match="does not contain llama.cpp") as e:
        resolve_source(S.BuildSpec(source=str(bad)))
    assert "--llama-src" in e.value.hint
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(UsageError, match="not a readable tarball"):
        resolve_source(S.BuildSpec(source=str(tmp_path / "junk.tar.gz")))
    with pytest.raises(UsageError, match="not found"):
        resolve_source(S.BuildSpec(source=str(tmp_path / "missing")))


def test_unknown_tarball_gets_a_content_version(tmp_path):
    good = _tar(tmp_path / "l.tar.gz", {f"llama.cpp-x/{f}": f for f in LLAMA_FILES})
    src = tarball_source(good)
    assert src.version.startswith("src-") and src.inner == "llama.cpp-x" and src.commit is None
    cmds = fetch_commands(src, "/opt/edgekit/build/i/src")
    assert "--strip-components=1" in cmds[1] and cmds[1].endswith("llama.cpp-x")
    assert "mv /opt/edgekit/build/i/src.partial /opt/edgekit/build/i/src" in cmds[2]


def test_sdist_is_recognised_as_the_pinned_version(llama_src):
    src = resolve_source(S.BuildSpec(source=str(llama_src)))
    assert (src.version, src.commit, src.inner) == (S.LLAMA_CPP_VERSION, S.LLAMA_CPP_COMMIT, S.SDIST_INNER)
    assert src.digest == S.SDIST_SHA256


def test_local_tree_is_validated_and_packed_reproducibly(tmp_path):
    tree = tmp_path / "llama.cpp"
    for f in LLAMA_FILES + ["docs/big.md", "src/llama.cpp"]:
        (tree / f).parent.mkdir(parents=True, exist_ok=True)
        (tree / f).write_text(f)
    src = resolve_source(S.BuildSpec(source=str(tree)))
    assert src.kind == "tarball" and src.inner == "llama.cpp" and src.version == f"src-{src.digest[:12]}"
    with tarfile.open(src.local) as tar:
        names = tar.getnames()
    assert "llama.cpp/src/llama.cpp" in names and not any("docs" in n for n in names)
    assert pack_tree(tree).name == f"{src.digest}.tar.gz"          # same tree, same bytes
    (tree / "include/llama.h").unlink()
    with pytest.raises(UsageError, match="not a llama.cpp source tree"):
        resolve_source(S.BuildSpec(source=str(tree)))


def test_git_source_default_is_the_pinned_tag():
    src = resolve_source(S.BuildSpec())
    assert (src.kind, src.version, src.commit) == ("git", "b11312", S.LLAMA_CPP_COMMIT)
    cmds = fetch_commands(src, "/opt/edgekit/build/b11312-x/src")
    assert "git clone --quiet --depth 1 --branch b11312 https://github.com/ggml-org/llama.cpp" in cmds[1]
    with pytest.raises(UsageError):
        resolve_source(S.BuildSpec(version="b1; rm -rf /"))


def test_installed_packages_from_dpkg_query():
    out = "build-essential install ok installed\ncmake deinstall ok config-files\ngit install ok installed\n"
    assert DebPackages.parse(out) == {"build-essential", "git"}
    assert DebPackages.parse("@@edgekit-missing\n") is None          # no dpkg at all


def test_linked_ggml_from_ldd():
    ldd = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibllama.so => /opt/edgekit/llama.cpp/b1-x/bin/../lib/libllama.so (0x7f)
\tlibggml.so => /opt/edgekit/llama.cpp/b1-x/bin/../lib/libggml.so (0x7f)
\tlibggml-base.so => /opt/edgekit/llama.cpp/b1-x/bin/../lib/libggml-base.so (0x7f)
\tlibggml-cuda.so => not found
\tlibcudart.so.12 => /usr/local/cuda/lib64/libcudart.so.12 (0x7f)
"""
    assert linked_ggml(ldd) == ["libggml", "libggml-base", "libggml-cuda (not found)", "libllama"]


def test_prune_keeps_current_previous_and_newest():
    listing = "\n".join(["500.0 b3-c", "400.0 b2-b", "300.0 b1-a", "200.0 b0-z", "100.0 bX-old",
                         "@@current /opt/edgekit/llama.cpp/b0-z", "@@previous /opt/edgekit/llama.cpp/bX-old"])
    assert prune_candidates(listing, keep=3) == ["b2-b", "b1-a"]
    assert prune_candidates(listing, keep=10) == []
    assert prune_candidates("@@current \n@@previous \n", keep=1) == []


def test_switch_is_atomic_and_records_previous():
    cmds = switch_commands("/opt/edgekit/llama.cpp/b2-x", "/opt/edgekit/llama.cpp/b1-y")
    assert cmds[0].endswith("mv -T /opt/edgekit/llama.cpp/previous.edgekit-tmp /opt/edgekit/llama.cpp/previous")
    assert cmds[1] == ("ln -sfn /opt/edgekit/llama.cpp/b2-x /opt/edgekit/llama.cpp/current.edgekit-tmp && "
                       "mv -T /opt/edgekit/llama.cpp/current.edgekit-tmp /opt/edgekit/llama.cpp/current")
    assert len(switch_commands("/p", None)) == 1


def test_cli_refuses_a_source_that_is_not_llama_cpp(tmp_path):
    from tests.conftest import run_cli_inprocess as run_cli

    bad = _tar(tmp_path / "not-llama.tar.gz", {"x/CMakeLists.txt": "project(x)"})
    res = run_cli("build", "local", "--cpu", "--dry-run", "--llama-src", str(bad))
    assert res.returncode == 2, res.stderr
    assert "does not contain llama.cpp" in res.stderr and "--llama-src" in res.stderr
