"""`edgekit doctor`'s checks on fake facts (one board, one pain at a time) and its facts' parsers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit import doctor
from edgekit.facts.device import derive
from edgekit.facts.health import DeviceClock, InstalledServer, LoginShellCuda, cuda_version_of
from edgekit.facts.tuning import DesktopSession, JetsonClocksShow, SwapBacking, Swaps, Zramctl
from tests.fixtures import captured as cap
from tests.test_facts import raw_jetson, raw_orin_nano_super

# jetson_clocks --show on a Super-mode Orin Nano, in the captured format (JETSON_CLOCKS_SHOW_AGX_ORIN_JP5)
CLOCKS_SUPER = """\
SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super
Online CPUs: 0-5
cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=1728000 CurrentFreq=1728000 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq={gpu} CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=0
NV Power Mode: MAXN_SUPER"""
ORIN = raw_orin_nano_super({"name": "MAXN_SUPER", "id": 2}, clocks=CLOCKS_SUPER.format(gpu=1020000000))
DISK_OK = {"path": "/opt", "total_bytes": 64 * 2**30, "free_bytes": 30 * 2**30}
STAMP_CUDA = {"version": "b11312", "backend": "cuda", "cuda_version": "12.6", "cuda_arch": "87"}
LDD_CUDA = """\
\tlinux-vdso.so.1 (0x0000ffff9a9c4000)
\tlibggml-cuda.so => /opt/edgekit/llama.cpp/current/lib/libggml-cuda.so (0x0000ffff98000000)
\tlibggml.so => /opt/edgekit/llama.cpp/current/lib/libggml.so (0x0000ffff97f00000)
\tlibcudart.so.12 => /usr/local/cuda-{v}/targets/aarch64-linux/lib/libcudart.so.12 (0x0000ffff97e00000)
\tlibc.so.6 => /lib/aarch64-linux-gnu/libc.so.6 (0x0000ffff97c00000)"""


def facts(raw: dict | None = None, **kw) -> doctor.DoctorFacts:
    raw = {**ORIN, "disk": DISK_OK, **(raw or {})}
    return doctor.DoctorFacts(device=derive("orin", raw), **kw)


def server(stamp: dict, cuda: str | None = "12.6") -> dict:
    ldd = LDD_CUDA.format(v=cuda) if cuda else "\tlibggml.so => /opt/edgekit/llama.cpp/current/lib/libggml.so (0x1)"
    import json
    return InstalledServer.parse(json.dumps(stamp) + "\n@@ldd\n" + ldd)


def checks_found(f: doctor.DoctorFacts) -> list[str]:
    return [x.check for x in doctor.examine(f)]


def test_a_healthy_orin_nano_super_has_nothing_found():
    f = facts(server=server(STAMP_CUDA), login_cuda=LoginShellCuda.parse("ld=\n"), clock_offset_s=0.4)
    assert doctor.examine(f) == [] and doctor.exit_code([]) == 0


def test_nvmap_release():
    release = cap.NV_TEGRA_RELEASE_R36_4_4.replace("REVISION: 4.4", "REVISION: 4.7")
    f = facts(raw_jetson(release, "NVIDIA Jetson Orin Nano Developer Kit", "nvidia,p3767-0005"))
    [x] = doctor.examine(f)
    assert x.check == "nvmap-l4t" and x.severity == doctor.PROBLEM and "L4T 36.4.7" in x.found
    assert "dist-upgrade" in x.fix
    assert checks_found(facts(raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, "Orin", "nvidia,p3767-0005"))) == []


def test_super_mode_with_the_gpu_capped_at_624_mhz():
    capped = facts({"jetson_clocks": JetsonClocksShow.parse(CLOCKS_SUPER.format(gpu=624750000))})
    [x] = doctor.examine(capped)
    assert x.check == "super-capped" and "GPU tops out at 625 MHz" in x.found and "super.conf" in x.fix
    assert "edgekit provision orin --power-mode MAXN_SUPER" in x.fix
    not_super = raw_orin_nano_super({"name": "15W", "id": 0}, clocks=CLOCKS_SUPER.format(gpu=624750000)
                                    .replace("MAXN_SUPER", "15W"))
    assert checks_found(facts(not_super)) == []                 # 15W caps the GPU on purpose


def test_cuda_runtime_loaded_is_not_the_one_built_with():
    [x] = doctor.examine(facts(server=server(STAMP_CUDA, cuda="11.4")))
    assert x.check == "cuda-runtime" and x.severity == doctor.PROBLEM
    assert "built with CUDA 12.6 but loads the CUDA 11.4 runtime (/usr/local/cuda-11.4/" in x.found
    shell = LoginShellCuda.parse("ld=/usr/local/cuda-11.4/lib64\nnvcc=/usr/local/cuda-11.4/bin/nvcc\n"
                                 + cap.NVCC_VERSION_JP5_CUDA_11_4)
    [y] = doctor.examine(facts(server=server(STAMP_CUDA), login_cuda=shell))
    assert y.check == "cuda-runtime" and y.severity == doctor.WARNING and "finds CUDA 11.4 first" in y.found
    assert doctor.examine(facts(server=server(STAMP_CUDA), login_cuda=LoginShellCuda.parse(
        "ld=\nnvcc=/usr/local/cuda-12.6/bin/nvcc\n" + cap.NVCC_VERSION_JP6_CUDA_12_6))) == []


def test_cpu_only_build_on_a_jetson():
    [x] = doctor.examine(facts(server=server({**STAMP_CUDA, "backend": "cpu", "cuda_version": None}, cuda=None)))
    assert x.check == "cpu-only-build" and "nvidia-jetpack" in x.fix and "CPU-only" in x.found
    # stamped CUDA but libggml-cuda missing from what llama-server links: CPU-only all the same
    assert checks_found(facts(server=server(STAMP_CUDA, cuda=None))) == ["cpu-only-build"]
    pc = doctor.DoctorFacts(device=derive("pc", {"arch": "x86_64", "dt_compatible": [], "disk": DISK_OK}),
                            server=server({**STAMP_CUDA, "backend": "cpu"}, cuda=None))
    assert doctor.examine(pc) == []                              # no GPU to miss


def test_swap_on_an_sd_card():
    raw = {"swaps": Swaps.parse(cap.PROC_SWAPS_ZRAM_AND_PARTITION),
           "swap_backing": SwapBacking.parse("@@swap /dev/sda2\nsource=/dev/mmcblk1p2\ndevice=mmcblk1\nmmc_type=SD\n")}
    [x] = doctor.examine(facts(raw))
    assert x.check == "swap-on-card" and "/dev/sda2 (SD)" in x.found and "sudo swapoff /dev/sda2" in x.fix
    assert checks_found(facts()) == []                            # the same swap on a disk (sda)


def test_zram_half_the_ram_of_an_8gb_board():
    raw = {"zramctl": Zramctl.parse(cap.ZRAMCTL_DEFAULT_LZ4_8G)}
    [x] = doctor.examine(facts(raw))
    assert x.check == "zram" and "zram of 8.0 GiB on 7.4 GiB of RAM" in x.found and "nvzramconfig" in x.fix
    big = dict(ORIN)
    big["memory"] = {**big["memory"], "total_bytes": 62 * 2**30}
    assert checks_found(facts({**big, **raw})) == []             # 8 GiB of zram on a 64 GB AGX: no pain


def test_desktop_on_an_8gb_board():
    desktop = {"default_target": "graphical",
               "desktop_memory": DesktopSession.parse("412000 gnome-shell\n98000 Xorg\n52000 gdm3\n")}
    [x] = doctor.examine(facts(desktop))
    assert x.check == "desktop" and "edgekit provision orin --headless" in x.fix
    assert checks_found(facts({**desktop, "desktop_memory": DesktopSession.parse("")})) == []   # none running
    assert checks_found(facts({"default_target": "multi-user"})) == []


def test_disk_nearly_full():
    [x] = doctor.examine(facts({"disk": {"path": "/opt", "total_bytes": 64 * 2**30, "free_bytes": 1 * 2**30}}))
    assert x.check == "disk" and "1.0 GiB free of 64.0 GiB at /opt" in x.found
    big = {"disk": {"path": "/opt", "total_bytes": 2000 * 2**30, "free_bytes": 90 * 2**30}}
    assert checks_found(facts(big)) == ["disk"]                   # 4.5% free


def test_clock_skew_beyond_what_the_read_can_tell():
    [x] = doctor.examine(facts(clock_offset_s=-3600.0, clock_uncertainty_s=1.0))
    assert x.check == "clock" and "3,600 s behind" in x.found and "timedatectl set-ntp true" in x.fix
    assert doctor.examine(facts(clock_offset_s=90.0, clock_uncertainty_s=40.0)) == []    # a slow read, not skew


def test_worst_finding_sets_the_exit_code():
    three = facts({"disk": {"path": "/opt", "total_bytes": 64 * 2**30, "free_bytes": 2**29},
                   "zramctl": Zramctl.parse(cap.ZRAMCTL_DEFAULT_LZ4_8G)}, clock_offset_s=7200.0)
    found = doctor.examine(three)
    assert [x.check for x in found] == ["disk", "clock", "zram"]      # problems first
    assert doctor.exit_code(found) == doctor.EXIT_CODES[doctor.PROBLEM] == 8
    assert doctor.exit_code([x for x in found if x.severity == doctor.WARNING]) == 7
    assert doctor.to_json(three, found)["exit_code"] == 8


def test_every_check_runs_on_a_bare_machine_without_finding_anything():
    bare = doctor.DoctorFacts(device=derive("pc", {"dt_compatible": []}))
    assert doctor.examine(bare) == []
    assert dataclasses.asdict(bare)["device"]["jetson"] is None


# -- the facts' parsers -------------------------------------------------------------------------------------------
def test_installed_server_parser():
    got = server(STAMP_CUDA)
    assert got["ggml"] == ["libggml", "libggml-cuda"] and got["cudart_version"] == "12.6"
    assert got["cudart"] == "/usr/local/cuda-12.6/targets/aarch64-linux/lib/libcudart.so.12"
    assert InstalledServer.parse("") is None                      # no build installed
    missing = InstalledServer.parse("{}\n@@ldd\n\tlibcudart.so.12 => not found\n")
    assert missing["cudart"] is None and missing["stamp"] == {}


@pytest.mark.parametrize("path, version", [("/usr/local/cuda-12.6/lib64/libcudart.so.12", "12.6"),
                                           ("/usr/lib/aarch64-linux-gnu/libcudart.so.12.2.140", "12.2"),
                                           ("/x/libcudart.so.11", "11"), (None, None), ("/lib/libc.so.6", None)])
def test_cuda_version_of_a_library_path(path, version):
    assert cuda_version_of(path) == version


def test_device_clock_and_login_shell_parsers():
    assert DeviceClock.parse("1796689720.179727800\n") == pytest.approx(1796689720.1797278)
    assert DeviceClock.parse("date: invalid\n") is None and DeviceClock.parse("") is None
    shell = LoginShellCuda.parse("ld=/usr/local/cuda/lib64:/opt/x\nnvcc=/usr/local/cuda/bin/nvcc\n"
                                 + cap.NVCC_VERSION_JP6_CUDA_12_6)
    assert shell == {"nvcc": "/usr/local/cuda/bin/nvcc", "nvcc_version": "12.6", "ld_library_path":
                     ["/usr/local/cuda/lib64"]}
    assert LoginShellCuda.parse("") == {"nvcc": None, "nvcc_version": None, "ld_library_path": []}


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.{}[]\":,=>@ldd\n\tabcunr/-_ so"), max_size=300))
def test_the_parsers_never_crash_on_device_output(text):
    assert DeviceClock.parse(text) is None or isinstance(DeviceClock.parse(text), float)
    server_ = InstalledServer.parse(text)
    assert server_ is None or set(server_) == {"stamp", "ggml", "cudart", "cudart_version"}
    assert set(LoginShellCuda.parse(text)) == {"nvcc", "nvcc_version", "ld_library_path"}
