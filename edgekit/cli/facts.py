"""`edgekit facts`: what edgekit sees on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit.cli.app import app
from edgekit.cli.common import Forks, Inventory, Json, Login, fleet_for, hosts_for, is_fleet, logs_in
from edgekit.cli.options import CudaArch
from edgekit.console import DataTable, emit_json, err
from edgekit.facts.device import DeviceFacts, read_facts
from edgekit.fleet.runner import raise_for_failures


@app.command()
@logs_in
def facts(
    targets: list[str] = typer.Argument(..., help="[user@]host[:port], ssh_config aliases, inventory names, @group, "
                                                  "or `local`."),
    json_out: bool = Json,
    cuda_arch: CudaArch = None,
    inventory: Optional[Path] = Inventory,
    forks: int = Forks,
    login: Login = Login(),
) -> None:
    """Show what edgekit finds on a device: board, L4T/JetPack, CUDA, GPU arch, memory, power mode, clocks, swap."""
    hosts = hosts_for(targets, inventory)
    if is_fleet(targets, hosts):
        def one(host, row):
            with fleet.transport(host) as t:
                f = read_facts(t, cuda_arch)
            return summary(f), f

        fleet = fleet_for(hosts, login, forks)
        results = fleet.run(one, "facts")
        if json_out:
            emit_json([{"host": r.host, "status": r.status, "message": r.message, "exit_code": r.exit_code,
                        "value": r.value.to_json() if r.value is not None else None} for r in results])
        else:
            err.print(fleet_facts_table([(r.host, r.value) for r in results if r.value is not None]))
        raise_for_failures(results)
        return
    target = hosts[0].target
    with login.open(target, hosts[0].identity) as t:
        found = read_facts(t, cuda_arch)
    if json_out:
        emit_json(found.to_json())
    else:
        err.print(facts_table(found))


# -- words for the facts (pure: DeviceFacts in, text out) ------------------------------------------------------
def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _mhz(hz: int | None) -> str:
    return "?" if not hz else f"{hz / 1e6:.0f} MHz"


def summary(f: DeviceFacts) -> str:
    """One line per host for the fleet's live table."""
    j = f.jetson
    return (f"{f.hostname}: " + (f"{j['module']}, JetPack {j['jetpack']}" if j else f"{f.arch}, not a Jetson")
            + f", {(f.memory or {}).get('total_bytes', 0) / 2**30:.1f} GiB")


def power_mode_text(f: DeviceFacts, short: bool = False) -> str:
    """'MAXN_SUPER (the board's max)', '25W (max: MAXN_SUPER)'; '-' off a Jetson."""
    pm = f.tuning.get("power_mode")
    if not pm:
        return "-" if not f.jetson else "unknown (no nvpmodel)"
    name = pm["name"] or "?"
    if pm["is_max"]:
        return f"{name} (max)" if short else f"{name} (the board's max; modes: {', '.join(pm['modes'])})"
    if pm["max"]:
        return f"{name} (max: {pm['max']})" if short else \
            f"{name} (not the board's max, {pm['max']}; modes: {', '.join(pm['modes'])})"
    return name if short or not pm["modes"] else f"{name} (modes: {', '.join(pm['modes'])})"


def clocks_text(f: DeviceFacts, short: bool = False) -> str:
    """Whether jetson_clocks pinned the clocks at the power mode's maximum (the EMC by its override flag)."""
    c = f.tuning.get("clocks")
    if c is None:
        if not f.jetson:
            return "-"
        if short:
            return "?"
        return ("unknown (`jetson_clocks --show` runs as root only, and sudo asks for a password)"
                if f.sudo in ("none", "password")
                else "unknown (`jetson_clocks --show` printed no clocks: is nvidia-l4t-tools installed?)")
    if short:
        return "pinned" if c["pinned"] else "not pinned"
    caps = f"GPU {_mhz(c['gpu_max_hz'])}, memory {_mhz(c['emc_max_hz'])}"
    if c["pinned"]:
        return f"pinned at the mode's maximum ({caps})"
    loose = [u for u, p in (("CPU", c["cpu_pinned"]), ("GPU", c["gpu_pinned"]), ("memory", c["emc_pinned"]))
             if p is False]
    return f"not pinned ({', '.join(loose)} scaling; maximum {caps})"


def headless_text(f: DeviceFacts, short: bool = False) -> str:
    t = f.tuning
    if t.get("headless") is None:
        return "?" if short else "unknown (`systemctl get-default` gave no target)"
    if short:
        return "yes" if t["headless"] else "no"
    if t["headless"]:
        return f"yes (boots to {t['default_target']}.target)"
    held = t.get("desktop_bytes")
    return ("no (boots to graphical.target" + (f"; the desktop holds {held / 2**20:.0f} MiB resident" if held else "")
            + ")")


def swap_text(f: DeviceFacts, short: bool = False) -> str:
    """Every active swap: its type (zram, file, partition), size and the storage under it."""
    swaps = f.tuning.get("swap") or []
    if not swaps:
        return "none"
    parts = []
    for s in swaps:
        size = _gib(s["size_bytes"])
        if s["type"] == "zram":
            parts.append(f"zram {size}" if short else f"{s['path']} {size} (zram, in RAM)")
        else:
            under = s["kind"] + (f" {s['device']}" if s["device"] and not short else "")
            parts.append(f"{s['type']} {size} on {under}" if short else f"{s['path']} {size} ({s['type']} on {under})")
    return ", ".join(parts)


def bandwidth_text(j: dict) -> str:
    bw, top = j.get("memory_bandwidth_gbs"), j.get("memory_bandwidth_max_gbs")
    if not bw:
        return "?"
    text = f"{bw:g} GB/s" + (f" in power mode {j['power_mode']}" if j.get("power_mode") else "")
    return text + (f" (up to {top:g} GB/s in a faster mode)" if top and top > bw else "")


def facts_table(f: DeviceFacts) -> DataTable:
    table = DataTable(title=f"facts: {f.target}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    j, mem, disk = f.jetson, f.memory or {}, f.disk or {}
    table.add_row("host", f"{f.hostname} ({(f.os or {}).get('pretty_name')}, {f.arch}, {f.cpus} CPUs)")
    table.add_row("CPU", f"{(f.cpu or {}).get('model') or 'unknown'}, {len(f.cpu_flags)} features; "
                         f"llama.cpp builds for {f.cpu_level}")
    if j:
        table.add_row("jetson", f"{j['model']} - {j['module'] or 'unknown module'} ({j['part'] or '?'})")
        table.add_row("L4T / JetPack", f"R{j['l4t']} / JetPack {j['jetpack'] or 'unknown'}")
        table.add_row("power mode", power_mode_text(f))
        table.add_row("clocks", clocks_text(f))
        table.add_row("memory bandwidth", bandwidth_text(j))
    else:
        table.add_row("jetson", "no (not a Jetson: no /etc/nv_tegra_release or NVIDIA device tree)")
    gpu = f.gpu
    table.add_row("GPU arch", f"sm_{gpu['cuda_arch']} (compute {gpu['compute_capability']}, from {gpu['source']})"
                  if gpu else "none")
    cuda = f.cuda
    table.add_row("CUDA", f"{cuda['full_version'] or cuda['version']} at {cuda['nvcc']}" if cuda else "not found")
    table.add_row("memory", f"{_gib(mem.get('available_bytes'))} available of {_gib(mem.get('total_bytes'))}, "
                            f"swap {_gib(mem.get('swap_total_bytes'))}")
    table.add_row("swap", swap_text(f))
    table.add_row("headless", headless_text(f))
    table.add_row("disk", f"{_gib(disk.get('free_bytes'))} free at {disk.get('path')}")
    table.add_row("systemd", "yes (PID 1)" if f.systemd else "no")
    table.add_row("sudo", f.sudo)
    present = [name for name, path in f.tools.items() if path]
    table.add_row("tools", ", ".join(present) or "none")
    return table


def fleet_facts_table(rows: list[tuple[str, DeviceFacts]]) -> DataTable:
    """One row per host that answered: board, JetPack, power mode, clocks, headless, swap, memory."""
    table = DataTable("host", "board", "JetPack", "power mode", "clocks", "headless", "swap", "memory",
                      title="facts", title_justify="left")
    for host, f in rows:
        j = f.jetson
        table.add_row(host, (j["module"] or j["model"] or "Jetson") if j else f"{f.arch} (not a Jetson)",
                      (j["jetpack"] or f"L4T {j['l4t']}") if j else "-", power_mode_text(f, short=True),
                      clocks_text(f, short=True), headless_text(f, short=True), swap_text(f, short=True),
                      _gib((f.memory or {}).get("total_bytes")))
    return table
