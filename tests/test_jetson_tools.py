"""The stand-in nvpmodel and jetson_clocks (edgekit/sandbox/jetson_tools), run here against a temp root holding a
captured nvpmodel.conf: their command-line contract, their state files, and output in the real tools' formats (read
by the same parsers as real output). One test runs each script as a program; the others call its main() in this
process (the same code, without a Python start-up per call)."""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgekit.facts.jetson import PowerMode
from edgekit.facts.tuning import JetsonClocksShow
from edgekit.tuning.facts import ClocksState, CurrentPowerMode
from tests.fixtures import captured as cap

TOOLS = Path(__file__).resolve().parents[1] / "edgekit" / "sandbox" / "jetson_tools"
MODEL = "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"


@pytest.fixture
def root(tmp_path):
    """A stand-in's root: the Orin Nano 8GB Super conf and device tree; no status file yet (the conf's default)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nvpmodel.conf").write_text((TOOLS / "nvpmodel-p3767-0003-super.conf").read_text())
    tree = tmp_path / "sys/firmware/devicetree/base"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(MODEL.encode() + b"\0")
    (tree / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005-super\0nvidia,tegra234\0")
    return tmp_path


def env(root: Path) -> dict:
    return {"EDGEKIT_JETSON_ROOT": str(root), "HOME": str(root), "EDGEKIT_JETSON_REBOOT": f"touch {root}/rebooted"}


_LOADED: dict = {}


def script(name: str):
    if name not in _LOADED:
        loader = importlib.machinery.SourceFileLoader(f"jetson_tools_{name}", str(TOOLS / name))
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
        loader.exec_module(module)
        _LOADED[name] = module
    return _LOADED[name]


def tool(root: Path, name: str, *args: str, stdin: str = ""):
    """Run a stand-in's main(args) here with its root, stdin, stdout and stderr: (returncode, stdout, stderr)."""
    module, out, err = script(name), io.StringIO(), io.StringIO()
    saved = (module.ROOT, sys.stdin, dict(os.environ))
    module.ROOT, sys.stdin = str(root), io.StringIO(stdin)
    os.environ.update(env(root))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = module.main(list(args))
            except SystemExit as e:
                code = e.code
    finally:
        module.ROOT, sys.stdin = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def test_both_scripts_run_as_programs(root):
    run = [subprocess.run([sys.executable, str(TOOLS / name), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **env(root)}) for name, args in (("nvpmodel", ["-q"]),
                                                                               ("jetson_clocks", ["--show"]))]
    assert [r.returncode for r in run] == [0, 0] and run[0].stdout == "NV Power Mode: 25W\n1\n"
    assert run[1].stdout.endswith("NV Power Mode: 25W\n")
    assert all(os.access(TOOLS / name, os.X_OK) for name in ("nvpmodel", "jetson_clocks"))


def test_query_prints_the_conf_default_then_the_mode_set(root):
    out = tool(root, "nvpmodel", "-q").stdout
    assert out == "NV Power Mode: 25W\n1\n"                          # the captured format (Thor: "...: MAXN\n0")
    assert PowerMode.parse(out) == {"name": "25W", "id": 1}
    assert PowerMode.parse(cap.NVPMODEL_Q_THOR_JP7) == PowerMode.parse("NV Power Mode: MAXN\n0\n")
    done = tool(root, "nvpmodel", "-m", "2")
    assert (done.returncode, done.stdout) == (0, "")
    assert (root / "var/lib/nvpmodel/status").read_text() == "pmode:0002\n"
    assert tool(root, "nvpmodel", "-q").stdout == "NV Power Mode: MAXN_SUPER\n2\n"


def test_current_power_mode_fact_reads_the_stand_in(root):
    tool(root, "nvpmodel", "-m", "0")
    out = tool(root, "nvpmodel", "-q").stdout + "@@status\n" + (root / "var/lib/nvpmodel/status").read_text() + \
        "@@boot\nb\n"
    assert CurrentPowerMode.parse(out) == {"name": "15W", "id": 0, "status": "pmode:0000\n", "status_id": 0,
                                           "boot_id": "b"}


def test_a_switch_that_needs_a_reboot_asks_and_a_refusal_changes_nothing(root):
    (root / "etc/nvpmodel.conf").write_text((TOOLS / "nvpmodel-p3767-0003.conf").read_text())   # 15W, 7W
    refused = tool(root, "nvpmodel", "-m", "1")                                 # stdin at end-of-file
    assert refused.returncode == 255 and refused.stdout.splitlines() == [
        "NVPM WARN: Reboot required for changing to this power mode: 1",
        "NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:",
        "NVPM ERROR: bad input!", "NVPM ERROR: optMask is 1, no request for power mode"]
    assert not (root / "var/lib/nvpmodel/status").exists() and not (root / "rebooted").exists()
    accepted = tool(root, "nvpmodel", "-m", "1", stdin="YES\n")
    assert accepted.returncode == 0 and "NVPM WARN: rebooting" in accepted.stdout and (root / "rebooted").exists()
    assert tool(root, "nvpmodel", "-q").stdout == "NV Power Mode: 7W\n1\n"


def test_other_conf_list_and_errors(root):
    other = root / "birdedge.conf"
    other.write_text(cap.NVPMODEL_CONF_NANO_JP4_BIRDEDGE)
    assert tool(root, "nvpmodel", "-f", str(other), "-q").stdout == "NV Power Mode: MAXN\n0\n"
    assert tool(root, "nvpmodel", "-p", "--verbose").stdout.splitlines() == [
        "NVPM VERB: POWER_MODEL: ID=0 NAME=15W", "NVPM VERB: POWER_MODEL: ID=1 NAME=25W",
        "NVPM VERB: POWER_MODEL: ID=2 NAME=MAXN_SUPER"]
    bad = tool(root, "nvpmodel", "-m", "9")
    assert bad.returncode == 255 and bad.stdout.startswith("NVPM ERROR")
    (root / "etc/nvpmodel.conf").unlink()
    assert tool(root, "nvpmodel", "-q").returncode == 255


def shape(line: str) -> str:
    """A --show line with its values blanked: what must match the captured real output's lines."""
    line = re.sub(r"Machine:.*", "Machine:M", line)
    line = re.sub(r"NV Power Mode: .*", "NV Power Mode: P", line)
    return re.sub(r"\d+(?:-\d+)?", "N", line)


def test_show_has_the_real_format_and_the_modes_limits(root):
    out = tool(root, "jetson_clocks", "--show").stdout
    real = {shape(line) for line in cap.JETSON_CLOCKS_SHOW_AGX_ORIN_JP5.splitlines()}
    assert {shape(line) for line in out.splitlines()} <= real
    lines = out.splitlines()
    assert lines[0] == f"SOC family:tegra234  Machine:{MODEL}" and lines[1] == "Online CPUs: 0-5"
    show = JetsonClocksShow.parse(out)                               # 25W: the conf's caps, nothing pinned
    assert (show["cpu_max_khz"], show["gpu_max_hz"], show["emc_max_hz"]) == (1344000, 918000000, 3199000000)
    assert show["power_mode"] == "25W" and ClocksState.parse(out)["pinned"] is False
    tool(root, "nvpmodel", "-m", "2")                                # MAXN_SUPER: -1 caps are the hardware's
    show = JetsonClocksShow.parse(tool(root, "jetson_clocks", "--show").stdout)
    assert (show["cpu_max_khz"], show["gpu_max_hz"]) == (1728000, 1020000000)


def test_pin_then_a_mode_change_unpins(root):
    assert tool(root, "jetson_clocks").returncode == 0
    out = tool(root, "jetson_clocks", "--show").stdout
    assert ClocksState.parse(out)["pinned"] is True
    assert "EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1" in out
    assert "IdleStates: WFI=0 c7=0 " in out
    tool(root, "nvpmodel", "-m", "0")
    assert ClocksState.parse(tool(root, "jetson_clocks", "--show").stdout)["pinned"] is False


def test_store_and_restore(root):
    saved = root / "saved.conf"
    assert tool(root, "jetson_clocks", "--store", str(saved)).returncode == 0
    assert "/sys/kernel/debug/bpmp/debug/clk/emc/mrq_rate_locked:0" in saved.read_text().splitlines()
    again = tool(root, "jetson_clocks", "--store", str(saved))       # the real script asks before overwriting
    assert again.returncode == 1 and f"File {saved} already exists. Can I overwrite it? Y/N:" in again.stdout
    tool(root, "jetson_clocks")
    assert tool(root, "jetson_clocks", "--restore", str(saved)).returncode == 0
    assert ClocksState.parse(tool(root, "jetson_clocks", "--show").stdout)["pinned"] is False
    missing = tool(root, "jetson_clocks", "--restore")                # default: ${HOME}/l4t_dfs.conf
    assert missing.returncode == 1 and missing.stdout == f"Error: {root}/l4t_dfs.conf file not found !\n"
    assert "--store [file]" in tool(root, "jetson_clocks", "--help").stderr


def test_a_planted_hardware_file_caps_the_gpu_and_the_environment_wins(root, monkeypatch):
    """/etc/edgekit-standin/jetson-hw plants a board whose firmware caps the GPU at 624.75 MHz (an Orin Nano flashed
    without the Super configuration): MAXN_SUPER then shows GPU MaxFreq=624750000; $EDGEKIT_JETSON_HW still wins."""
    assert tool(root, "nvpmodel", "-m", "2").returncode == 0                      # MAXN_SUPER
    monkeypatch.delenv("EDGEKIT_JETSON_HW", raising=False)
    assert JetsonClocksShow.parse(tool(root, "jetson_clocks", "--show").stdout)["gpu_max_hz"] == 1020000000
    (root / "etc/edgekit-standin").mkdir()
    (root / "etc/edgekit-standin/jetson-hw").write_text("gpu_max=624750000\n")
    shown = JetsonClocksShow.parse(tool(root, "jetson_clocks", "--show").stdout)
    assert shown["gpu_max_hz"] == 624750000 and shown["power_mode"] == "MAXN_SUPER"
    monkeypatch.setenv("EDGEKIT_JETSON_HW", "gpu_max=918000000")
    assert JetsonClocksShow.parse(tool(root, "jetson_clocks", "--show").stdout)["gpu_max_hz"] == 918000000
