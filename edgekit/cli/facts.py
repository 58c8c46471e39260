"""`edgekit facts`: what edgekit sees on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgekit.cli.app import app
from edgekit.cli.common import Forks, Inventory, Json, Login, hosts_for, is_fleet, logs_in, run_on_fleet
from edgekit.cli.options import CudaArch
from edgekit.console import DataTable, emit_json, err
from edgekit.facts.device import DeviceFacts, read_facts


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
    """Show what edgekit finds on a device: board, L4T/JetPack, CUDA, GPU arch, memory, disk, tools."""
    hosts = hosts_for(targets, inventory)
    if is_fleet(targets, hosts):
        def job(t):
            f = read_facts(t, cuda_arch)
            j = f.jetson
            return (f"{f.hostname}: " + (f"{j['module']}, JetPack {j['jetpack']}" if j else f"{f.arch}, not a Jetson")
                    + f", {(f.memory or {}).get('total_bytes', 0) / 2**30:.1f} GiB", f)

        run_on_fleet(hosts, job, title="facts", json_out=json_out, forks=forks, login=login,
                     to_json=lambda f: f.to_json())
        return
    target = hosts[0].target
    with login.open(target, hosts[0].identity) as t:
        found = read_facts(t, cuda_arch)
    if json_out:
        emit_json(found.to_json())
    else:
        err.print(facts_table(found))


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def facts_table(f: DeviceFacts) -> DataTable:
    table = DataTable(title=f"facts: {f.target}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    j, mem, disk = f.jetson, f.memory or {}, f.disk or {}
    table.add_row("host", f"{f.hostname} ({(f.os or {}).get('pretty_name')}, {f.arch}, {f.cpus} CPUs)")
    if j:
        table.add_row("jetson", f"{j['model']} - {j['module'] or 'unknown module'} ({j['part'] or '?'})")
        table.add_row("L4T / JetPack", f"R{j['l4t']} / JetPack {j['jetpack'] or 'unknown'}")
        table.add_row("power mode", j["power_mode"] or "unknown (nvpmodel not found)")
        table.add_row("memory bandwidth", f"{j['memory_bandwidth_gbs']} GB/s" if j["memory_bandwidth_gbs"] else "?")
    else:
        table.add_row("jetson", "no (not a Jetson: no /etc/nv_tegra_release or NVIDIA device tree)")
    gpu = f.gpu
    table.add_row("GPU arch", f"sm_{gpu['cuda_arch']} (compute {gpu['compute_capability']}, from {gpu['source']})"
                  if gpu else "none")
    cuda = f.cuda
    table.add_row("CUDA", f"{cuda['full_version'] or cuda['version']} at {cuda['nvcc']}" if cuda else "not found")
    table.add_row("memory", f"{_gib(mem.get('available_bytes'))} available of {_gib(mem.get('total_bytes'))}, "
                            f"swap {_gib(mem.get('swap_total_bytes'))}")
    table.add_row("disk", f"{_gib(disk.get('free_bytes'))} free at {disk.get('path')}")
    table.add_row("systemd", "yes (PID 1)" if f.systemd else "no")
    table.add_row("sudo", f.sudo)
    present = [name for name, path in f.tools.items() if path]
    table.add_row("tools", ", ".join(present) or "none")
    return table
