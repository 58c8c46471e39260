"""The build gate and the CPU level choice, pure: captured /proc/cpuinfo, systemd states and llama-server logs."""

from __future__ import annotations

import pytest

from edgekit.facts import isa
from edgekit.facts.build import parse_record
from edgekit.llamacpp.gate import GateRun, judge, sandbox_properties, unit_name
from edgekit.errors import UsageError
from edgekit.facts.system import parse_cpuinfo
from edgekit.models.tiny import tiny_llama_bytes, tiny_llama_sha256
from edgekit.service.settings import render_unit

# Captured on this project's CI machine (AMD EPYC, KVM guest), first two lines of `grep -E ... /proc/cpuinfo`.
CPUINFO_EPYC = (
    "model name\t: AMD EPYC\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht "
    "syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq "
    "pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand "
    "hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext perfctr_core invpcid_single "
    "ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap "
    "avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero "
    "xsaveerptr wbnoinvd arat avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg "
    "avx512_vpopcntdq rdpid fsrm\n")
# The machine of the report (issue 11): a Xeon VM advertising AMX it cannot execute (flags of note, as reported).
CPUINFO_XEON_AMX = ("model name\t: Intel(R) Xeon(R) Processor\n"
                    "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma bmi1 bmi2 avx2 avx512f avx512dq avx512cd "
                    "avx512bw avx512vl avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 hypervisor\n")
# A public capture of an ARMv8.2 core (NXP i.MX93, Cortex-A55); Orin's Cortex-A78AE lists the same v8.2 features.
CPUINFO_ARMV82 = ("processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                  "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n")


def test_parse_cpuinfo_x86_and_arm():
    model, flags = parse_cpuinfo(CPUINFO_EPYC)
    assert model == "AMD EPYC" and {"avx512f", "avx2", "sse4_2"} <= flags and "amx_tile" not in flags
    model, flags = parse_cpuinfo(CPUINFO_ARMV82)
    assert model is None and {"asimddp", "fphp", "asimdhp"} <= flags


def test_levels_never_native_never_amx_and_every_switch_explicit():
    for text in (CPUINFO_EPYC, CPUINFO_XEON_AMX):
        _, flags = parse_cpuinfo(text)
        level = isa.choose("x86_64", flags)
        assert level.name == "x86-64-v4"
        defines = isa.defines_for(level, "x86_64")
        assert defines[0] == "-DGGML_NATIVE=OFF" and "-DGGML_NATIVE=ON" not in defines
        assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF", "-DGGML_AVX512=ON"} <= set(defines)
        assert len([d for d in defines if d.startswith("-DGGML_") and d != "-DGGML_NATIVE=OFF"]) == len(isa.X86_SWITCHES)


def test_refused_levels_fall_back_and_arm_levels():
    _, flags = parse_cpuinfo(CPUINFO_XEON_AMX)
    assert isa.choose("x86_64", flags, refused={"x86-64-v4"}).name == "x86-64-v3"
    v3 = isa.choose("x86_64", {"avx", "avx2", "fma", "f16c", "bmi2", "sse4_2"})
    assert v3.name == "x86-64-v3" and "-DGGML_AVX512=OFF" in isa.defines_for(v3, "x86_64")
    assert isa.lower("x86_64", v3).name == "x86-64-v2"
    assert isa.lower("x86_64", isa.choose("x86_64", set())) is None         # the bottom has no fallback
    _, arm = parse_cpuinfo(CPUINFO_ARMV82)
    level = isa.choose("aarch64", arm)
    assert isa.defines_for(level, "aarch64") == ["-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"]
    assert isa.choose("aarch64", set()).name == "armv8-a"
    assert isa.choose("x86_64", flags, requested="native") is None
    assert isa.defines_for(None, "x86_64") == ["-DGGML_NATIVE=ON"]
    with pytest.raises(UsageError, match="--cpu-level"):
        isa.choose("x86_64", flags, requested="armv8-a")


def test_sandbox_properties_come_from_the_rendered_unit():
    unit = render_unit({"edgekit_private_devices": True, "edgekit_service_groups": ["video"]})
    props = sandbox_properties(unit)
    assert "User=edgekit" in props and "SupplementaryGroups=video" in props and "PrivateDevices=yes" in props
    assert "SystemCallFilter=@system-service" in props and "MemoryDenyWriteExecute=yes" in props
    assert not any(p.startswith(("ExecStart=", "Restart=", "EnvironmentFile=", "Description=")) for p in props)
    run = GateRun("b11312-abcd1234", "/opt/edgekit/llama.cpp/b11312-abcd1234.partial/bin", False, props)
    start = run.start_command()
    assert start.startswith("systemd-run --unit=edgekit-gate-b11312-abcd1234 --service-type=exec")
    assert "'--property=SystemCallFilter=~@privileged @resources'" in start and "--n-gpu-layers 0" in start
    assert "--host /run/edgekit-gate-b11312-abcd1234/llama.sock" in start
    assert unit_name("a b;c") == "edgekit-gate-a_b_c"


SHOW_SIGILL = {"ActiveState": "failed", "Result": "core-dump", "ExecMainCode": "3", "ExecMainStatus": "4"}
LOG_CUDA_OK = ("ggml_cuda_init: found 1 CUDA devices (Total VRAM: 7620 MiB):\n  Device 0: Orin, compute capability 8.7, VMM: yes, VRAM: 7620 MiB\n"
               "load_tensors: offloaded 3/3 layers to GPU\nmain: server is listening on unix:///run/x/llama.sock\n")


def test_judge_names_the_signal_in_plain_words():
    v = judge(SHOW_SIGILL, False, None, "", gpu=False)
    assert not v.ok and v.signal == "SIGILL" and "CPU instructions this machine cannot run" in v.reason
    v = judge({**SHOW_SIGILL, "ExecMainStatus": "31", "Result": "signal", "ExecMainCode": "2"}, False, None, "", False)
    assert v.signal == "SIGSYS" and "SystemCallFilter" in v.reason


@pytest.mark.parametrize("log, words", [
    ("CUDA error: no kernel image is available for execution on the device", "another GPU architecture"),
    ("NvRmMemInitNvmap failed with Permission denied", "/dev/nvmap"),
    ("llama-server: error while loading shared libraries: libcuda.so.1: cannot open shared object file",
     "CUDA driver library"),
])
def test_judge_reads_cuda_failures_from_the_log(log, words):
    v = judge({"ActiveState": "failed", "Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "1"},
              False, None, log, gpu=True)
    assert not v.ok and words in v.reason and v.hint


def test_judge_healthy_cpu_and_gpu():
    done = '{"content": "abc", "tokens_predicted": 8}'
    assert judge({"ActiveState": "active"}, True, done, "", gpu=False).ok
    v = judge({"ActiveState": "active"}, True, done, LOG_CUDA_OK, gpu=True)
    assert v.ok and v.gpu == {"device": "Orin", "offloaded": 3, "layers": 3} and "3/3 layers" in v.reason
    v = judge({"ActiveState": "active"}, True, done, "load_tensors: offloaded 0/3 layers to GPU", gpu=True)
    assert not v.ok and "did not run on the GPU" in v.reason
    assert not judge({"ActiveState": "active"}, True, "not json", "", gpu=False).ok


def test_gate_record_is_per_machine():
    rec = '{"ok": true, "build": "b1-x", "machine_id": "abc"}'
    assert parse_record(f"abc\n@@gate\n{rec}")["ok"]
    assert parse_record(f"other\n@@gate\n{rec}") is None       # a pack's record from the builder does not count
    assert parse_record("abc\n@@gate\n") is None


@pytest.mark.needs("gguf")
def test_tiny_gguf_is_valid_and_deterministic():
    import gguf
    data = tiny_llama_bytes()
    assert data == tiny_llama_bytes() and len(data) < 500_000 and tiny_llama_sha256() == tiny_llama_sha256()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.gguf"
        path.write_bytes(data)
        reader = gguf.GGUFReader(str(path))
        names = [t.name for t in reader.tensors]
        assert names[0] == "token_embd.weight" and "blk.1.ffn_down.weight" in names
        assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "llama"


def test_run_build_falls_back_one_level_after_sigill(monkeypatch):
    """The orchestration: a SIGILL on an automatically chosen level is recorded (facts re-read) and the next lower
    level is planned; an explicit --cpu-level is never second-guessed."""
    from types import SimpleNamespace

    from edgekit.llamacpp import spec as S
    from edgekit.llamacpp import steps as B
    from edgekit.llamacpp.current import CpuLevelRefused
    from edgekit.llamacpp.gate import GateRefused, Verdict
    from edgekit.remote.plan import Context, NullReporter

    refused: list[str] = []
    planned: list[str] = []

    recorded: list[str] = []

    def fake_run_steps(ctx, steps):
        if isinstance(steps[0], CpuLevelRefused):       # the refusal is recorded by its own step
            recorded.append(steps[0].level)
            return []
        facts = ctx.run.facts
        level = isa.choose("x86_64", facts.cpu_flags, set(facts.cpu_refused), steps[0].spec.cpu_level)
        planned.append(level.name)
        if level.name == "x86-64-v4":
            refused.append(level.name)
            raise GateRefused("died of SIGILL", Verdict(False, "SIGILL", signal="SIGILL"), cpu_level=level.name)
        return ["ok"]

    _, flags = parse_cpuinfo(CPUINFO_XEON_AMX)
    facts = lambda: SimpleNamespace(cpu_flags=flags, cpu_refused=list(refused))  # noqa: E731
    monkeypatch.setattr(B, "run_steps", fake_run_steps)
    monkeypatch.setattr(B, "read_facts", lambda transport, arch=None: facts())
    ctx = Context(transport=SimpleNamespace(name="vm"), reporter=NullReporter())
    ctx.run.facts = facts()
    assert B.run_build(ctx, S.BuildSpec(cpu_only=True)) == ["ok"]
    assert planned == ["x86-64-v4", "x86-64-v3"] and recorded == ["x86-64-v4"]
    refused.clear()
    planned.clear()
    ctx.run.facts = facts()
    with pytest.raises(GateRefused):
        B.run_build(ctx, S.BuildSpec(cpu_only=True, cpu_level="x86-64-v4"))
    assert planned == ["x86-64-v4"]


def test_probe_host_reaches_the_server_where_it_binds():
    from edgekit.service.steps import probe_host

    assert probe_host("0.0.0.0") == "127.0.0.1" and probe_host("::") == "[::1]" and probe_host("::1") == "[::1]"
    assert probe_host("192.168.1.50") == "192.168.1.50" and probe_host("127.0.0.1") == "127.0.0.1"


def test_commands_quote_device_paths_and_refuse_path_like_versions():
    import shlex

    from edgekit.llamacpp import spec as S
    from edgekit.llamacpp.cmake import BuildPlan
    from edgekit.llamacpp.source import resolve_source

    plan = BuildPlan(version="b1", commit=None, backend="cpu", cuda_arch=None, cuda_version=None, nvcc=None,
                     defines=["-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib;$ORIGIN"], flags_hash="h", jobs=2, jobs_note="")
    argv = shlex.split(plan.configure_command())
    assert argv[:3] == ["cmake", "-S", plan.src_dir] and argv[-1] == "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib;$ORIGIN"
    assert shlex.split(plan.build_command())[-2:] == ["-j", "2"]
    for version in ("b1/../../etc", "$(id)", "-rf", "b1;x"):
        with pytest.raises(UsageError):
            resolve_source(S.BuildSpec(version=version))


def test_gate_leaves_out_settings_an_older_systemd_refuses():
    unit = render_unit({"edgekit_private_devices": False, "edgekit_service_groups": ["video"]})
    assert "ProtectProc=invisible" in sandbox_properties(unit, 252)
    old = sandbox_properties(unit, 245)                  # JetPack 5 (Ubuntu 20.04)
    assert "ProtectProc=invisible" not in old and "NoNewPrivileges=yes" in old


def test_judge_does_not_blame_vmm_for_every_cuda_failure():
    log = LOG_CUDA_OK + "CUDA error: out of memory\n"     # the normal device line says "VMM: yes"
    v = judge({"ActiveState": "failed", "ExecMainCode": "1", "ExecMainStatus": "1"}, False, None, log, gpu=True)
    assert "ran out of memory" in v.reason and "NO_VMM" not in (v.hint or "")


def test_prune_keeps_the_last_healthy_build():
    from edgekit.llamacpp.current import prune_candidates

    listing = "1 b-old\n2 b-healthy\n3 b-mid\n4 b-prev\n5 b-new\n@@current b-new\n@@previous b-prev\n"
    assert prune_candidates(listing, 3) == ["b-healthy", "b-old"]
    kept_healthy = prune_candidates(listing, 3, ("b-healthy",))   # protected builds count toward --keep
    assert "b-healthy" not in kept_healthy and kept_healthy == ["b-mid", "b-old"]
