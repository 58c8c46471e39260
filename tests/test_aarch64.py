"""The aarch64 stand-in and the cross build, pure parts: binfmt_misc entries and lines, an Arm /proc/cpuinfo read
as facts and the ISA level it gets, the planted Orin cpuinfo, the rootfs flavors, the cross plan. The real run is
tests/test_aarch64_e2e.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import UsageError
from edgekit.facts import boards
from edgekit.facts.system import CpuInfo
from edgekit.facts import isa
from edgekit.llamacpp import cross
from edgekit.llamacpp import spec as S
from edgekit.llamacpp.cmake import plan_build
from edgekit.sandbox import emulation, identity, rootfs
from tests.test_build import SDIST, jetson_facts

# /usr/lib/binfmt.d/qemu-aarch64.conf from Debian 12's qemu-user-static 1:7.2+dfsg-7+deb12u18
QEMU_AARCH64_CONF = (
    ":qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:"
    "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:"
    "/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n")
# /proc/sys/fs/binfmt_misc/qemu-aarch64 after edgekit registered that line with C added (this machine, kernel 6.18)
QEMU_AARCH64_ENTRY = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n"
                      "magic 7f454c460201010000000000000000000200b700\n"
                      "mask ffffffffffffff00fffffffffffffffffeffffff\n")
# The same registration made by systemd-binfmt without F (e.g. binfmt-support's own line): unusable in a container
QEMU_AARCH64_ENTRY_NO_F = QEMU_AARCH64_ENTRY.replace("flags: POCF", "flags: P")
# Debian's own line as registered (no C): sudo in the stand-in would not be root
QEMU_AARCH64_ENTRY_NO_C = QEMU_AARCH64_ENTRY.replace("flags: POCF", "flags: POF")


def test_binfmt_entry_and_line_are_read():
    entry = emulation.parse_entry(QEMU_AARCH64_ENTRY)
    assert entry.usable and entry.fixed and entry.interpreter == "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert not emulation.parse_entry(QEMU_AARCH64_ENTRY_NO_F).fixed
    assert emulation.parse_entry(QEMU_AARCH64_ENTRY_NO_C).fixed and not emulation.parse_entry(
        QEMU_AARCH64_ENTRY_NO_C).usable
    assert not emulation.parse_entry(QEMU_AARCH64_ENTRY.replace("enabled", "disabled")).enabled
    assert emulation.parse_entry("") is None
    reg = emulation.parse_conf("# qemu\n\n" + QEMU_AARCH64_CONF)
    assert reg.name == "qemu-aarch64" and reg.flags == "OPF" and reg.interpreter.endswith("aarch64-binfmt-P")
    no_f = emulation.parse_conf(QEMU_AARCH64_CONF.replace(":OPF", ":P"))
    assert no_f.with_flags("PF").line == QEMU_AARCH64_CONF.strip().replace(":OPF", ":PF")
    assert emulation.parse_conf(":broken:line") is None and emulation.parse_conf("") is None


@settings(max_examples=60, deadline=None)
@given(st.text())
def test_binfmt_parsers_never_crash(text):
    entry, reg = emulation.parse_entry(text), emulation.parse_conf(text)
    assert entry is None or isinstance(entry.flags, str)
    assert reg is None or reg.line.count(":") == 7


def test_an_unknown_architecture_is_refused_with_the_ones_there_are():
    with pytest.raises(UsageError, match="no stand-ins for architecture 'riscv64'") as e:
        emulation.ensure("riscv64")
    assert "--arch arm64" in e.value.hint
    with pytest.raises(UsageError, match="no stand-in rootfs for Debian 'jessie'"):
        rootfs.Flavor("jessie", "arm64").check()
    assert emulation.ensure(emulation.host_arch()) is None          # this machine's own: nothing to register


def test_orin_cpuinfo_names_the_core_and_gets_the_orin_level():
    text = boards.cpuinfo_text("tegra234", 6)
    assert text.count("processor\t:") == 6
    cpu = CpuInfo.parse(text)
    assert cpu["model"] == "Cortex-A78AE" and {"asimddp", "fphp", "asimdhp"} <= set(cpu["flags"])
    level = isa.choose("aarch64", set(cpu["flags"]))
    assert level.name == "armv8.2-a+dotprod+fp16"
    assert isa.defines_for(level, "aarch64") == ["-DGGML_NATIVE=OFF", "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16"]
    # Xavier's Carmel has half precision but no dot product; the Nano's A57 neither: both get plain armv8-a
    for soc, core in (("tegra194", "Carmel"), ("tegra210", "Cortex-A57")):
        cpu = CpuInfo.parse(boards.cpuinfo_text(soc, 1))
        assert cpu["model"] == core and isa.choose("aarch64", set(cpu["flags"])).name == "armv8-a"


def test_an_emulated_stand_in_without_a_planted_cpuinfo_sees_the_hosts_and_builds_plain_armv8():
    # qemu-user 7.2 shows an aarch64 program the host's own /proc/cpuinfo: x86 flags, no Arm features
    host = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse sse2 sse4_2 avx avx2 fma f16c bmi2\n"
    cpu = CpuInfo.parse(host)
    assert isa.choose("aarch64", set(cpu["flags"])).name == "armv8-a"


def test_the_orin_cpuinfo_is_planted_only_on_an_aarch64_stand_in(tmp_path):
    arm, x86 = tmp_path / "arm", tmp_path / "x86"
    assert identity.plant_cpuinfo(arm, "orin-nano-8gb", "aarch64")
    assert CpuInfo.parse((arm / identity.CPUINFO).read_text())["model"] == "Cortex-A78AE"
    unit = arm / "etc/systemd/system/edgekit-standin-cpuinfo.service"
    assert f"ExecStart=/bin/mount --bind /{identity.CPUINFO} /proc/cpuinfo" in unit.read_text()
    link = arm / "etc/systemd/system/sysinit.target.wants" / unit.name
    assert str(link.readlink()) == "/etc/systemd/system/edgekit-standin-cpuinfo.service"
    assert not identity.plant_cpuinfo(x86, "orin-nano-8gb", "x86_64")     # its real CPU stays
    assert not x86.exists()


def test_rootfs_flavors_keep_the_default_names_and_leave_the_toolchain_out_of_a_foreign_one():
    assert rootfs.tarball_path().name.startswith("rootfs-bookworm-") and "amd64" not in rootfs.tarball_path().name
    assert rootfs.tarball_path("bookworm", "arm64").name.startswith("rootfs-bookworm-arm64-")
    assert rootfs.tarball_path("bullseye", "arm64").name.startswith("rootfs-bullseye-arm64-")
    assert rootfs.tarball_path("bullseye", emulation.host_arch()) == rootfs.tarball_path("bullseye")
    native, arm = rootfs.Flavor(), rootfs.Flavor("bookworm", "arm64")
    assert "build-essential" in native.packages and "build-essential" not in arm.packages
    assert {"python3", "openssh-server", "systemd", "sudo", "curl"} <= set(arm.packages)


def test_standin_dropins_touch_only_boot_units_never_edgekits(tmp_path):
    units = emulation.plant_standin_dropins(tmp_path)
    assert units and not any(u.startswith("edgekit") for u in units)
    text = (tmp_path / "etc/systemd/system/systemd-sysctl.service.d" / emulation.DROPIN_NAME).read_text()
    assert "qemu-user emulation only" in text and "LoadCredential=\n" in text


def orin_with_cpuinfo():
    facts = jetson_facts(nvcc=None)
    facts.cpu = CpuInfo.parse(boards.cpuinfo_text("tegra234", 6))
    return facts


def test_cross_plan_is_the_devices_plan_compiled_here(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_HOME", str(tmp_path))
    facts, spec = orin_with_cpuinfo(), S.BuildSpec(source="/x/sdist.tar.gz", cpu_only=True, jobs=2)
    cp = cross.plan_cross(facts, spec, SDIST)
    assert cp.plan.id == plan_build(facts, spec, SDIST).id          # the pack has the id a native build has
    assert cp.plan.cpu_level == "armv8.2-a+dotprod+fp16" and cp.plan.arch == "aarch64"
    commands = cp.commands()
    assert commands[0].startswith(f"rm -rf {cp.src_dir} && mkdir -p {cp.src_dir} && tar -xzf /x/{S.SDIST_FILE}")
    configure = commands[1]
    assert f"-DCMAKE_TOOLCHAIN_FILE={cp.toolchain_file}" in configure and "-DGGML_NATIVE=OFF" in configure
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in configure and "-DGGML_CUDA=OFF" in configure
    assert commands[2].endswith("--target llama-server llama-bench llama-cli -j 2")
    assert commands[-2].endswith(f'cp -L "$(aarch64-linux-gnu-gcc -print-file-name=libgomp.so.1)" {cp.stage}/lib/')
    assert commands[-1] == f"aarch64-linux-gnu-readelf -d {cp.stage}/bin/llama-server"
    toolchain = cp.toolchain.cmake_file("x86_64")
    assert "set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)" in toolchain
    assert "set(CMAKE_SYSTEM_PROCESSOR aarch64)" in toolchain
    # libssl of the target only: the host's multiarch directory is ignored, pkg-config reads the target's
    assert "set(CMAKE_IGNORE_PATH /usr/lib/x86_64-linux-gnu /lib/x86_64-linux-gnu)" in toolchain
    assert 'set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")' in toolchain
    assert cross.cached_pack(cp) is None


def test_cross_refuses_cuda_and_machines_without_a_toolchain():
    facts = orin_with_cpuinfo()
    with pytest.raises(UsageError, match="a cross build is CPU only") as e:
        cross.plan_cross(facts, S.BuildSpec(source="/x/s.tar.gz"), SDIST)
    assert "--cpu" in e.value.hint
    facts.arch = "riscv64"
    with pytest.raises(UsageError, match=r"no cross toolchain for orin's machine \(riscv64\)"):
        cross.plan_cross(facts, S.BuildSpec(source="/x/s.tar.gz", cpu_only=True), SDIST)


def test_needed_libraries_from_readelf():
    out = (" 0x0000000000000001 (NEEDED)             Shared library: [libllama.so.0]\n"
           " 0x0000000000000001 (NEEDED)             Shared library: [libggml-base.so.0]\n"
           " 0x000000000000001d (RUNPATH)            Library runpath: [$ORIGIN/../lib:$ORIGIN]\n")
    assert cross.needed_libraries(out) == ["libllama.so.0", "libggml-base.so.0"]


SIGNALS_C = r"""
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void say(const char *text) { write(1, text, strlen(text)); }
static void got(int s) { char line[16]; snprintf(line, sizeof line, "%d\n", s - SIGRTMIN); say(line); }
int main(void) {
  for (int i = SIGRTMIN; i <= SIGRTMAX; i++) signal(i, got);
  say("ready\n");
  for (int n = 0; n < 2; n++) pause();
  return 0;
}
"""


@pytest.mark.needs("qemu-user-static", "aarch64-cross")
def test_qemu_user_shifts_realtime_signals_and_the_standin_halts_with_the_shifted_one(tmp_path):
    """What nspawn sends an emulated systemd arrives two real-time signals lower: SIGRTMIN+3 (halt) would be read
    as SIGRTMIN+1 (rescue); kill_signal's SIGRTMIN+5 is read as the halt."""
    import signal
    import subprocess

    (tmp_path / "s.c").write_text(SIGNALS_C)
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-O1", "-o", str(tmp_path / "s"), str(tmp_path / "s.c")],
                   check=True)
    emulation.ensure("arm64")
    proc = subprocess.Popen([str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sent = int(emulation.kill_signal("arm64").removeprefix("SIGRTMIN+"))
        proc.send_signal(signal.SIGRTMIN + 3)
        assert int(proc.stdout.readline()) == 3 - emulation.QEMU_RT_SHIFT == 1        # systemd: rescue.target
        proc.send_signal(signal.SIGRTMIN + sent)
        assert int(proc.stdout.readline()) == emulation.SYSTEMD_HALT                  # systemd: halt
    finally:
        proc.kill()
        proc.wait()
    assert emulation.kill_signal(emulation.host_arch()) is None


def test_a_host_that_refuses_the_registration_gets_one_error_and_what_to_do(tmp_path, monkeypatch):
    binfmt, conf_dir = tmp_path / "binfmt_misc", tmp_path / "binfmt.d"
    (binfmt / "register").mkdir(parents=True)          # writing to it fails, as a read-only binfmt_misc does
    conf_dir.mkdir()
    (conf_dir / "qemu-aarch64.conf").write_text(QEMU_AARCH64_CONF.replace(
        "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/bin/sh"))
    monkeypatch.setattr(emulation, "BINFMT", binfmt)
    monkeypatch.setattr(emulation, "BINFMT_D", conf_dir)
    monkeypatch.setattr(emulation, "host_arch", lambda: "amd64")
    with pytest.raises(UsageError, match="this host refused the binfmt_misc registration of qemu-aarch64") as e:
        emulation.ensure("arm64")
    assert "register qemu-aarch64 on its host with the F flag" in e.value.hint
    (conf_dir / "qemu-aarch64.conf").unlink()
    with pytest.raises(UsageError, match="qemu-user-static is not installed") as e:
        emulation.ensure("arm64")
    assert e.value.hint == "apt-get install qemu-user-static"
