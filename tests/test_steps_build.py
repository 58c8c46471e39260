"""The build steps on fake facts, no SSH: each Noop and Change branch, and what a Change runs equals what the dry
run printed (tests/steps_harness.py). The compile and the gate run for real in test_build_e2e/test_gate_e2e."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgekit import layout as L
from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import SourceInfo, plan_build
from edgekit.llamacpp.current import CpuLevelRefused, prune_candidates
from edgekit.llamacpp.gate import GATE_MODEL, GateRefused
from edgekit.facts.build import BUILT_ON_COMMAND
from edgekit.llamacpp.steps import (BuildDeps, BuildPlanned, LlamaCompile, LlamaCurrent, LlamaGate, LlamaInstall,
                                 LlamaSource, Resolved)
from edgekit.errors import UnsuitableDevice
from edgekit.llamacpp.server_env import UnknownServerSetting, names_written
from edgekit.facts.deployed import (BuildDirs, BuiltOn, DebPackages, FileSha256, GateRecord, GpuGroups, HealthyBuild,
                                    InstalledBuild, ServerEnvNames, SourceMarker, SystemdVersion, UserGroups)
from edgekit.models.tiny import tiny_llama_sha256
from edgekit.remote.command import Upload
from edgekit.remote.plan import Change, Noop
from edgekit.remote.run_state import RunState
from tests.steps_harness import plan_and_apply
from tests.test_build import jetson_facts
from tests.test_server_env import KNOWN

SPEC = S.BuildSpec()
MACHINE = "3d1219c7c4c5404aaa1f6d2a48adfda4"


@pytest.fixture
def source(tmp_path):
    tarball = tmp_path / S.SDIST_FILE
    tarball.write_bytes(b"not really an sdist, but bytes to upload")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    return SourceInfo("tarball", S.LLAMA_CPP_VERSION, S.LLAMA_CPP_COMMIT, digest, local=str(tarball),
                      inner=S.SDIST_INNER)


@pytest.fixture
def state(source):
    facts = jetson_facts()
    plan = plan_build(facts, SPEC, source)

    def make() -> RunState:
        run = RunState(facts=facts)
        run.resolved_builds[SPEC] = Resolved(facts, source, plan)
        return run

    make.plan = plan
    return make


def not_built(plan, current=None):
    return {InstalledBuild(plan.prefix): {"current": current, "server": False, "stamp": None}}


def built(plan, current=None):
    stamp = {"version": plan.version, "flags_hash": plan.flags_hash, "backend": plan.backend, "cuda_arch": "87"}
    return {InstalledBuild(plan.prefix): {"current": current, "server": True, "stamp": stamp}}


def test_build_plan_is_a_noop_naming_the_build(state):
    dry, _, _ = plan_and_apply(BuildPlanned(SPEC), {}, run=state)
    assert state.plan.id in dry.reason and "CUDA" in dry.reason


@pytest.mark.parametrize("step", [BuildDeps, LlamaSource, LlamaCompile, LlamaInstall])
def test_every_build_step_is_a_noop_when_this_build_is_installed(step, state):
    dry, _, _ = plan_and_apply(step(SPEC), built(state.plan), run=state)
    assert isinstance(dry, Noop) and "already built" in dry.reason


def test_build_deps_present_is_a_noop(state):
    given = {**not_built(state.plan), DebPackages(S.BUILD_DEPS): set(S.BUILD_DEPS)}
    assert "present" in plan_and_apply(BuildDeps(SPEC), given, run=state)[0].reason


def test_build_deps_missing_are_installed_with_apt_as_printed(state):
    given = {**not_built(state.plan), DebPackages(S.BUILD_DEPS): set(S.BUILD_DEPS) - {"cmake", "ccache"}}
    dry, _, ctx = plan_and_apply(BuildDeps(SPEC), given, run=state)
    assert dry.summary == "install cmake ccache" and ctx.transport.ran[1].endswith("cmake ccache")


def test_build_deps_skipped_and_no_dpkg(state):
    spec = S.BuildSpec(install_deps=False)
    run = lambda: (lambda r: (r.resolved_builds.__setitem__(spec, r.resolved_builds[SPEC]), r)[1])(state())  # noqa
    given = {**not_built(state.plan), DebPackages(S.BUILD_DEPS): set()}
    assert "--skip-deps" in plan_and_apply(BuildDeps(spec), given, run=run)[0].reason
    with pytest.raises(UnsuitableDevice, match="no dpkg"):
        plan_and_apply(BuildDeps(SPEC), {**not_built(state.plan), DebPackages(S.BUILD_DEPS): None}, run=state)


def test_source_already_unpacked_is_a_noop(state, source):
    given = {**not_built(state.plan), SourceMarker(state.plan.src_dir): source.digest}
    assert "already at" in plan_and_apply(LlamaSource(SPEC), given, run=state)[0].reason


def test_source_is_uploaded_checked_and_unpacked_as_printed(state, source):
    remote = f"{L.SOURCE_CACHE}/{source.digest}.tar.gz"
    given = {**not_built(state.plan), SourceMarker(state.plan.src_dir): "", FileSha256(remote): None}
    dry, _, ctx = plan_and_apply(LlamaSource(SPEC), given, run=lambda: state(),
                                 answer=lambda c: f"{source.digest}  {remote}" if c.startswith("sha256sum") else "")
    upload = ctx.transport.ran[1]
    assert isinstance(upload, Upload) and upload.dest == remote and upload.root
    assert f"sha256 {source.digest[:16]}" in dry.shown[1]
    assert any("tar " in str(op) for op in ctx.transport.ran[2:])


def test_source_already_uploaded_is_only_unpacked(state, source):
    remote = f"{L.SOURCE_CACHE}/{source.digest}.tar.gz"
    given = {**not_built(state.plan), SourceMarker(state.plan.src_dir): "old", FileSha256(remote): source.digest}
    _, _, ctx = plan_and_apply(LlamaSource(SPEC), given, run=state)
    assert not any(isinstance(op, Upload) for op in ctx.transport.ran)


def test_compile_runs_the_logged_configure_and_build_as_printed(state):
    dry, _, ctx = plan_and_apply(LlamaCompile(SPEC), not_built(state.plan), run=state)
    assert len(ctx.transport.ran) == 3 and "cmake -S" in ctx.transport.ran[1] and "flock" in ctx.transport.ran[2]
    assert "CCACHE_DIR" in dry.shown[1]             # the environment is part of what is printed


def answers(plan, gate_ok: bool = True):
    def answer(command: str):
        if "--version" in command:
            return "version: 11312 (0c1e570)\n"
        if command.startswith("ldd"):
            return "libggml-base.so => /x\nlibggml-cuda.so => /x\nlibllama.so => /x\n"
        if "systemctl show" in command:
            return ("ActiveState=active\nResult=success\nhealth=200\n" if gate_ok else
                    "ActiveState=failed\nResult=core-dump\nExecMainCode=2\nExecMainStatus=4\nhealth=000\n")
        if "http://gate/completion" in command:
            return json.dumps({"tokens_predicted": 8})
        if "journalctl -u" in command:
            return "load_tensors: offloaded 3/3 layers to GPU\nDevice 0: Orin, compute capability 8.7\n"
        if command == "cat /etc/machine-id":
            return MACHINE + "\n"
        return ""
    return answer


def test_install_verifies_writes_the_stamp_and_moves_into_place(state):
    given = {**not_built(state.plan), BuiltOn(): {"hostname": "orin", "machine_id": "app-id"}}
    _, _, ctx = plan_and_apply(LlamaInstall(SPEC), given, run=state, answer=answers(state.plan))
    stamp = json.loads(next(op for op in ctx.transport.ran if isinstance(op, Upload)).data)
    assert stamp["built_on"] == {"hostname": "orin", "machine_id": "app-id"} and stamp["backend"] == "cuda"
    assert ctx.transport.ran[-1].startswith(f"rm -rf {state.plan.prefix} && mv")
    assert sum("--version" in r for r in ctx.reads) == 2          # the build, then the installed copy


def test_install_refuses_a_cuda_build_that_came_out_cpu_only(state):
    cpu_only = lambda c: "libggml-base.so => /x\n" if c.startswith("ldd") else answers(state.plan)(c)  # noqa: E731
    with pytest.raises(Exception, match="CPU-only"):
        plan_and_apply(LlamaInstall(SPEC), {**not_built(state.plan), BuiltOn(): {}}, run=state, answer=cpu_only)


def gate_facts(plan, record=None, model_there=True, known=KNOWN):
    return {GateRecord(plan.prefix): record, ServerEnvNames(f"{plan.prefix}/bin/llama-server"): known,
            GpuGroups(): ["video", "render"], SystemdVersion(): 249,
            UserGroups(L.SERVICE_USER): ["edgekit"], FileSha256(GATE_MODEL): tiny_llama_sha256() if model_there else None}


def test_gate_passed_here_before_is_a_noop(state):
    record = {"ok": True, "build": state.plan.id, "at": "2026-11-30", "reason": "generated 8 tokens"}
    dry, _, _ = plan_and_apply(LlamaGate(SPEC), gate_facts(state.plan, record), run=state)
    assert isinstance(dry, Noop) and "passed the gate here" in dry.reason


def test_gate_refuses_a_build_that_does_not_know_a_setting_before_anything_runs(state):
    """Also a build that passed the gate before: the settings of this run may name a variable it lacks."""
    record = {"ok": True, "build": state.plan.id, "at": "2026-11-30", "reason": "generated 8 tokens"}
    given = gate_facts(state.plan, record, known=KNOWN - {"LLAMA_ARG_UI_MCP_PROXY"})
    with pytest.raises(UnknownServerSetting, match=f"build {state.plan.id} on .* does not know LLAMA_ARG_UI_MCP_PROXY"):
        plan_and_apply(LlamaGate(SPEC), given, run=state)


def test_gate_of_a_build_not_there_yet_says_its_settings_are_checked_once_built(state):
    dry, _, _ = plan_and_apply(LlamaGate(SPEC), gate_facts(state.plan, known=None), run=state,
                               answer=answers(state.plan))
    assert "every LLAMA_ARG_* setting edgekit writes (read once it is built and runs)" in dry.summary
    passed, _, _ = plan_and_apply(LlamaGate(SPEC), gate_facts(state.plan), run=state, answer=answers(state.plan))
    assert f"its llama-server knows the {len(names_written())} LLAMA_ARG_* settings edgekit writes" in passed.summary


def test_gate_runs_the_server_in_the_sandbox_and_records_the_verdict(state):
    dry, _, ctx = plan_and_apply(LlamaGate(SPEC), gate_facts(state.plan, model_there=False), run=state,
                                 answer=answers(state.plan))
    assert dry.shown[1].startswith(f"upload → {GATE_MODEL} (0644 root, ")
    assert ctx.transport.ran[3].startswith("systemd-run --unit=edgekit-gate-")
    assert "--property=User=edgekit" in ctx.transport.ran[3] and "--n-gpu-layers 999" in ctx.transport.ran[3]
    verdict = json.loads(ctx.transport.ran[-1].data)
    assert verdict["ok"] and verdict["machine_id"] == MACHINE and verdict["build"] == state.plan.id
    assert any("http://gate/completion" in r for r in ctx.reads)


def test_gate_refuses_a_build_that_dies_of_sigill(state):
    given = gate_facts(state.plan)
    with pytest.raises(GateRefused, match="SIGILL") as info:
        plan_and_apply(LlamaGate(SPEC), given, run=state, answer=answers(state.plan, gate_ok=False))
    assert state.plan.cpu_level == "armv8-a" and info.value.cpu_level is None    # the lowest Arm level: no fallback
    assert "`current` is unchanged" in info.value.message


def test_a_build_that_dies_before_its_help_is_judged_by_the_gate_not_by_the_settings_check(state):
    """A build that cannot run here (SIGILL) prints no --help: the gate says why (and leads to a lower CPU level),
    not the settings check's 'lists no LLAMA_ARG_*'."""
    with pytest.raises(GateRefused, match="SIGILL"):
        plan_and_apply(LlamaGate(SPEC), gate_facts(state.plan, known=frozenset()), run=state,
                       answer=answers(state.plan, gate_ok=False))


def test_a_build_that_runs_but_lists_no_settings_is_refused_after_its_gate(state):
    with pytest.raises(UnknownServerSetting, match="lists no LLAMA_ARG_"):
        plan_and_apply(LlamaGate(SPEC), gate_facts(state.plan, known=frozenset()), run=state,
                       answer=answers(state.plan))


def test_a_refused_cpu_level_is_recorded_as_printed():
    _, _, ctx = plan_and_apply(CpuLevelRefused("x86-64-v4"), {})
    assert ctx.transport.ran == [f"install -d -m 0755 {L.STATE_DIR} && echo 'x86-64-v4 SIGILL' >> {L.CPU_REFUSED}"]


def test_current_already_this_build_is_a_noop(state):
    dry, _, ctx = plan_and_apply(LlamaCurrent(SPEC), built(state.plan, current=state.plan.prefix), run=state)
    assert isinstance(dry, Noop) and ctx.run.build.prefix == state.plan.prefix


def test_current_switches_keeps_previous_and_prunes_as_printed(state):
    old = [f"{L.INSTALL_ROOT}/b{i}-old" for i in range(4)]
    listing = "".join(f"{i}.0 b{i}-old\n" for i in range(4)) + f"9.0 {state.plan.prefix.rsplit('/', 1)[1]}\n" \
        + f"@@current {old[3]}\n@@previous {old[2]}\n"
    given = {**built(state.plan, current=old[3]), GateRecord(state.plan.prefix): {"ok": True},
             HealthyBuild(): "b0-old", BuildDirs(): listing}
    dry, _, ctx = plan_and_apply(LlamaCurrent(SPEC), given, run=state)
    assert f"mv -T {L.INSTALL_ROOT}/previous.edgekit-tmp {L.INSTALL_ROOT}/previous" in ctx.transport.ran[0]
    assert ctx.transport.ran[2:] == [f"rm -rf {old[2]}", f"rm -rf {old[1]}"]   # b0 is the last healthy one
    assert dry.summary.startswith(f"switch {L.CURRENT} -> {state.plan.prefix}")


def test_current_refuses_an_ungated_build(state):
    given = {**built(state.plan, current=None), GateRecord(state.plan.prefix): None, HealthyBuild(): "",
             BuildDirs(): ""}
    with pytest.raises(UnsuitableDevice, match="has not passed the build gate"):
        plan_and_apply(LlamaCurrent(SPEC), given, run=state)


def test_prune_judges_the_listing_as_the_switch_leaves_it():
    listing = "1.0 a\n2.0 b\n3.0 c\n@@current c\n@@previous b\n"
    assert prune_candidates(listing, 2, after_switch=("/x/d", "/x/c")) == ["b", "a"]


# -- a pack built elsewhere ------------------------------------------------------------------------------------
def _pack_here(tmp_path):
    from tests.test_pack import GOOD, NAME, _pack

    path = _pack(tmp_path / f"{NAME}.tar.gz", GOOD)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    stamp = {"version": "b11312", "flags_hash": "abcdef12", "backend": "cpu", "arch": "aarch64"}
    path.with_name(f"{NAME}.json").write_text(json.dumps({"name": NAME, "sha256": sha, "stamp": stamp}))
    return path, NAME, stamp


def test_install_pack_uploads_checks_gates_moves_records_and_switches_as_printed(tmp_path):
    from edgekit.llamacpp.packs import InstallPack

    path, name, _ = _pack_here(tmp_path)
    prefix = f"{L.INSTALL_ROOT}/{name}"
    given = {InstalledBuild(prefix): {"current": f"{L.INSTALL_ROOT}/b1-old", "server": False, "stamp": None},
             GpuGroups(): [], SystemdVersion(): 252, UserGroups(L.SERVICE_USER): ["edgekit"],
             FileSha256(GATE_MODEL): tiny_llama_sha256(), HealthyBuild(): "", BuildDirs(): "",
             ServerEnvNames(f"{prefix}.partial/bin/llama-server"): KNOWN}
    dry, _, ctx = plan_and_apply(InstallPack(path), given, run=lambda: RunState(facts=jetson_facts()),
                                 answer=answers(None))
    ran = [str(op) for op in ctx.transport.ran]
    assert ran[0] == f"mkdir -p {L.PACK_DIR}" and ran[1].startswith(f"upload → {L.PACK_DIR}/{name}.tar.gz")
    assert "sha256sum -c" in ran[2] and "tar -xzf" in ran[3]
    assert any(r.startswith("systemd-run") and f"{prefix}.partial/bin/llama-server" in r for r in ran)
    assert ran.index(f"rm -rf {prefix} && mv {prefix}.partial {prefix}") < ran.index(
        next(r for r in ran if r.startswith(f"upload → {prefix}/gate.json")))
    assert ran[-1].endswith(f"mv -T {L.CURRENT}.edgekit-tmp {L.CURRENT}") and ctx.run.build.prefix == prefix


def test_install_pack_refuses_a_pack_for_another_machine(tmp_path):
    from edgekit.llamacpp.packs import InstallPack

    path, name, _ = _pack_here(tmp_path)
    x86 = jetson_facts()
    x86.arch = "x86_64"
    with pytest.raises(UnsuitableDevice, match="is for aarch64 and orin is x86_64: refused before anything changed"):
        plan_and_apply(InstallPack(path), {}, run=lambda: RunState(facts=x86))


def test_install_pack_reads_the_machine_when_no_facts_were_read_and_refuses_an_unrecorded_one(tmp_path):
    from edgekit.facts.system import Arch
    from edgekit.llamacpp.packs import InstallPack

    path, name, stamp = _pack_here(tmp_path)
    with pytest.raises(UnsuitableDevice, match="is for aarch64 and orin is x86_64"):
        plan_and_apply(InstallPack(path), {Arch(): "x86_64"}, run=lambda: RunState())
    with pytest.raises(UnsuitableDevice, match="cannot tell the machine of orin"):
        plan_and_apply(InstallPack(path), {Arch(): None}, run=lambda: RunState())
    del stamp["arch"]
    path.with_name(f"{name}.json").write_text(json.dumps({"name": name, "sha256": hashlib.sha256(
        path.read_bytes()).hexdigest(), "stamp": stamp}))
    with pytest.raises(UnsuitableDevice, match="does not record the machine it was built for"):
        plan_and_apply(InstallPack(path), {}, run=lambda: RunState(facts=jetson_facts()))


def test_install_pack_already_current_is_a_noop(tmp_path):
    from edgekit.llamacpp.packs import InstallPack

    path, name, stamp = _pack_here(tmp_path)
    prefix = f"{L.INSTALL_ROOT}/{name}"
    given = {InstalledBuild(prefix): {"current": prefix, "server": True, "stamp": stamp},
             GateRecord(prefix): {"ok": True, "build": name, "at": "t", "reason": "r"},
             ServerEnvNames(f"{prefix}/bin/llama-server"): KNOWN}
    dry, _, _ = plan_and_apply(InstallPack(path), given, run=lambda: RunState(facts=jetson_facts()))
    assert isinstance(dry, Noop) and "(current)" in dry.reason


def test_a_pack_that_does_not_know_a_setting_is_removed_and_refused_after_its_gate(tmp_path):
    from edgekit.llamacpp.packs import InstallPack

    path, name, _ = _pack_here(tmp_path)
    prefix = f"{L.INSTALL_ROOT}/{name}"
    given = {InstalledBuild(prefix): {"current": f"{L.INSTALL_ROOT}/b1-old", "server": False, "stamp": None},
             GpuGroups(): [], SystemdVersion(): 252, UserGroups(L.SERVICE_USER): ["edgekit"],
             FileSha256(GATE_MODEL): tiny_llama_sha256(), HealthyBuild(): "", BuildDirs(): "",
             ServerEnvNames(f"{prefix}.partial/bin/llama-server"): KNOWN - {"LLAMA_ARG_AGENT"}}
    with pytest.raises(UnknownServerSetting, match=f"pack {name} on .* does not know LLAMA_ARG_AGENT") as e:
        plan_and_apply(InstallPack(path), given, run=lambda: RunState(facts=jetson_facts()), answer=answers(None))
    assert e.value.exit_code == 5
