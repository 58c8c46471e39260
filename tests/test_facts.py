"""Fact parsers and the derived device view, on real captured outputs (tests/fixtures/captured.py)."""

from __future__ import annotations

import pytest

from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.facts import boards
from edgekit.facts.base import gather
from edgekit.facts.cuda import CudaToolkit, parse_arch_override
from edgekit.facts.device import ALL_FACTS, derive, require_supported
from edgekit.facts.jetson import DeviceCompatible, DeviceModel, JetsonRelease, PowerMode
from edgekit.facts.system import DiskSpace, MemInfo, SudoAccess, Tools
from tests.fixtures import captured as cap


def nul_separated(displayed: str) -> str:
    """Undo a terminal capture of device-tree `compatible`: the kernel separates entries with NUL."""
    return "".join("nvidia," + part + "\0" for part in displayed.split("nvidia,") if part)


@pytest.mark.parametrize("text, l4t, jetpack", [
    (cap.NV_TEGRA_RELEASE_R36_4_4, "36.4.4", "6.2.1"),
    (cap.NV_TEGRA_RELEASE_R35_3_1, "35.3.1", "5.1.1"),
    (cap.NV_TEGRA_RELEASE_R34_1_2, "34.1.2", "5.0.1 DP"),
    (cap.NV_TEGRA_RELEASE_R32_7_6_NANO, "32.7.6", "4.6.6"),
    (cap.NV_TEGRA_RELEASE_R32_6_1_AGX_XAVIER, "32.6.1", "4.6"),
    (cap.NV_TEGRA_RELEASE_R32_5_1_TX2, "32.5.1", "4.5"),
    (cap.NV_TEGRA_RELEASE_R39_2_0, "39.2.0", None),
])
def test_nv_tegra_release_to_jetpack(text, l4t, jetpack):
    release = JetsonRelease.parse(text)
    assert release["l4t"] == l4t
    assert boards.jetpack_for(release["l4t"]) == jetpack


def test_nv_tegra_release_absent_or_garbage():
    assert JetsonRelease.parse("") is None
    assert JetsonRelease.parse("cat: /etc/nv_tegra_release: No such file or directory") is None


def test_device_tree_strings_lose_their_nul():
    assert DeviceModel.parse(cap.DT_MODEL_ORIN_NANO_JP5 + "\0") == "NVIDIA Orin Nano Developer Kit"
    assert DeviceModel.parse("") is None
    entries = DeviceCompatible.parse(nul_separated(cap.DT_COMPATIBLE_ORIN_NANO_JP5_AS_DISPLAYED))
    assert entries[0] == "nvidia,p3768-0000+p3767-0003"
    assert entries[-1] == "nvidia,tegra23x"


@pytest.mark.parametrize("compatible, model, name, cc", [
    (cap.DT_COMPATIBLE_ORIN_NANO_JP5_AS_DISPLAYED, cap.DT_MODEL_ORIN_NANO_JP5, "Jetson Orin Nano 8GB", "8.7"),
    (cap.DT_COMPATIBLE_AGX_ORIN_64GB_AS_DISPLAYED, cap.DT_MODEL_AGX_ORIN_JP5, "Jetson AGX Orin 64GB", "8.7"),
    (cap.DT_COMPATIBLE_AGX_ORIN_JP7_AS_DISPLAYED, cap.DT_MODEL_AGX_ORIN_JP7, "Jetson AGX Orin 32GB", "8.7"),
    ("", cap.DT_MODEL_NANO_JP4, "Jetson Nano 4GB", "5.3"),
])
def test_module_from_device_tree(compatible, model, name, cc):
    module = boards.module_for(DeviceCompatible.parse(nul_separated(compatible)), model)
    assert module.name == name
    assert module.compute_capability == cc


def raw_jetson(release: str, model: str, compatible: str, nvcc: str | None = None, mem_gb: float = 7.4) -> dict:
    return {
        "hostname": "jetson", "arch": "aarch64", "cpus": 6, "systemd": True, "sudo": "nopasswd",
        "memory": {"total_bytes": int(mem_gb * 2**30), "available_bytes": int(mem_gb * 0.8 * 2**30),
                   "swap_total_bytes": 0, "swap_free_bytes": 0},
        "l4t": JetsonRelease.parse(release), "dt_model": DeviceModel.parse(model),
        "dt_compatible": DeviceCompatible.parse(nul_separated(compatible)),
        "cuda": CudaToolkit.parse(nvcc) if nvcc else None,
    }


def test_orin_nano_jetpack6_with_cuda_off_path():
    nvcc = "@@nvcc /usr/local/cuda-12.6/bin/nvcc\n" + cap.NVCC_VERSION_JP6_CUDA_12_6
    f = derive("orin", raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, cap.DT_MODEL_ORIN_NANO_JP5,
                                  cap.DT_COMPATIBLE_ORIN_NANO_JP5_AS_DISPLAYED, nvcc))
    assert f.jetson["jetpack"] == "6.2.1"
    assert f.jetson["family"] == "orin"
    assert f.jetson["memory_bandwidth_gbs"] == 68.0
    assert f.gpu == {"cuda_arch": "87", "compute_capability": "8.7", "source": "jetson module table"}
    assert f.cuda["nvcc"] == "/usr/local/cuda-12.6/bin/nvcc"
    assert f.cuda["version"] == "12.6"
    require_supported(f)


def test_orin_nano_4gb_from_model_name_and_ram():
    f = derive("orin", raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, cap.DT_MODEL_ORIN_NANO_JP5, "", mem_gb=3.4))
    assert f.jetson["module"] == "Jetson Orin Nano 4GB"
    assert f.jetson["memory_bandwidth_gbs"] == 34.0


def test_jetson_nano_jetpack4_is_refused_with_reason():
    f = derive("nano", raw_jetson(cap.NV_TEGRA_RELEASE_R32_7_6_NANO, cap.DT_MODEL_NANO_JP4, ""))
    assert f.gpu["cuda_arch"] == "53"
    with pytest.raises(UnsuitableDevice) as e:
        require_supported(f)
    assert "not supported: needs Orin/Xavier (sm_72+)" in e.value.message
    assert e.value.exit_code == 5


def test_non_jetson_host_has_null_jetson():
    f = derive("pc", {"arch": "x86_64", "memory": None, "l4t": None, "dt_model": None, "dt_compatible": []})
    assert f.jetson is None and f.gpu is None
    assert f.to_json()["jetson"] is None


@pytest.mark.parametrize("text, arch", [("compute_87", "87"), ("sm_72", "72"), ("87", "87"), ("8.7", "87"),
                                        (" 90 ", "90"), ("", None), (None, None)])
def test_cuda_arch_override_forms(text, arch):
    assert parse_arch_override(text) == arch


def test_cuda_docker_arch_env_overrides_table(monkeypatch):
    monkeypatch.setenv("CUDA_DOCKER_ARCH", "compute_72")
    f = derive("orin", raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, cap.DT_MODEL_ORIN_NANO_JP5, ""))
    assert f.gpu["cuda_arch"] == "72" and f.gpu["source"] == "override"
    monkeypatch.setenv("CUDA_DOCKER_ARCH", "compute_eighty")
    with pytest.raises(UsageError):
        derive("orin", raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, cap.DT_MODEL_ORIN_NANO_JP5, ""))


@pytest.mark.parametrize("text, version", [
    (cap.NVCC_VERSION_JP5_CUDA_11_4, "11.4"),
    (cap.NVCC_VERSION_JP4_CUDA_10_2_NANO, "10.2"),
])
def test_nvcc_versions(text, version):
    assert CudaToolkit.parse(f"@@nvcc /usr/local/cuda-{version}/bin/nvcc\n{text}")["version"] == version


def test_newest_cuda_toolkit_wins_and_version_json_refines():
    out = ("@@nvcc /usr/local/cuda-11.4/bin/nvcc\n" + cap.NVCC_VERSION_JP5_CUDA_11_4 +
           "@@nvcc /usr/local/cuda-12.6/bin/nvcc\n" + cap.NVCC_VERSION_JP6_CUDA_12_6 +
           '@@json\n{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}\n')
    cuda = CudaToolkit.parse(out)
    assert (cuda["version"], cuda["full_version"], cuda["home"]) == ("12.6", "12.6.68", "/usr/local/cuda-12.6")
    assert CudaToolkit.parse("") is None


def test_power_mode_from_nvpmodel_and_jetson_clocks():
    assert PowerMode.parse("NV Power Mode: 15W\n0\n") == {"name": "15W", "id": 0}
    assert PowerMode.parse("NV Power Mode: MAXN_SUPER\n2") == {"name": "MAXN_SUPER", "id": 2}
    assert PowerMode.parse(cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5)["name"] == "MAXN"
    assert PowerMode.parse("") is None


def test_meminfo_disk_sudo_tools():
    mem = MemInfo.parse("MemTotal:        7803128 kB\nMemFree:          201644 kB\nMemAvailable:    5312232 kB\n"
                        "SwapTotal:       3901552 kB\nSwapFree:        3901552 kB\n")
    assert mem["total_bytes"] == 7803128 * 1024 and mem["swap_total_bytes"] == 3901552 * 1024
    disk = DiskSpace.parse("/opt\nFilesystem        1-blocks       Used   Available Capacity Mounted on\n"
                           "/dev/mmcblk0p1 62000000000 20000000000 40000000000      34% /\n")
    assert disk == {"path": "/opt", "total_bytes": 62000000000, "free_bytes": 40000000000}
    assert SudoAccess.parse("nopasswd\n") == "nopasswd"
    assert SudoAccess.parse("sudo: something odd") == "none"
    tools = Tools.parse("tegrastats /usr/bin/tegrastats\njtop -\n")
    assert tools["tegrastats"] == "/usr/bin/tegrastats" and tools["jtop"] is None


def test_gather_splits_sections_even_without_trailing_newlines():
    seen = []

    def run(script: str) -> str:
        seen.append(script)
        # what a shell prints for: model without newline (device tree), then a release line
        marks = [line.split("'")[1].replace("\\n", "") for line in script.splitlines()]
        return (f"\n{marks[0]}\nNVIDIA Jetson Orin Nano Developer Kit\0"
                f"\n{marks[1]}\n{cap.NV_TEGRA_RELEASE_R36_4_4}\n")

    raw = gather(run, [DeviceModel, JetsonRelease])
    assert len(seen) == 1
    assert raw == {"dt_model": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": {"l4t": "36.4.4", "board": "generic"}}


def test_every_fact_has_a_unique_name():
    names = [f.name for f in ALL_FACTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("board", boards.BOARDS, ids=lambda b: b.slug)
def test_each_board_is_its_module_and_its_identity_says_so(board):
    # the one board table: its module, and the identity a stand-in plants for it reads back as that module
    module = boards.module(board.part)
    assert board.name == module.name.removesuffix(" (developer kit)")
    if board.release:
        assert boards.module_for(list(board.dt_compatible), board.dt_model) == module
        assert JetsonRelease.parse(board.release)["l4t"].count(".") == 2


def test_board_slugs_and_their_older_aliases():
    from edgekit.models import fit
    from edgekit.sandbox import identity

    assert [b.slug for b in boards.BOARDS if b.ram_bytes] == list(fit.BOARDS)
    assert fit.board_total("agx-orin") == ("Jetson AGX Orin 64GB", 62795 * 2**20)
    assert identity.profile("agx-orin").slug == "agx-orin-64gb" and identity.profile("nano").slug == "nano-4gb"
    assert identity.profile("orin-nx-16gb") is None          # no captured identity files for it
    assert boards.board("nosuch") is None and set(identity.PROFILES) <= {b.slug for b in boards.BOARDS}


def test_planted_identity_reads_back_through_the_facts(tmp_path):
    from edgekit.sandbox import identity

    (tmp_path / "etc").mkdir()
    identity.plant(tmp_path, tmp_path / "fw", "orin-nano-4gb")
    dt = tmp_path / "fw" / "devicetree" / "base"
    module = boards.module_for(DeviceCompatible.parse((dt / "compatible").read_text()),
                               DeviceModel.parse((dt / "model").read_text()))
    assert module.name == "Jetson Orin Nano 4GB"
    assert JetsonRelease.parse((tmp_path / "etc/nv_tegra_release").read_text())["l4t"] == "36.4.3"


def test_meminfo_is_read_by_the_telemetry_parser():
    # one /proc/meminfo parser (telemetry.procfs, also on the device); the fact turns its kB into bytes
    assert MemInfo.parse("MemTotal: 1000 kB\nMemFree: 10 kB\nHugePages_Total: 0\n") == {
        "total_bytes": 1024000, "available_bytes": 10240, "swap_total_bytes": 0, "swap_free_bytes": 0}


# -- the tuning view: power mode, clocks, boot target, swap (issue 14 item 6) --------------------------------------
SUPER_CONF = (boards.__file__.rsplit("/facts/", 1)[0] + "/sandbox/jetson_tools/nvpmodel-p3767-0003-super.conf")


def raw_orin_nano_super(mode: dict, clocks: str = cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W_PINNED) -> dict:
    """An Orin Nano 8GB devkit on JetPack 6.2 with NVIDIA's Super nvpmodel.conf, zram plus a disk swap partition."""
    from pathlib import Path

    from edgekit.facts.tuning import DefaultTarget, JetsonClocksShow, NvpmodelConf, SwapBacking, Swaps

    return {**raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, "NVIDIA Jetson Orin Nano Developer Kit",
                         "nvidia,p3768-0000+p3767-0005nvidia,p3767-0005nvidia,tegra234"),
            "power_mode": mode, "nvpmodel_conf": NvpmodelConf.parse(Path(SUPER_CONF).read_text()),
            "jetson_clocks": JetsonClocksShow.parse(clocks),
            "default_target": DefaultTarget.parse(cap.SYSTEMCTL_GET_DEFAULT_ORIN_NANO_HEADLESS),
            "swaps": Swaps.parse(cap.PROC_SWAPS_ZRAM_AND_PARTITION),
            "swap_backing": SwapBacking.parse("@@swap /dev/sda2\nsource=/dev/sda2\ndevice=sda\nmmc_type=\n")}


@pytest.mark.parametrize("mode, gbs", [("15W", 68.0), ("25W", 102.0), ("MAXN_SUPER", 102.0), ("maxn_super", 102.0),
                                       ("7W", 68.0), ("SOMETHING_ELSE", 68.0)])
def test_orin_nano_bandwidth_follows_the_power_mode(mode, gbs):
    # the memory clock cap of each mode in NVIDIA's conf: 15W 2133 MHz (68 GB/s), 25W and MAXN_SUPER 3199 MHz
    f = derive("nano", raw_orin_nano_super({"name": mode, "id": None}))
    assert f.jetson["memory_bandwidth_gbs"] == gbs
    assert f.jetson["memory_bandwidth_max_gbs"] == 102.0


def test_bandwidth_per_mode_in_the_board_table():
    nano4, nx16, agx = boards.module("p3767-0004"), boards.module("p3767-0000"), boards.module("p3701-0005")
    assert (nano4.bandwidth_in("10W"), nano4.bandwidth_in("MAXN_SUPER"), nano4.bandwidth_in(None)) == (34.0, 51.0, 34.0)
    assert (nx16.bandwidth_in("10W"), nx16.bandwidth_in("MAXN_SUPER"), nx16.max_bandwidth_gbs) == (68.0, 102.4, 102.4)
    assert agx.bandwidth_in("MODE_30W") == agx.bandwidth_in("MAXN") == 204.8
    # no power mode known (nvpmodel missing): the module's bandwidth outside the named modes
    f = derive("orin", raw_jetson(cap.NV_TEGRA_RELEASE_R36_4_4, cap.DT_MODEL_ORIN_NANO_JP5, ""))
    assert f.jetson["memory_bandwidth_gbs"] == 68.0 and f.tuning["power_mode"] is None


def test_tuning_view_of_an_orin_nano_super():
    f = derive("nano", raw_orin_nano_super({"name": "25W", "id": 1}))
    assert f.tuning["power_mode"] == {"name": "25W", "id": 1, "max": "MAXN_SUPER", "is_max": False,
                                      "modes": ["15W", "25W", "MAXN_SUPER"], "default": "25W"}
    assert derive("nano", raw_orin_nano_super({"name": "MAXN_SUPER", "id": 2})).tuning["power_mode"]["is_max"] is True
    assert f.tuning["clocks"]["pinned"] is True and f.tuning["clocks"]["emc_override"] is True
    assert (f.tuning["default_target"], f.tuning["headless"]) == ("multi-user", True)
    assert [(s["path"], s["type"], s["kind"], s["device"]) for s in f.tuning["swap"]] == [
        ("/dev/zram0", "zram", "zram", "zram0"), ("/dev/sda2", "partition", "disk", "sda")]
    assert f.tuning["swap"][0]["size_bytes"] == 2993148 * 1024
    assert f.to_json()["tuning"]["power_mode"]["max"] == "MAXN_SUPER"


def test_tuning_view_of_a_plain_linux_host():
    f = derive("pc", {"arch": "x86_64", "l4t": None, "dt_compatible": [], "default_target": "graphical",
                      "swaps": [], "desktop_memory": {"bytes": 3 * 2**20, "processes": {"Xorg": 3 * 2**20}}})
    assert f.tuning["power_mode"] is None and f.tuning["clocks"] is None and f.tuning["swap"] == []
    assert f.tuning["headless"] is False and f.tuning["desktop_bytes"] == 3 * 2**20


def _text(renderable) -> str:
    from rich.console import Console

    console = Console(record=True, width=220, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_facts_table_and_fleet_columns_show_power_mode_clocks_headless_swap():
    from edgekit.cli.facts import facts_table, fleet_facts_table

    nano = derive("orin-1", raw_orin_nano_super({"name": "25W", "id": 1}))
    top = derive("orin-2", raw_orin_nano_super({"name": "MAXN_SUPER", "id": 2}, clocks=cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W))
    pc = derive("pc", {"arch": "x86_64", "l4t": None, "dt_compatible": [], "default_target": "graphical"})
    one = _text(facts_table(nano))
    assert "25W (not the board's max, MAXN_SUPER; modes: 15W, 25W, MAXN_SUPER)" in one
    assert "pinned at the mode's maximum (GPU 612 MHz, memory 3199 MHz)" in one
    assert "102 GB/s in power mode 25W" in one and "yes (boots to multi-user.target)" in one
    assert "/dev/zram0 2.9 GiB (zram, in RAM), /dev/sda2 0.9 GiB (partition on disk sda)" in one
    assert "not pinned (CPU, GPU, memory scaling" in _text(facts_table(top))
    fleet = _text(fleet_facts_table([("orin-1", nano), ("orin-2", top), ("pc", pc)]))
    header = next(line for line in fleet.splitlines() if "host" in line)
    assert [h for h in ("power mode", "clocks", "headless", "swap") if h in header] == \
        ["power mode", "clocks", "headless", "swap"]
    assert "25W (max: MAXN_SUPER)" in fleet and "MAXN_SUPER (max)" in fleet and "not pinned" in fleet
    assert "zram 2.9 GiB, partition 0.9 GiB on disk" in fleet
    row = next(line for line in fleet.splitlines() if line.startswith("│ pc"))
    assert "x86_64 (not a Jetson)" in row and " no " in row


def test_clocks_unknown_says_why():
    from edgekit.cli.facts import clocks_text

    raw = {**raw_orin_nano_super({"name": "15W", "id": 0}), "jetson_clocks": None, "sudo": "password"}
    assert "runs as root only, and sudo asks for a password" in clocks_text(derive("nano", raw))
    assert "is nvidia-l4t-tools installed?" in clocks_text(derive("nano", {**raw, "sudo": "nopasswd"}))
    assert clocks_text(derive("nano", raw), short=True) == "?"
