"""Tuning fact parsers (edgekit/facts/tuning.py) on real captured outputs (tests/fixtures/captured.py)."""

from __future__ import annotations

import pytest

from edgekit.facts.jetson import PowerMode
from edgekit.facts.tuning import (DefaultTarget, DesktopSession, JetsonClocksShow, NvpmodelConf, SwapBacking, Swaps,
                                  Zramctl)
from tests.fixtures import captured as cap

GARBAGE = ["", "\n\n", "bash: nvpmodel: command not found", "cat: /etc/nvpmodel.conf: No such file or directory",
           "\x00\xff binary junk"]


def test_nvpmodel_conf_nano_jp4_with_a_custom_mode():
    conf = NvpmodelConf.parse(cap.NVPMODEL_CONF_NANO_JP4_BIRDEDGE)
    assert conf == {"modes": [{"id": 0, "name": "MAXN"}, {"id": 1, "name": "5W"}, {"id": 2, "name": "BirdEdge"}],
                    "default": 0}


def test_nvpmodel_conf_orin_single_user_mode_and_param_headers_ignored():
    conf = NvpmodelConf.parse(cap.NVPMODEL_CONF_ORIN_NX_CUSTOM)
    assert conf == {"modes": [{"id": 0, "name": "MODE_28_1_W"}], "default": 0}


def test_nvpmodel_conf_skips_the_commented_format_header():
    header = "# < POWER_MODEL ID=id_num NAME=mode_name >\n# < PM_CONFIG DEFAULT=default_mode >\n"
    assert NvpmodelConf.parse(header) is None
    conf = NvpmodelConf.parse(header + cap.NVPMODEL_CONF_NANO_JP4_BIRDEDGE)
    assert [m["id"] for m in conf["modes"]] == [0, 1, 2]


def test_nvpmodel_conf_without_default_section():
    body = cap.NVPMODEL_CONF_NANO_JP4_BIRDEDGE.replace("< PM_CONFIG DEFAULT=0 >", "")
    assert NvpmodelConf.parse(body)["default"] is None


def test_nvpmodel_query_thor_jp7():
    assert PowerMode.parse(cap.NVPMODEL_Q_THOR_JP7) == {"name": "MAXN", "id": 0}


def test_jetson_clocks_show_agx_orin_not_pinned():
    clocks = JetsonClocksShow.parse(cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5)
    assert clocks == {
        "pinned": False, "cpu_pinned": False, "gpu_pinned": False, "emc_pinned": False,
        "cpu_max_khz": 2201600, "gpu_max_hz": 1300500000, "emc_max_hz": 3199000000,
        "emc_override": False, "power_mode": "MAXN",
    }


@pytest.mark.parametrize("before, after", [
    (cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W, cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W_PINNED),
    (cap.JETSON_CLOCKS_SHOW_NANO_JP4, cap.JETSON_CLOCKS_SHOW_NANO_JP4_PINNED),
])
def test_jetson_clocks_pins_the_emc_by_its_override_not_its_min_frequency(before, after):
    # Real runs of `jetson_clocks`: CPU and GPU min rise to max, the EMC keeps its MinFreq and sets FreqOverride=1.
    was, now = JetsonClocksShow.parse(before), JetsonClocksShow.parse(after)
    assert (was["pinned"], was["cpu_pinned"], was["gpu_pinned"], was["emc_pinned"]) == (False, False, False, False)
    assert (now["pinned"], now["cpu_pinned"], now["gpu_pinned"], now["emc_pinned"]) == (True, True, True, True)
    assert now["emc_override"] is True and was["emc_override"] is False
    assert "EMC MinFreq=204000000 " in after                         # min == max never holds for the EMC
    assert now["emc_max_hz"] == was["emc_max_hz"] and now["power_mode"] == was["power_mode"]


def test_jetson_clocks_agx_orin_30w_caps_and_offline_cores():
    clocks = JetsonClocksShow.parse(cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W_PINNED)
    # cpu8-11 are offline in 30W (MaxFreq 2201600 there): the online cores' cap is the mode's 1728000
    assert (clocks["cpu_max_khz"], clocks["gpu_max_hz"], clocks["emc_max_hz"]) == (1728000, 612000000, 3199000000)
    assert clocks["power_mode"] == "MODE_30W"


def test_jetson_clocks_without_the_override_flag_falls_back_to_min_equals_max():
    # Output without FreqOverride (derived from the AGX Orin capture by dropping the flag): min == max decides.
    text = cap.JETSON_CLOCKS_SHOW_AGX_ORIN_30W_PINNED.replace(" FreqOverride=1", "")
    assert JetsonClocksShow.parse(text)["emc_pinned"] is False and JetsonClocksShow.parse(text)["pinned"] is False
    text = text.replace("EMC MinFreq=204000000", "EMC MinFreq=3199000000")
    assert JetsonClocksShow.parse(text)["emc_override"] is None and JetsonClocksShow.parse(text)["pinned"] is True


def test_jetson_clocks_show_ignores_offline_cpus():
    text = cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5.replace(
        "cpu11: Online=1 Governor=schedutil MinFreq=729600", "cpu11: Online=0 Governor=schedutil MinFreq=729600")
    text = text.replace("MinFreq=729600 MaxFreq=2201600", "MinFreq=2201600 MaxFreq=2201600")
    assert JetsonClocksShow.parse(text)["cpu_pinned"] is True


def test_proc_swaps_zram_and_partition():
    assert Swaps.parse(cap.PROC_SWAPS_ZRAM_AND_PARTITION) == [
        {"path": "/dev/zram0", "type": "partition", "size_bytes": 2993148 * 1024, "used_bytes": 239872 * 1024,
         "priority": 100, "zram": True},
        {"path": "/dev/sda2", "type": "partition", "size_bytes": 976892 * 1024, "used_bytes": 0,
         "priority": -2, "zram": False},
    ]
    only = Swaps.parse(cap.PROC_SWAPS_ZRAM_ONLY)
    assert [(s["path"], s["zram"], s["used_bytes"]) for s in only] == [("/dev/zram0", True, 7475912 * 1024)]


def test_proc_swaps_header_only_means_no_swap():
    header = cap.PROC_SWAPS_ZRAM_ONLY.splitlines()[0]
    assert Swaps.parse(header) == []


@pytest.mark.parametrize("text, expected", [
    (cap.ZRAMCTL_DEFAULT_ONE_DEVICE,
     [("/dev/zram0", "lzo-rle", int(2.9 * 1024**3), int(1.5 * 1024**2), 4, "[SWAP]")]),
    (cap.ZRAMCTL_DEFAULT_LZ4_8G,
     [("/dev/zram0", "lz4", 8 * 1024**3, int(2.3 * 1024**3), 12, "[SWAP]")]),
    (cap.ZRAMCTL_DEFAULT_EMPTY_STREAMS,
     [("/dev/zram0", "zstd", int(1.9 * 1024**3), 4 * 1024, None, "[SWAP]")]),
])
def test_zramctl_default_table(text, expected):
    got = [(d["name"], d["algorithm"], d["disksize_bytes"], d["data_bytes"], d["streams"], d["mountpoint"])
           for d in Zramctl.parse(text)]
    assert got == expected


def test_zramctl_empty_streams_cell_does_not_shift_columns():
    (dev,) = Zramctl.parse(cap.ZRAMCTL_DEFAULT_EMPTY_STREAMS)
    assert (dev["compr_bytes"], dev["total_bytes"]) == (64, 20 * 1024)


def test_zramctl_one_device_per_core():
    devices = Zramctl.parse(cap.ZRAMCTL_DEFAULT_FOUR_DEVICES)
    assert [d["name"] for d in devices] == [f"/dev/zram{i}" for i in range(4)]
    assert {d["algorithm"] for d in devices} == {"lzo"}
    assert devices[0]["compr_bytes"] == 490 and devices[3]["total_bytes"] == 100 * 1024
    assert sum(d["disksize_bytes"] for d in devices) == 4 * int(243.9 * 1024**2)


def test_zramctl_header_only_means_no_devices():
    assert Zramctl.parse(cap.ZRAMCTL_DEFAULT_ONE_DEVICE.splitlines()[0]) == []


@pytest.mark.parametrize("text, target", [
    (cap.SYSTEMCTL_GET_DEFAULT_ORIN_NANO_HEADLESS, "multi-user"),
    (cap.SYSTEMCTL_GET_DEFAULT_UBUNTU_DESKTOP, "graphical"),
    (cap.SYSTEMCTL_GET_DEFAULT_UBUNTU_DESKTOP + "\n", "graphical"),
])
def test_default_target(text, target):
    assert DefaultTarget.parse(text) == target


@pytest.mark.parametrize("text", GARBAGE + ["System has not been booted with systemd as init system (PID 1). Can't operate."])
def test_empty_or_garbage_input(text):
    assert NvpmodelConf.parse(text) is None
    assert PowerMode.parse(text) is None
    assert JetsonClocksShow.parse(text) is None
    assert Swaps.parse(text) == []
    assert Zramctl.parse(text) == []
    assert DefaultTarget.parse(text) is None


def test_fact_names_are_unique_and_commands_set():
    facts = [NvpmodelConf, PowerMode, JetsonClocksShow, Swaps, SwapBacking, Zramctl, DefaultTarget, DesktopSession]
    assert len({f.name for f in facts}) == len(facts)
    assert all(f.command for f in facts)


def test_nvpmodel_conf_is_read_by_the_one_conf_parser():
    # NvpmodelConf is the facts-layer view of edgekit.facts.power_modes.parse_conf: same modes, same default
    from pathlib import Path

    from edgekit.facts.power_modes import parse_conf

    text = (Path(__file__).resolve().parents[1] / "edgekit/sandbox/jetson_tools/nvpmodel-p3767-0003-super.conf").read_text()
    conf, table = NvpmodelConf.parse(text), parse_conf(text)
    assert conf == {"modes": [{"id": 0, "name": "15W"}, {"id": 1, "name": "25W"}, {"id": 2, "name": "MAXN_SUPER"}],
                    "default": 1}
    assert [(m.id, m.name) for m in table.modes] == [(m["id"], m["name"]) for m in conf["modes"]]


def test_swap_backing_names_the_storage_under_each_swap():
    # SwapBacking's own probe output (its command prints @@swap PATH, then findmnt/lsblk/sysfs values)
    out = ("@@swap /swapfile\nsource=/dev/mmcblk0p1\ndevice=mmcblk0\nmmc_type=MMC\n"
           "@@swap /mnt/nvme/swapfile\nsource=/dev/nvme0n1p1\ndevice=nvme0n1\nmmc_type=\n"
           "@@swap /dev/mmcblk1p2\nsource=/dev/mmcblk1p2\ndevice=mmcblk1\nmmc_type=SD\n"
           "@@swap /dev/sda2\nsource=/dev/sda2\ndevice=\nmmc_type=\n")
    found = SwapBacking.parse(out)
    assert {p: b["kind"] for p, b in found.items()} == {
        "/swapfile": "eMMC", "/mnt/nvme/swapfile": "NVMe", "/dev/mmcblk1p2": "SD", "/dev/sda2": "disk"}
    assert found["/dev/sda2"]["device"] == "sda"                  # no lsblk parent: the partition's own disk
    assert SwapBacking.parse("") == {} and "/dev/zram*) continue" in SwapBacking.command


def test_desktop_session_memory_from_ps():
    ps = "  81236 Xorg\n 204800 gnome-shell\n  10240 gsd-power\n   5120 sshd\n   2048 gsd-color\n bogus line\n"
    mem = DesktopSession.parse(ps)
    assert mem["processes"] == {"Xorg": 81236 * 1024, "gnome-shell": 204800 * 1024, "gsd-power": 10240 * 1024,
                                "gsd-color": 2048 * 1024}
    assert mem["bytes"] == (81236 + 204800 + 10240 + 2048) * 1024
    assert DesktopSession.parse("") == {"bytes": 0, "processes": {}}
