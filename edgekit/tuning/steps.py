"""Jetson tuning steps: power mode, clocks, headless boot, swap without zram. Each compares fresh facts with what is
asked, returns Noop(reason) or the exact operations, and records the value it found (once, before changing it) in
layout.TUNING_DIR so uninstall and rollback can put it back (restore.restore_tuning_commands).

Refusals come before any change: TuningChecks runs every configured step's `check` with the other checks of a run
(provision's preflight group), and each step checks again in its own plan.
"""

from __future__ import annotations

import json
import re

from edgekit import layout as L
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice, UsageError
from edgekit.facts.deployed import FileText, UnitState
from edgekit.facts.jetson import JetsonRelease
from edgekit.remote.command import Upload, q, sh
from edgekit.remote.plan import Change, Context, Noop
from edgekit.service.settings import render
from edgekit.tuning.facts import (BackingDevice, BootTarget, ClocksState, CurrentPowerMode, DesktopMemory,
                                  PowerModeTable, SwapFile, SwapState, TuningRecords, record_path)
from edgekit.facts.power_modes import Mode, reboot_expected, resolve, status_with

MiB = 2**20


def _board(ctx: Context) -> tuple[str | None, str | None]:
    """(L4T release, module part number) from the run's device facts when preflight read them, else the release
    from /etc/nv_tegra_release (a run without preflight: rollback, a bench sweep, an Ansible task)."""
    if ctx.run.facts is not None:
        jetson = ctx.run.facts.jetson or {}
        return jetson.get("l4t"), jetson.get("part")
    return (ctx.fact(JetsonRelease()) or {}).get("l4t"), None


def _records(records: dict, values: dict) -> list:
    """Operations recording the original values not recorded yet (the first change keeps what was there)."""
    new = {k: v for k, v in values.items() if k not in records}
    if not new:
        return []
    return [sh("install", "-d", "-m", "0700", L.TUNING_DIR),
            *(Upload(record_path(k), json.dumps(v, sort_keys=True) + "\n", mode="0600") for k, v in new.items())]


def _mib(n: int | None) -> str:
    return f"{(n or 0) / MiB:.0f} MiB"


def nvpmodel_set(mode_id: int) -> str:
    """The mode switch, with stdin closed: a reboot prompt is answered with end-of-file (a refusal), never YES.
    The one spelling of an nvpmodel switch in edgekit (the tuning step, its restore, the bench sweep)."""
    return f"nvpmodel -m {int(mode_id)} </dev/null"


def nvpmodel_set_or_next_boot(mode_id: int) -> str:
    """The switch back to a recorded mode (uninstall, rollback of the tuning): live when nvpmodel can, else the mode
    written to its status file for the next boot (nvpmodel refuses a switch that needs a reboot nobody answers)."""
    mode_id = int(mode_id)
    status, tmp = q(L.NVPMODEL_STATUS), q(f"{L.NVPMODEL_STATUS}.edgekit-tmp")
    return (f"out=$({nvpmodel_set(mode_id)} 2>&1); case \"$out\" in *'NVPM ERROR'*|"
            f"*'Reboot required'*) printf 'pmode:%04d\\n' {mode_id} > {tmp} && mv -f {tmp} {status};; esac")


def switch_by_hand(mode_id: int) -> str:
    """What a person runs on the board to switch the mode (a hint)."""
    return f"`sudo nvpmodel -m {int(mode_id)}` and answer YES to its reboot prompt"


def switch_power_mode(c: Context, target: Mode) -> str | None:
    """Run the switch to `target` and verify it with `nvpmodel -q`: None when the board runs `target` now, the
    reason when nvpmodel asked for a reboot after all (the prompt is declined: nothing changed). Raises
    RemoteCommandFailed when nvpmodel failed or the mode did not change."""
    op = nvpmodel_set(target.id)
    res = c.do(op, check=False)
    out = (res.stdout or "") + (res.stderr or "")
    if "reboot required" in out.lower():
        return (f"nvpmodel asks for a reboot to switch {c.transport.name} to {target.name} (the prompt was declined; "
                "the mode is unchanged)")
    if not res.ok or "NVPM ERROR" in out:
        raise RemoteCommandFailed(op, res.exit_code or 1, out)
    now = CurrentPowerMode.parse(c.read(CurrentPowerMode.command).stdout)
    if now["id"] != target.id:
        raise RemoteCommandFailed(op, 0, f"nvpmodel -q still reports {now['name']} (id {now['id']})",
                                  message=f"nvpmodel did not switch {c.transport.name} to {target.name}")
    return None


class PowerMode:
    """The power mode NAME (or `max` / `efficient`) from the board's own nvpmodel.conf, set with `nvpmodel -m ID`."""

    name = "power mode"

    def __init__(self, mode: str):
        self.mode = mode

    def check(self, ctx: Context) -> tuple[Mode, str]:
        table = ctx.fact(PowerModeTable())
        if table is None:
            raise UnsuitableDevice(f"{ctx.transport.name} has no {L.NVPMODEL_CONF}: nvpmodel power modes exist only "
                                   "on Jetson boards", hint="leave the power mode unset for this host")
        l4t, part = _board(ctx)
        return resolve(self.mode, table, l4t, part)

    def plan(self, ctx: Context):
        target, how = self.check(ctx)
        how = f" ({how})" if how else ""
        table = ctx.fact(PowerModeTable())
        current = ctx.fact(CurrentPowerMode())
        records = ctx.fact(TuningRecords())
        ctx.run.tuning.power_mode = current["name"]
        if current["id"] == target.id:
            ctx.run.tuning.power_mode = target.name
            return Noop(f"power mode {target.name} (id {target.id}){how}")
        pending = records.get("power_mode_pending") or {}
        if pending.get("id") == target.id:
            if pending.get("boot_id") == current["boot_id"]:
                ctx.run.tuning.power_mode = target.name
                ctx.run.tuning.after_reboot.append(f"power mode {target.name}")
                return Noop(f"power mode {target.name} (id {target.id}) is set for the next boot; the board runs "
                            f"{current['name']} until it reboots (`sudo reboot`)")
            raise UnsuitableDevice(
                f"power mode {target.name} was set for the next boot, but after a reboot {ctx.transport.name} runs "
                f"{current['name']}: nvpmodel did not apply it at boot",
                hint=f"set it by hand on the board: {switch_by_hand(target.id)}")
        was = table.by_id(current["id"])
        original = {"id": current["id"], "name": current["name"] or (was.name if was else None)}
        ops = _records(records, {"power_mode": original})
        if reboot_expected(was, target):
            pending_now = {"id": target.id, "name": target.name, "boot_id": current["boot_id"]}
            if not ops:
                ops.append(sh("install", "-d", "-m", "0700", L.TUNING_DIR))
            ops += [Upload(L.NVPMODEL_STATUS, status_with(current["status"], target.id), mode="0644"),
                    Upload(record_path("power_mode_pending"), json.dumps(pending_now, sort_keys=True) + "\n",
                           mode="0600")]
            ctx.run.tuning.power_mode = target.name
            ctx.run.tuning.after_reboot.append(f"power mode {target.name}")
            return Change(f"power mode {target.name} (id {target.id}){how} from the next boot: leaving {was.name} "
                          "changes which parts of the GPU are power-gated, which nvpmodel applies only at boot; "
                          "edgekit does not reboot the board (`sudo reboot` applies it)", ops,
                          detail={"reboot": True, "from": original, "to": {"id": target.id, "name": target.name}})
        switch = nvpmodel_set(target.id)
        ops.append(switch)

        def apply(c: Context) -> None:
            for op in ops:
                if op != switch:
                    c.do(op)
                    continue
                declined = switch_power_mode(c, target)
                if declined:
                    raise UnsuitableDevice(f"{declined}; edgekit expected it to apply live",
                                           hint=f"switch by hand on the board: {switch_by_hand(target.id)}")
            c.run.tuning.power_mode = target.name

        return Change(f"power mode {current['name']} → {target.name} (id {target.id}){how}", ops, apply,
                      detail={"reboot": False, "from": original, "to": {"id": target.id, "name": target.name}})


def clocks_unit() -> str:
    """The oneshot unit, rendered from the one template set (edgekit/templates)."""
    return render(f"{L.CLOCKS_UNIT_NAME}.service.j2", {})


class ClocksMax:
    """Clocks pinned at the power mode's maximum (`jetson_clocks`), at every boot too: a oneshot unit ordered
    before the server. The clocks as they were are stored first (`jetson_clocks --store`) for uninstall."""

    name = "jetson clocks"
    unit = f"{L.CLOCKS_UNIT_NAME}.service"

    def check(self, ctx: Context) -> dict:
        show = ctx.fact(ClocksState())
        if show is None:
            raise UnsuitableDevice(f"`jetson_clocks --show` printed no clocks on {ctx.transport.name}: it is not a "
                                   "Jetson, or jetson_clocks is missing (package nvidia-l4t-tools)",
                                   hint="leave the clocks setting unset for this host")
        return show

    def plan(self, ctx: Context):
        show = self.check(ctx)
        # nvpmodel rewrote the clock limits in this run (a live switch): pin again; the dry run says so too
        reset = PowerMode.name in ctx.changed and not any(a.startswith("power mode")
                                                          for a in ctx.run.tuning.after_reboot)
        pin = reset or not show["pinned"]
        want = clocks_unit()
        have = ctx.fact(FileText(L.CLOCKS_UNIT_PATH))
        enabled = ctx.fact(UnitState(self.unit)).get("UnitFileState") == "enabled"
        if have == want and enabled and not pin:
            return Noop(f"clocks pinned at their maximum; {self.unit} enabled (pins them at every boot, before "
                        f"{L.UNIT_NAME})")
        records = ctx.fact(TuningRecords())
        ops = _records(records, {"clocks": {"pinned": show["pinned"], "unit": have is not None}})
        if "clocks" not in records and not show["pinned"] and not records.get("clocks_store"):
            ops.append(sh("jetson_clocks", "--store", L.CLOCKS_STORE))      # the clocks as they were, for uninstall
        if have != want:
            ops += [Upload(L.CLOCKS_UNIT_PATH, want), "systemctl daemon-reload"]
        if not enabled:
            ops.append(sh("systemctl", "enable", self.unit))
        if pin:
            ops.append("jetson_clocks")
        what = [w for w, todo in (("pin the clocks now" + (" (the power mode changed)" if reset else ""), pin),
                                  ("write " + self.unit, have != want), ("enable it", not enabled)) if todo]
        return Change(", ".join(what) + f" (GPU max {_mhz(show.get('gpu_max_hz'))}, memory max "
                      f"{_mhz(show.get('emc_max_hz'))} in power mode {show.get('power_mode') or '?'})", ops)


def _mhz(hz: int | None) -> str:
    return f"{hz / 1e6:.0f} MHz" if hz else "?"


class Headless:
    """Boot to multi-user.target instead of the desktop (graphical.target): the session's memory goes to the model.
    Takes effect at the next boot; the desktop running now is left alone."""

    name = "headless"

    def check(self, ctx: Context) -> str:
        target = ctx.fact(BootTarget())
        if target is None:
            raise UnsuitableDevice(f"`systemctl get-default` gave no target on {ctx.transport.name}",
                                   hint="leave headless unset for this host")
        return target

    def plan(self, ctx: Context):
        target = self.check(ctx)
        if target != "graphical":
            return Noop(f"boots to {target}.target (no desktop)")
        desktop = ctx.fact(DesktopMemory())
        ctx.run.tuning.desktop_bytes = desktop["bytes"]
        ctx.run.tuning.after_reboot.append("headless")
        records = ctx.fact(TuningRecords())
        ops = _records(records, {"default_target": "graphical.target"}) + \
            ["systemctl set-default multi-user.target"]
        held = (f"the desktop session holds {_mib(desktop['bytes'])} now (resident memory of "
                f"{', '.join(sorted(desktop['processes'])) or 'no desktop process found'}; shared pages counted "
                "in each, so an upper estimate)")
        return Change(f"boot to multi-user.target instead of graphical.target from the next boot: {held}; "
                      "`sudo systemctl isolate multi-user.target` stops the desktop now", ops,
                      detail={"desktop_bytes": desktop["bytes"], "processes": desktop["processes"]})


_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


def parse_size(text: str) -> int:
    """'8G', '8GiB', '4096M', '512MiB' -> bytes (binary units, as fallocate reads them). At least 64 MiB."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m[2].upper() not in _UNITS:
        raise UsageError(f"cannot read swap size {text!r}", hint="write it like 8G, 16GiB or 4096M")
    size = int(float(m[1]) * _UNITS[m[2].upper()])
    size -= size % 4096
    if size < 64 * MiB:
        raise UsageError(f"swap size {text!r} is below 64 MiB", hint="write it like 8G, 16GiB or 4096M")
    return size


def fstab_line(path: str) -> str:
    return f"{path} none swap sw 0 0"


class Swap:
    """A swap file of SIZE at PATH (fallocate, 0600, mkswap, swapon, an /etc/fstab line) and zram swap off
    (nvzramconfig disabled, its devices swapped off): the set-up NVIDIA's guide for LLMs on Jetson describes.
    Refuses a path stored on eMMC or an SD card unless forced."""

    name = "swap"

    def __init__(self, size: str, path: str = L.SWAP_FILE, force: bool = False):
        self.size, self.path, self.force = size, path, force

    def check(self, ctx: Context) -> dict:
        parse_size(self.size)
        if not self.path.startswith("/") or any(c in self.path for c in " \t\n"):
            raise UsageError(f"--swap-path {self.path!r}: give an absolute path without spaces")
        backing = ctx.fact(BackingDevice(self.path))
        if backing["kind"] in ("eMMC", "SD", "eMMC or SD") and not self.force:
            raise UnsuitableDevice(
                f"{self.path} is on {backing['kind']} ({backing['source']}) on {ctx.transport.name}: swap there wears "
                "the flash out with every page written, and a model that swaps drops from about 17 to under 2 "
                "tokens/s, slower than running without it", hint="put the swap file on an NVMe drive (a swap "
                "path such as /mnt/nvme/swapfile), or force swap on eMMC/SD to accept both")
        existing = ctx.fact(SwapFile(self.path))
        records = ctx.fact(TuningRecords())
        kept = (records.get("swap") or {}).get("path")
        if kept and kept != self.path:
            raise UnsuitableDevice(f"edgekit keeps a swap file at {kept} on {ctx.transport.name} already; it restores "
                                   "one swap file per device", hint=f"keep the swap path {kept}")
        if existing["exists"] and kept != self.path:
            if existing["type"] != "swap":
                raise UnsuitableDevice(f"{self.path} exists on {ctx.transport.name} and is not a swap file",
                                       hint="choose another swap path")
            if existing["size"] != parse_size(self.size):
                raise UnsuitableDevice(f"{self.path} on {ctx.transport.name} is a swap file of "
                                       f"{_mib(existing['size'])} that edgekit did not make; edgekit leaves it "
                                       "as it is",
                                       hint=f"ask for a swap size of {_mib(existing['size'])}, or "
                                            "choose another swap path")
        return backing

    def plan(self, ctx: Context):
        backing = self.check(ctx)
        want = parse_size(self.size)
        swaps = ctx.fact(SwapState())
        zram = [s for s in swaps if s["zram"]]
        zram_unit = ctx.fact(UnitState(L.ZRAM_UNIT)).get("UnitFileState") or ""
        f = ctx.fact(SwapFile(self.path))
        active = any(s["path"] == self.path for s in swaps)
        records = ctx.fact(TuningRecords())
        file_ok = f["exists"] and f["type"] == "swap" and f["size"] == want
        zram_on = zram_unit.startswith("enabled") or bool(zram)
        ctx.run.tuning.swap_bytes = f["size"] if file_ok else want
        ctx.run.tuning.zram_swap_bytes = sum(s["size_bytes"] for s in zram)
        if file_ok and f["mode"] == "600" and active and f["fstab"] == "swap" and not zram_on:
            return Noop(f"swap file {self.path} ({_mib(f['size'])}) on {backing['kind']}, on and in /etc/fstab; "
                        "zram off")
        values = {}
        if zram_on:
            values["zram"] = {"nvzramconfig": zram_unit or None, "devices": [s["path"] for s in zram]}
        if not file_ok and not f["exists"]:
            values["swap"] = {"path": self.path, "size": want}
        ops = _records(records, values)
        if zram_unit.startswith("enabled"):
            ops.append(sh("systemctl", "disable", L.ZRAM_UNIT))
        ops += [sh("swapoff", s["path"]) for s in zram]
        if not file_ok:
            tmp = f"{self.path}.edgekit-tmp"
            if active:
                ops.append(sh("swapoff", self.path))
            ops += [sh("rm", "-f", tmp), sh("fallocate", "-l", want, tmp), sh("chmod", "600", tmp),
                    sh("mkswap", tmp), sh("mv", "-f", tmp, self.path), sh("swapon", self.path)]
        else:
            if f["mode"] != "600":
                ops.append(sh("chmod", "600", self.path))
            if not active:
                ops.append(sh("swapon", self.path))
        if f["fstab"] != "swap":
            tmp = "/etc/fstab.edgekit-tmp"
            ops.append(f"cp -p /etc/fstab {tmp} && printf '%s\\n' {q(fstab_line(self.path))} >> {tmp} && "
                       f"mv -f {tmp} /etc/fstab")
        parts = []
        if zram_on:
            parts.append("zram swap off" + (f" ({', '.join(s['path'] for s in zram)})" if zram else ""))
        parts.append(f"swap file {self.path} ({_mib(want)}) on {backing['kind']}" if not file_ok
                     else f"swap file {self.path} on")
        return Change("; ".join(parts), ops)


class TuningChecks:
    """Every refusal the configured tuning steps can make (unknown power mode, no jetson_clocks, swap on eMMC/SD),
    read before anything changes on the device; also what the tuning will free or add (ctx.run.tuning: the desktop's
    memory, the zram swap turned off, the swap file), for the fit check that runs after it."""

    name = "tuning checks"

    def __init__(self, steps: list):
        self.steps = steps

    def plan(self, ctx: Context):
        said = []
        for step in self.steps:
            found = step.check(ctx)
            if isinstance(step, PowerMode):
                mode, how = found
                said.append(f"power mode {mode.name} (id {mode.id})" + (f": {how}" if how else ""))
            elif isinstance(step, Swap):
                said.append(f"swap {_mib(parse_size(step.size))} at {step.path} on {found['kind']}")
                ctx.run.tuning.swap_bytes = parse_size(step.size)
                ctx.run.tuning.zram_swap_bytes = sum(s["size_bytes"] for s in ctx.fact(SwapState()) if s["zram"])
            elif isinstance(step, ClocksMax):
                said.append("jetson_clocks present")
            elif isinstance(step, Headless):
                said.append(f"boots to {found}.target")
                if found == "graphical":
                    ctx.run.tuning.desktop_bytes = ctx.fact(DesktopMemory())["bytes"]
        return Noop("; ".join(said) if said else "no Jetson tuning asked for")
