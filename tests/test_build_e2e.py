"""`edgekit build` for real on a stand-in Jetson (no CUDA): refuse without --cpu, CPU build from the pushed
llama-cpp-python sdist (warm: the shared ccache already holds the one cold build), no-op rerun, a flag change
that reuses ccache and keeps the previous build, a failing build that leaves `current` serving, a bad tag."""

from __future__ import annotations

import json
import time

import pytest

from tests.prereqs import unavailable

from edgekit.remote.target import parse_target
from edgekit.remote.transport import Transport
from tests.conftest import run_cli
from tests.fixtures import captured as cap

pytestmark = [pytest.mark.e2e, pytest.mark.build]

ROOT = "/opt/edgekit/llama.cpp"


@pytest.fixture(scope="module")
def dev(standin_factory):
    sb = standin_factory("t-build", jetson="orin-nano-8gb")
    with Transport(parse_target(sb.name)) as t:
        yield sb, t


def current(t: Transport) -> str:
    return t.run(f"readlink {ROOT}/current", check=False).stdout.strip()


def test_refuses_without_cuda_unless_cpu(dev, llama_src):
    sb, _ = dev
    res = run_cli("build", sb.name, "--llama-src", str(llama_src), "--dry-run")
    assert res.returncode == 5, res.stderr
    assert "no CUDA toolkit" in res.stderr and "--cpu" in res.stderr and "L4T R36" in res.stderr


def test_cpu_build_noop_flag_change_and_failure(dev, llama_src):
    sb, t = dev
    t.sudo("rm -rf /opt/edgekit/llama.cpp /opt/edgekit/build", check=False)
    stats0 = t.run("CCACHE_DIR=/var/cache/edgekit/ccache ccache --print-stats", check=False).stdout

    start = time.monotonic()
    res = run_cli("build", sb.name, "--cpu", "--llama-src", str(llama_src), "--json", timeout=3600)
    warm_s = time.monotonic() - start
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    stamp, prefix = out["stamp"], out["prefix"]
    assert stamp["version"] == "b11312" and stamp["backend"] == "cpu" and stamp["commit"].startswith("0c1e570")
    assert prefix == f"{ROOT}/b11312-{stamp['flags_hash']}" and current(t) == prefix
    assert {"libggml-base", "libggml-cpu", "libllama"} <= set(stamp["libggml"])
    version = t.run(f"{ROOT}/current/bin/llama-server --version 2>&1").stdout
    assert "build 11312, commit 0c1e570" in version
    for tool in ("llama-bench", "llama-cli"):
        assert t.run(f"test -x {ROOT}/current/bin/{tool}", check=False).ok
    stats1 = t.run("CCACHE_DIR=/var/cache/edgekit/ccache ccache --print-stats", check=False).stdout
    hits = _stat(stats1, "direct_cache_hit") + _stat(stats1, "preprocessed_cache_hit") \
        - _stat(stats0, "direct_cache_hit") - _stat(stats0, "preprocessed_cache_hit")
    misses = _stat(stats1, "cache_miss") - _stat(stats0, "cache_miss")
    print(f"\nwarm build on {sb.name}: {warm_s:.0f}s, ccache hits {hits}, misses {misses}")
    assert hits > 50 and misses < hits / 4, (hits, misses)

    start = time.monotonic()
    again = run_cli("build", sb.name, "--cpu", "--llama-src", str(llama_src), "--json")
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - start < 20
    steps = json.loads(again.stdout)["steps"]
    assert all(s["status"] == "ok" for s in steps), steps
    assert "already built at " + prefix in steps[-1]["message"]

    # a flag change: a separate build beside the first, compiled mostly from ccache; the first is kept
    changed = run_cli("build", sb.name, "--cpu", "--llama-src", str(llama_src), "--cmake-flag",
                      "-DLLAMA_OPENSSL=OFF", "--json", timeout=3600)
    assert changed.returncode == 0, changed.stderr
    second = json.loads(changed.stdout)
    assert second["prefix"] != prefix and current(t) == second["prefix"]
    assert t.run(f"readlink {ROOT}/previous").stdout.strip() == prefix
    assert t.run(f"test -x {prefix}/bin/llama-server", check=False).ok
    print(f"flag-change rebuild: {second['stamp']['duration_s']:.0f}s")

    # a build that fails (configure, here): log path and tail shown, `current` untouched and still serving
    failed = run_cli("build", sb.name, "--cpu", "--llama-src", str(llama_src), "--cmake-flag",
                     "-DCMAKE_CXX_COMPILER=/nonexistent/g++")
    assert failed.returncode == 4, failed.stderr
    assert "/var/log/edgekit/build-b11312-" in failed.stderr and "previous `current`" in failed.stderr
    assert "CMAKE_CXX_COMPILER" in failed.stderr       # the log tail
    assert current(t) == second["prefix"]
    assert "build 11312" in t.run(f"{ROOT}/current/bin/llama-server --version 2>&1").stdout


def test_unknown_tag_is_a_clear_error(dev):
    sb, t = dev
    repo = "/tmp/llama-mirror"
    t.run(f"rm -rf {repo} && git init -q {repo} && cd {repo} && touch CMakeLists.txt && git add . && "
          "git -c user.email=e@x -c user.name=e commit -qm init && git tag b1")
    res = run_cli("build", sb.name, "--cpu", "--version", "b99999999", "--repo", repo)
    assert res.returncode == 4, res.stderr
    assert "b99999999" in res.stderr and "release tag" in res.stderr


def test_dry_run_with_planted_cuda_12_6(dev):
    """Jetson identity plus an nvcc at /usr/local/cuda-12.6 that prints a captured JetPack 6 `nvcc --version`."""
    sb, t = dev
    nvcc = "/usr/local/cuda-12.6/bin/nvcc"
    t.sudo(f"mkdir -p {nvcc.rsplit('/', 1)[0]}")
    t.put_text("#!/bin/sh\ncat <<'EOF'\n" + cap.NVCC_VERSION_JP6_CUDA_12_6 + "\nEOF\n", nvcc, sudo=True, mode="0755")
    try:
        res = run_cli("build", sb.name, "--dry-run", "--llama-src", "/nonexistent-is-not-read-in-order")
        assert res.returncode == 2     # the source is checked before anything else is planned
        res = run_cli("build", sb.name, "--dry-run", "--version", "b11312")
        assert res.returncode == 0, res.stderr
        text = " ".join(res.stderr.split())
        assert "-DGGML_CUDA=ON" in text and "-DCMAKE_CUDA_ARCHITECTURES=87" in text
        assert f"-DCMAKE_CUDA_COMPILER={nvcc}" in text
        assert "2.5 GiB per nvcc job" in text
    finally:
        t.sudo("rm -rf /usr/local/cuda-12.6", check=False)


def _stat(text: str, key: str) -> int:
    for line in text.splitlines():
        k, _, v = line.partition("\t")
        if k.strip() == key and v.strip().isdigit():
            return int(v)
    return 0


def test_pack_fetch_and_install_on_another_device(dev, standin):
    """Build once, deploy many: pack t-build's current build, fetch it, install it on the plain stand-in."""
    from edgekit.llamacpp.packs import InstallPack, fetch_pack, pack_build
    from edgekit.remote.plan import Context, run_steps

    _, t = dev
    if not t.run(f"test -x {ROOT}/current/bin/llama-server", check=False).ok:
        unavailable("a build on t-build", "test_build_e2e's build test did not run before this one")
    pack = pack_build(Context(transport=t))
    assert pack["stamp"]["version"] == "b11312" and len(pack["sha256"]) == 64
    local = fetch_pack(Context(transport=t), pack)
    assert local.is_file() and local.name == f"{pack['name']}.tar.gz"

    with Transport(parse_target(standin.name)) as other:
        other.sudo(f"rm -rf {ROOT}", check=False)
        ctx = Context(transport=other)
        results = run_steps(ctx, [InstallPack(local)])
        assert results[0].status == "changed"
        assert other.run(f"readlink {ROOT}/current").stdout.strip() == f"{ROOT}/{pack['name']}"
        assert "build 11312" in other.run(f"{ROOT}/current/bin/llama-server --version 2>&1").stdout
        assert ctx.run.build.stamp["flags_hash"] == pack["stamp"]["flags_hash"]
        again = run_steps(Context(transport=other), [InstallPack(local)])
        assert again[0].status == "ok" and "already built" in again[0].message
