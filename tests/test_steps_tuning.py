"""The Jetson tuning steps (edgekit/tuning) on fake facts, no SSH: each Noop and Change branch, the refusals, and what
a Change runs equals what the dry run printed (tests/steps_harness.py).

Facts are handed in parsed from text: NVIDIA's own nvpmodel confs for the Orin Nano 8GB (with and without the
JetPack 6.2 Super modes, edgekit/sandbox/jetson_tools/*.conf, sources in their headers), captured outputs from
tests/fixtures/captured.py, and the stand-in jetson_clocks' output format (tests/test_jetson_tools.py runs it).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgekit import layout as L
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice, UsageError
from edgekit.facts.deployed import FileText, UnitState
from edgekit.facts.jetson import JetsonRelease
from edgekit.remote.command import Upload
from edgekit.remote.plan import Change, Noop
from edgekit.remote.run_state import RunState
from edgekit.tuning import TuningOptions, restore_tuning_commands, tuning_checks, tuning_steps
from edgekit.tuning.facts import (BackingDevice, BootTarget, ClocksState, CurrentPowerMode, DesktopMemory,
                                  PowerModeTable, SwapFile, SwapState, TuningRecords, storage_kind)
from edgekit.facts.power_modes import parse_conf, reboot_expected, resolve, status_with
from edgekit.tuning.steps import ClocksMax, Headless, PowerMode, Swap, TuningChecks, clocks_unit, parse_size
from tests.fixtures import captured as cap
from tests.steps_harness import context, plan_and_apply
from tests.test_build import jetson_facts

TOOLS = Path(__file__).resolve().parents[1] / "edgekit" / "sandbox" / "jetson_tools"
SUPER_CONF = (TOOLS / "nvpmodel-p3767-0003-super.conf").read_text()      # 15W=0, 25W=1, MAXN_SUPER=2
JP60_CONF = (TOOLS / "nvpmodel-p3767-0003.conf").read_text()             # 15W=0, 7W=1 (7W gates more GPU)
BOOT = "5d3a2c8e-0b7e-4a37-9a0e-2f4f5bd1c001"


def query(name: str, mode_id: int, boot: str = BOOT, status: bool = True) -> str:
    """What CurrentPowerMode's command prints: `nvpmodel -q` (captured format), the status file, the boot id."""
    return (f"NV Power Mode: {name}\n{mode_id}\n@@status\n" + (f"pmode:{mode_id:04d}\n" if status else "")
            + f"@@boot\n{boot}\n")


def orin_nano(l4t: str = "36.4.4") -> RunState:
    facts = jetson_facts()
    return RunState(facts=dataclasses.replace(facts, jetson={**facts.jetson, "l4t": l4t}))


def power_given(name="25W", mode_id=1, conf=SUPER_CONF, records=None, boot=BOOT):
    return {PowerModeTable(): PowerModeTable.parse(conf),
            CurrentPowerMode(): CurrentPowerMode.parse(query(name, mode_id, boot)), TuningRecords(): records or {}}


def answer_mode(name: str, mode_id: int):
    """The device after the switch: `nvpmodel -q` reports the new mode; the switch itself prints nothing."""
    return lambda command: query(name, mode_id) if command.startswith("nvpmodel -q") else ""


# -- power mode ------------------------------------------------------------------------------------------------------

def test_power_mode_already_set_is_a_noop():
    dry, _, ctx = plan_and_apply(PowerMode("MAXN_SUPER"), power_given("MAXN_SUPER", 2), run=orin_nano)
    assert isinstance(dry, Noop) and dry.reason == "power mode MAXN_SUPER (id 2)"
    assert ctx.run.tuning.power_mode == "MAXN_SUPER"


def test_maxn_super_is_resolved_from_the_conf_recorded_once_and_verified():
    dry, real, ctx = plan_and_apply(PowerMode("MAXN_SUPER"), power_given(), answer=answer_mode("MAXN_SUPER", 2),
                                    run=orin_nano)
    assert isinstance(dry, Change) and dry.summary == "power mode 25W → MAXN_SUPER (id 2)"
    assert dry.shown[0] == f"install -d -m 0700 {L.TUNING_DIR}"
    assert dry.shown[1].startswith(f"upload → {L.TUNING_DIR}/power-mode.json (0600 root, ")
    assert dry.shown[2] == "nvpmodel -m 2 </dev/null"          # id from the conf; a reboot prompt gets end-of-file
    assert json.loads(ctx.transport.ran[1].data) == {"id": 1, "name": "25W"}
    assert ctx.reads == [CurrentPowerMode.command] and ctx.run.tuning.power_mode == "MAXN_SUPER"


def test_original_mode_is_recorded_only_before_the_first_change():
    given = power_given(records={"power_mode": {"id": 1, "name": "25W"}})
    dry, _, _ = plan_and_apply(PowerMode("15W"), given, answer=answer_mode("15W", 0), run=orin_nano)
    assert dry.shown == ["nvpmodel -m 0 </dev/null"]


@pytest.mark.parametrize("asked,mode", [("max", "MAXN_SUPER"), ("efficient", "15W"), ("maxn_super", "MAXN_SUPER"),
                                        ("25w", "25W")])
def test_names_max_and_efficient_resolve_on_the_board(asked, mode):
    table = parse_conf(SUPER_CONF)
    assert resolve(asked, table)[0].name == mode


def test_max_and_efficient_on_other_confs():
    nano = parse_conf(cap.NVPMODEL_CONF_NANO_JP4_BIRDEDGE)           # MAXN, 5W and a custom mode without watts
    assert (resolve("max", nano)[0].name, resolve("efficient", nano)[0].name) == ("MAXN", "5W")
    custom = parse_conf(cap.NVPMODEL_CONF_ORIN_NX_CUSTOM)             # one mode: MODE_28_1_W (28.1 W)
    assert resolve("efficient", custom)[0].watts == 28.1
    note = resolve("max", parse_conf(JP60_CONF), "36.3.0", "p3767-0005")[1]
    assert "15W here" in note and "JetPack 6.2 (L4T 36.4.3)" in note and "36.3.0" in note


def test_unknown_mode_is_refused_listing_the_boards_modes():
    with pytest.raises(UnsuitableDevice, match=r"no power mode '30W'; its modes are 15W \(id 0\), 25W \(id 1\), "
                                               r"MAXN_SUPER \(id 2\)") as info:
        plan_and_apply(PowerMode("30W"), power_given(), run=orin_nano)
    assert "max" in info.value.hint


def test_super_mode_on_an_older_jetpack_says_it_needs_jetpack_6_2():
    with pytest.raises(UnsuitableDevice, match=r"need JetPack 6.2 \(L4T 36.4.3\) or later; this board runs L4T 36.3"):
        plan_and_apply(PowerMode("MAXN_SUPER"), power_given("15W", 0, conf=JP60_CONF), run=lambda: orin_nano("36.3.0"))


def test_maxn_super_before_jetpack_6_2_is_refused_even_when_the_conf_lists_it():
    """The defect of issue 20: a conf with MAXN_SUPER (id 2) on L4T R36.3 planned `nvpmodel -m 2`. Refused (exit 5)
    naming JetPack 6.2 / L4T 36.4.3, with nothing run; from preflight's facts or, without them, from
    /etc/nv_tegra_release itself."""
    for run, given in ((lambda: orin_nano("36.3.0"), power_given()),
                       (None, {**power_given(), JetsonRelease(): JetsonRelease.parse(cap.NV_TEGRA_RELEASE_R36_3)})):
        with pytest.raises(UnsuitableDevice, match=r"MAXN_SUPER is refused on this board: the Super modes "
                                                   r"\(MAXN_SUPER\) need JetPack 6.2 \(L4T 36.4.3\) or later; this "
                                                   r"board runs L4T 36.3.0") as info:
            plan_and_apply(PowerMode("MAXN_SUPER"), given, run=run)
        assert info.value.exit_code == 5 and "JetPack 6.2" in info.value.hint
        with pytest.raises(UnsuitableDevice, match="JetPack 6.2"):        # the check before any change says it too
            plan_and_apply(TuningChecks([PowerMode("maxn_super")]), given, run=run)
    # `max` there is the best mode the release allows, and says why
    mode, note = resolve("max", parse_conf(SUPER_CONF), "36.3.0", "p3767-0005")
    assert mode.name == "25W" and "need JetPack 6.2 (L4T 36.4.3)" in note
    assert resolve("MAXN_SUPER", parse_conf(SUPER_CONF), "36.4.3")[0].id == 2       # from JetPack 6.2 on
    assert resolve("MAXN_SUPER", parse_conf(SUPER_CONF), None)[0].id == 2           # release unknown: not refused


def test_a_bare_mode_id_is_refused_as_not_portable():
    with pytest.raises(UsageError, match="name a mode, not an id"):
        plan_and_apply(PowerMode("2"), power_given(), run=orin_nano)


def test_a_device_without_nvpmodel_conf_is_refused():
    with pytest.raises(UnsuitableDevice, match="no /etc/nvpmodel.conf"):
        plan_and_apply(PowerMode("max"), {PowerModeTable(): None})


def test_a_switch_that_gates_the_gpu_differently_is_set_for_the_next_boot():
    dry, _, ctx = plan_and_apply(PowerMode("7W"), power_given("15W", 0, conf=JP60_CONF), run=orin_nano)
    assert "from the next boot" in dry.summary and "does not reboot" in dry.summary
    assert not any(str(op).startswith("nvpmodel -m") for op in dry.commands)
    status, pending = ctx.transport.ran[2], ctx.transport.ran[3]
    assert (status.dest, status.data) == (L.NVPMODEL_STATUS, b"pmode:0001\n")
    assert json.loads(pending.data) == {"id": 1, "name": "7W", "boot_id": BOOT}
    assert ctx.run.tuning.after_reboot == ["power mode 7W"] and dry.detail["reboot"] is True


def test_a_mode_set_for_the_next_boot_is_a_noop_until_the_reboot_then_checked():
    pending = {"power_mode": {"id": 0, "name": "15W"}, "power_mode_pending": {"id": 1, "name": "7W", "boot_id": BOOT}}
    dry, _, _ = plan_and_apply(PowerMode("7W"), power_given("15W", 0, conf=JP60_CONF, records=pending), run=orin_nano)
    assert isinstance(dry, Noop) and "set for the next boot" in dry.reason and "sudo reboot" in dry.reason
    with pytest.raises(UnsuitableDevice, match="did not apply it at boot") as info:
        plan_and_apply(PowerMode("7W"), power_given("15W", 0, conf=JP60_CONF, records=pending, boot="other-boot"),
                       run=orin_nano)
    assert "sudo nvpmodel -m 1" in info.value.hint


def test_an_unexpected_reboot_prompt_is_declined_and_reported():
    prompt = ("NVPM WARN: Reboot required for changing to this power mode: 2\n"
              "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:\nNVPM ERROR: bad input!\n")
    ctx = context(power_given(), answer=lambda c: (255, prompt) if c.startswith("nvpmodel -m") else "", run=orin_nano())
    change = PowerMode("MAXN_SUPER").plan(ctx)
    with pytest.raises(UnsuitableDevice, match="asks for a reboot") as info:
        change.apply(ctx)
    assert "sudo nvpmodel -m 2" in info.value.hint


def test_a_switch_that_did_not_take_fails_with_what_nvpmodel_reports():
    ctx = context(power_given(), answer=answer_mode("25W", 1), run=orin_nano())
    with pytest.raises(RemoteCommandFailed, match="did not switch"):
        PowerMode("MAXN_SUPER").plan(ctx).apply(ctx)


def test_reboot_rule_and_status_file_text():
    super_modes, jp60 = parse_conf(SUPER_CONF), parse_conf(JP60_CONF)
    assert not reboot_expected(super_modes.by_id(1), super_modes.by_id(2))
    assert reboot_expected(jp60.by_id(0), jp60.by_id(1)) and not reboot_expected(None, jp60.by_id(1))
    assert status_with(None, 2) == "pmode:0002\n"
    assert status_with("pmode:0000 fmode:quiet\n", 2) == "pmode:0002 fmode:quiet\n"


def test_current_mode_fact_without_nvpmodel_reads_the_status_file():
    got = CurrentPowerMode.parse("@@status\npmode:0002\n@@boot\nb\n")
    assert got == {"name": None, "id": 2, "status": "pmode:0002\n", "status_id": 2, "boot_id": "b"}
    thor = CurrentPowerMode.parse(cap.NVPMODEL_Q_THOR_JP7 + "\n@@status\n@@boot\nb\n")
    assert (thor["name"], thor["id"], thor["status"]) == ("MAXN", 0, None)


# -- clocks ----------------------------------------------------------------------------------------------------------

PINNED = """SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super
Online CPUs: 0-5
cpu0: Online=1 Governor=schedutil MinFreq=1728000 MaxFreq=1728000 CurrentFreq=1728000 IdleStates: WFI=0 c7=0 
GPU MinFreq=1020000000 MaxFreq=1020000000 CurrentFreq=1020000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
NV Power Mode: MAXN_SUPER"""
CLOCKS_UNIT = f"{L.CLOCKS_UNIT_NAME}.service"


def clocks_given(show=PINNED, unit="rendered", enabled=True, records=None):
    return {ClocksState(): ClocksState.parse(show),
            FileText(L.CLOCKS_UNIT_PATH): clocks_unit() if unit == "rendered" else unit,
            UnitState(CLOCKS_UNIT): {"UnitFileState": "enabled" if enabled else "disabled"},
            TuningRecords(): records or {}}


def test_clocks_pinned_with_the_unit_enabled_is_a_noop():
    dry, _, _ = plan_and_apply(ClocksMax(), clocks_given())
    assert isinstance(dry, Noop) and "before edgekit-llama-server" in dry.reason


def test_clocks_count_as_pinned_by_the_emc_override_not_its_min_frequency():
    show = ClocksState.parse(PINNED)
    assert show["pinned"] and show["emc_pinned"] and show["emc_override"]      # the override is the pin
    assert ClocksState.parse(cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5)["pinned"] is False
    assert ClocksState.parse("jetson_clocks: command not found") is None


def test_clocks_first_time_store_unit_enable_and_pin_in_that_order():
    given = clocks_given(cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5, unit=None, enabled=False)
    dry, _, ctx = plan_and_apply(ClocksMax(), given)
    assert [str(op).split(" (")[0] for op in dry.commands] == [
        f"install -d -m 0700 {L.TUNING_DIR}", f"upload → {L.TUNING_DIR}/clocks.json",
        f"jetson_clocks --store {L.CLOCKS_STORE}", f"upload → {L.CLOCKS_UNIT_PATH}", "systemctl daemon-reload",
        f"systemctl enable {CLOCKS_UNIT}", "jetson_clocks"]
    assert json.loads(ctx.transport.ran[1].data) == {"pinned": False, "unit": False}
    assert "GPU max 1300 MHz" in dry.summary and "power mode MAXN" in dry.summary


def test_clocks_unpinned_after_a_mode_change_are_only_pinned_again():
    records = {"clocks": {"pinned": False, "unit": False}, "clocks_store": True}
    _, _, ctx = plan_and_apply(ClocksMax(), clocks_given(cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5, records=records))
    assert ctx.transport.ran == ["jetson_clocks"]


def test_clocks_are_pinned_again_after_a_live_mode_switch_in_the_same_run():
    given = clocks_given(records={"clocks": {"pinned": True}})
    dry, _, ctx = plan_and_apply(ClocksMax(), given, changed={"power mode"})
    assert dry.shown == ["jetson_clocks"]
    later = RunState()
    later.tuning.after_reboot.append("power mode 7W")               # a switch set for the next boot resets nothing now
    assert isinstance(plan_and_apply(ClocksMax(), clocks_given(), changed={"power mode"}, run=lambda: later)[0], Noop)


def test_clocks_unit_is_a_oneshot_ordered_before_the_server():
    unit = clocks_unit()
    for line in ("Type=oneshot", "ExecStart=/usr/bin/jetson_clocks", "Before=edgekit-llama-server.service",
                 "After=nvpmodel.service", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()


def test_clocks_without_jetson_clocks_are_refused():
    with pytest.raises(UnsuitableDevice, match="jetson_clocks"):
        plan_and_apply(ClocksMax(), {ClocksState(): None})


# -- headless --------------------------------------------------------------------------------------------------------

# Plausible `ps -eo rss=,comm=` of an Orin Nano showing its GNOME desktop: written for this test (process names from
# Ubuntu 22.04's GNOME session, sizes invented), NOT a capture from a board: none was found.
PS_DESKTOP_PLAUSIBLE = """ 12256 systemd
  9876 sshd
 71234 Xorg
254321 gnome-shell
 10240 gdm3
  8192 gdm-session-wor
 30720 gsd-color
 20480 gsd-media-keys
 40960 nautilus-deskto
 15360 ibus-daemon
 25600 evolution-alarm
  4096 bash"""


def test_headless_already_is_a_noop():
    target = BootTarget.parse(cap.SYSTEMCTL_GET_DEFAULT_ORIN_NANO_HEADLESS)
    dry, _, _ = plan_and_apply(Headless(), {BootTarget(): target})
    assert isinstance(dry, Noop) and dry.reason == "boots to multi-user.target (no desktop)"


def test_headless_sets_multi_user_records_graphical_and_says_what_the_desktop_holds():
    given = {BootTarget(): BootTarget.parse(cap.SYSTEMCTL_GET_DEFAULT_UBUNTU_DESKTOP),
             DesktopMemory(): DesktopMemory.parse(PS_DESKTOP_PLAUSIBLE), TuningRecords(): {}}
    dry, _, ctx = plan_and_apply(Headless(), given)
    assert ctx.transport.ran[-1] == "systemctl set-default multi-user.target"
    assert json.loads(ctx.transport.ran[1].data) == "graphical.target"
    assert "the desktop session holds 466 MiB now" in dry.summary and "from the next boot" in dry.summary
    assert ctx.run.tuning.desktop_bytes == 477107 * 1024 and "sshd" not in dry.detail["processes"]


def test_headless_without_a_default_target_is_refused():
    with pytest.raises(UnsuitableDevice, match="get-default"):
        plan_and_apply(Headless(), {BootTarget(): None})


# -- swap ------------------------------------------------------------------------------------------------------------

NVME = "source=/dev/nvme0n1p1\ndevice=nvme0n1\nmmc_type=\n"
SD = "source=/dev/mmcblk0p1\ndevice=mmcblk0\nmmc_type=SD\n"
NO_FILE = "fstab=\n"
OUR_FILE = "stat=8589934592 600\ntype=swap\nfstab=swap\n"
SWAPFILE_ON = cap.PROC_SWAPS_ZRAM_ONLY.splitlines()[0] + "\n/swapfile file 8388604 0 -2"


def swap_given(backing=NVME, swaps=cap.PROC_SWAPS_ZRAM_ONLY, zram="enabled", swapfile=NO_FILE, records=None):
    return {BackingDevice("/swapfile"): BackingDevice.parse(backing), SwapState(): SwapState.parse(swaps),
            UnitState(L.ZRAM_UNIT): {"UnitFileState": zram}, SwapFile("/swapfile"): SwapFile.parse(swapfile),
            TuningRecords(): records or {}}


def test_swap_on_an_sd_card_is_refused_saying_why_unless_forced():
    with pytest.raises(UnsuitableDevice, match=r"on SD \(/dev/mmcblk0p1\).*wears.*17 to under 2") as info:
        plan_and_apply(Swap("8G"), swap_given(SD))
    assert "NVMe drive" in info.value.hint and "force swap on eMMC/SD" in info.value.hint
    dry, _, _ = plan_and_apply(Swap("8G", force=True), swap_given(SD))
    assert isinstance(dry, Change) and "on SD" in dry.summary


def test_swap_file_made_zram_off_and_fstab_line_added_atomically():
    dry, _, ctx = plan_and_apply(Swap("8G"), swap_given(), run=RunState)
    tmp = "/swapfile.edgekit-tmp"
    assert dry.shown[3:] == [
        "systemctl disable nvzramconfig.service", "swapoff /dev/zram0", f"rm -f {tmp}",
        f"fallocate -l 8589934592 {tmp}",
        f"chmod 600 {tmp}", f"mkswap {tmp}", f"mv -f {tmp} /swapfile", "swapon /swapfile",
        "cp -p /etc/fstab /etc/fstab.edgekit-tmp && printf '%s\\n' '/swapfile none swap sw 0 0' >> "
        "/etc/fstab.edgekit-tmp && mv -f /etc/fstab.edgekit-tmp /etc/fstab"]
    records = {u.dest.rsplit("/", 1)[1]: json.loads(u.data) for u in ctx.transport.ran if isinstance(u, Upload)}
    assert records == {"zram.json": {"nvzramconfig": "enabled", "devices": ["/dev/zram0"]},
                       "swap.json": {"path": "/swapfile", "size": 8589934592}}
    assert dry.summary == "zram swap off (/dev/zram0); swap file /swapfile (8192 MiB) on NVMe"
    assert ctx.run.tuning.zram_swap_bytes == 8388604 * 1024 and ctx.run.tuning.swap_bytes == 8 * 2**30


def test_swap_in_place_with_zram_off_is_a_noop():
    dry, _, _ = plan_and_apply(Swap("8G"), swap_given(swaps=SWAPFILE_ON, zram="disabled", swapfile=OUR_FILE,
                                                      records={"swap": {"path": "/swapfile"}}))
    assert isinstance(dry, Noop)
    assert dry.reason == "swap file /swapfile (8192 MiB) on NVMe, on and in /etc/fstab; zram off"


def test_swap_file_of_ours_off_after_a_reboot_without_fstab_is_only_turned_on():
    given = swap_given(swaps="Filename Type Size Used Priority", zram="",
                       swapfile="stat=8589934592 600\ntype=swap\nfstab=\n", records={"swap": {"path": "/swapfile"}})
    _, _, ctx = plan_and_apply(Swap("8G"), given)
    assert ctx.transport.ran[0] == "swapon /swapfile" and "fstab" in ctx.transport.ran[1]


def test_swap_refuses_a_file_it_did_not_make():
    with pytest.raises(UnsuitableDevice, match="is not a swap file"):
        plan_and_apply(Swap("8G"), swap_given(swapfile="stat=1000 644\ntype=\nfstab=\n"))
    with pytest.raises(UnsuitableDevice, match="4096 MiB that edgekit did not make"):
        plan_and_apply(Swap("8G"), swap_given(swapfile="stat=4294967296 600\ntype=swap\nfstab=swap\n"))
    with pytest.raises(UnsuitableDevice, match="keeps a swap file at /ssd/swap on orin already") as info:
        plan_and_apply(Swap("8G"), swap_given(records={"swap": {"path": "/ssd/swap"}}))
    assert info.value.hint == "keep the swap path /ssd/swap"


@pytest.mark.parametrize("text,size", [("8G", 8 * 2**30), ("16GiB", 16 * 2**30), ("4096M", 4 * 2**30),
                                       ("512MiB", 512 * 2**20)])
def test_swap_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["8 bananas", "-1G", "10M", ""])
def test_swap_sizes_refused(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_backing_device_kinds():
    assert BackingDevice.parse(SD)["kind"] == "SD"
    assert BackingDevice.parse("source=/dev/mmcblk0p1\ndevice=mmcblk0\nmmc_type=MMC\n")["kind"] == "eMMC"
    assert BackingDevice.parse("source=/dev/mmcblk1p1\ndevice=\nmmc_type=\n") == \
        {"source": "/dev/mmcblk1p1", "device": "mmcblk1", "kind": "eMMC or SD"}
    assert BackingDevice.parse(NVME)["kind"] == "NVMe" and storage_kind("sda1") == "disk"
    assert BackingDevice.parse("source=overlay\ndevice=overlay\n")["kind"] == "unknown"


# -- checks, options, restore ----------------------------------------------------------------------------------------

def test_tuning_checks_refuse_before_any_change_and_say_what_they_found():
    steps = tuning_steps(TuningOptions(power_mode="max", clocks="max", headless=True, swap="8G"))
    assert [type(s) for s in steps] == [PowerMode, ClocksMax, Headless, Swap]
    given = {**power_given(), **clocks_given(), **swap_given(),
             BootTarget(): BootTarget.parse(cap.SYSTEMCTL_GET_DEFAULT_UBUNTU_DESKTOP),
             DesktopMemory(): DesktopMemory.parse(PS_DESKTOP_PLAUSIBLE)}
    dry, _, ctx = plan_and_apply(TuningChecks(steps), given, run=orin_nano)
    assert dry.reason == ("power mode MAXN_SUPER (id 2): `max` is MAXN_SUPER here; jetson_clocks present; "
                          "boots to graphical.target; swap 8192 MiB at /swapfile on NVMe")
    assert ctx.transport.ran == []                                  # checks change nothing
    tuning = ctx.run.tuning                                         # for the fit check after it
    assert (tuning.desktop_bytes, tuning.zram_swap_bytes, tuning.swap_bytes) == (477107 * 1024, 8388604 * 1024,
                                                                                 8 * 2**30)
    with pytest.raises(UnsuitableDevice, match="on SD"):
        plan_and_apply(TuningChecks(steps), {**given, BackingDevice("/swapfile"): BackingDevice.parse(SD)},
                       run=orin_nano)
    assert tuning_checks(TuningOptions()) == []
    assert isinstance(tuning_checks(TuningOptions(headless=True))[0], TuningChecks)


@pytest.mark.parametrize("options,match", [(TuningOptions(clocks="fast"), "only value is `max`"),
                                           (TuningOptions(power_mode=" "), "needs a mode"),
                                           (TuningOptions(swap="lots"), "cannot read swap size"),
                                           (TuningOptions(force_swap_on_sd=True), "without --swap")])
def test_options_refused_before_connecting(options, match):
    with pytest.raises(UsageError, match=match):
        tuning_steps(options)


def test_restore_puts_back_what_was_recorded_in_order():
    records = TuningRecords.parse(
        "@@file clocks.json\n{\"pinned\": false, \"unit\": false}\n"
        "@@file power-mode.json\n{\"id\": 1, \"name\": \"25W\"}\n"
        "@@file default-target.json\n\"graphical.target\"\n@@file swap.json\n{\"path\": \"/swapfile\", \"size\": 1}\n"
        "@@file zram.json\n{\"devices\": [\"/dev/zram0\"], \"nvzramconfig\": \"enabled\"}\n@@file junk.json\n{\n"
        "@@clocks-store\n")
    commands = restore_tuning_commands(records)
    assert commands[0].startswith(f"systemctl disable --now {CLOCKS_UNIT} 2>/dev/null; rm -f {L.CLOCKS_UNIT_PATH}")
    assert commands[1] == f"jetson_clocks --restore {L.CLOCKS_STORE}"
    assert commands[2].startswith("out=$(nvpmodel -m 1 </dev/null 2>&1)") and "pmode:%04d" in commands[2]
    assert commands[3] == "systemctl set-default graphical.target"
    assert "awk -v p=/swapfile '$1 != p' /etc/fstab" in commands[4] and commands[4].endswith("rm -f /swapfile")
    assert commands[5] == "systemctl enable nvzramconfig.service && systemctl start nvzramconfig.service"
    assert commands[6] == f"rm -rf {L.TUNING_DIR}" and len(commands) == 7
    assert restore_tuning_commands({}) == []
    pinned_before = restore_tuning_commands({"clocks": {"pinned": True, "unit": False}, "clocks_store": True})
    assert not any("--restore" in c for c in pinned_before)


def test_records_and_swap_file_facts_parse():
    assert TuningRecords.parse("") == {}
    assert SwapFile.parse(NO_FILE) == {"exists": False, "size": None, "mode": None, "type": None, "fstab": None}
    assert SwapFile.parse(OUR_FILE)["size"] == 8 * 2**30
