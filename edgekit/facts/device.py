"""All of a device's facts in one object, read in one round trip, with the Jetson view and the tuning view (power
mode, clocks, boot target, swap) derived from them."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import EdgekitError, UnsuitableDevice, UsageError
from edgekit.facts import boards
from edgekit.facts import isa
from edgekit.facts.base import gather
from edgekit.facts.cuda import CudaToolkit, parse_arch_override
from edgekit.facts.power_modes import Mode, ModeTable, resolve
from edgekit.facts.jetson import DeviceCompatible, DeviceModel, JetsonRelease, JtopService, PowerMode
from edgekit.facts.system import (Arch, CpuCount, CpuInfo, CpuRefused, DiskSpace, Hostname, InitSystem, MemInfo, OsRelease,
                                  SudoAccess, Tools)
from edgekit.facts.tuning import (DefaultTarget, DesktopSession, JetsonClocksShow, NvpmodelConf, SwapBacking, Swaps,
                                  Zramctl)

ALL_FACTS = [Hostname, OsRelease, Arch, CpuCount, CpuInfo, CpuRefused, MemInfo, DiskSpace, InitSystem, SudoAccess, Tools,
             DeviceModel, DeviceCompatible, JetsonRelease, PowerMode, JtopService, CudaToolkit,
             NvpmodelConf, JetsonClocksShow, DefaultTarget, DesktopSession, Swaps, SwapBacking, Zramctl]


@dataclass
class DeviceFacts:
    target: str
    hostname: str | None
    os: dict | None
    arch: str | None
    cpus: int | None
    memory: dict | None
    disk: dict | None
    systemd: bool
    sudo: str
    jetson: dict | None
    cuda: dict | None
    gpu: dict | None
    tools: dict = field(default_factory=dict)
    cpu: dict | None = None                   # {"model", "flags"} as /proc/cpuinfo advertises them
    cpu_refused: list[str] = field(default_factory=list)   # CPU levels that failed the build gate here
    # What the Jetson tuning changes (edgekit.tuning), as found: {'power_mode': {'name', 'id', 'max', 'is_max',
    # 'modes', 'default'} | None, 'clocks': JetsonClocksShow's dict | None, 'default_target', 'headless',
    # 'desktop_bytes', 'swap': [{'path', 'type' (zram/file/partition), 'size_bytes', 'used_bytes', 'priority',
    # 'device', 'kind' (zram/NVMe/eMMC/SD/disk/...)}], 'zram': zramctl's devices}
    tuning: dict = field(default_factory=dict)

    @property
    def cpu_flags(self) -> set[str]:
        return set((self.cpu or {}).get("flags") or ())

    @property
    def cpu_level(self) -> str:
        """The CPU instruction level a build for this device gets (edgekit.facts.isa: the highest its CPU
        advertises that has not failed the gate here)."""
        return isa.choose(self.arch, self.cpu_flags, set(self.cpu_refused)).name

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_level": self.cpu_level}

    @property
    def cuda_arch(self) -> str | None:
        return (self.gpu or {}).get("cuda_arch")


def derive(target: str, raw: dict[str, Any], arch_override: str | None = None) -> DeviceFacts:
    """Pure: turn gathered raw facts into DeviceFacts (Jetson module, JetPack, compute capability)."""
    jetson = None
    model, compatible, release = raw.get("dt_model"), raw.get("dt_compatible") or [], raw.get("l4t")
    is_jetson = release is not None or any(c.startswith("nvidia,") for c in compatible)
    memory = raw.get("memory") or {}
    if is_jetson:
        module = boards.module_for(compatible, model)
        total_gb = memory.get("total_bytes", 0) / 2**30
        if module and module.part == "p3767-0005" and not compatible and 0 < total_gb < 6:
            module = boards.module("p3767-0004")
        soc = module.soc if module else next((c.split(",")[1] for c in compatible if "tegra" in c), None)
        cc = module.compute_capability if module else boards.SOC_COMPUTE.get(soc or "")
        l4t = release["l4t"] if release else None
        power = raw.get("power_mode")
        jetson = {
            "model": model, "module": module.name if module else None, "part": module.part if module else None,
            "family": module.family if module else None, "soc": soc, "l4t": l4t,
            "jetpack": boards.jetpack_for(l4t), "compute_capability": cc,
            "memory_bandwidth_gbs": module.bandwidth_in(power["name"] if power else None) if module else None,
            "memory_bandwidth_max_gbs": module.max_bandwidth_gbs if module else None,
            "power_mode": power["name"] if power else None, "jtop_service": raw.get("jtop_service"),
        }
    gpu = None
    override = arch_override if arch_override is not None else os.environ.get("CUDA_DOCKER_ARCH")
    try:
        arch = parse_arch_override(override)
    except ValueError:
        raise UsageError(f"cannot read CUDA architecture {override!r}",
                         hint="use a form like compute_87, sm_87, 87 or 8.7") from None
    if arch:
        gpu = {"cuda_arch": arch, "compute_capability": f"{arch[:-1]}.{arch[-1]}", "source": "override"}
    elif jetson and jetson["compute_capability"]:
        cc = jetson["compute_capability"]
        gpu = {"cuda_arch": cc.replace(".", ""), "compute_capability": cc, "source": "jetson module table"}
    return DeviceFacts(
        target=target, hostname=raw.get("hostname"), os=raw.get("os_release"), arch=raw.get("arch"),
        cpus=raw.get("cpus"), memory=raw.get("memory"), disk=raw.get("disk"), systemd=bool(raw.get("systemd")),
        sudo=raw.get("sudo") or "none", jetson=jetson, cuda=raw.get("cuda"), gpu=gpu, tools=raw.get("tools") or {},
        cpu=raw.get("cpu"), cpu_refused=raw.get("cpu_refused") or [], tuning=derive_tuning(raw, jetson),
    )


def derive_tuning(raw: dict[str, Any], jetson: dict | None = None) -> dict[str, Any]:
    """Pure: the tuning view (DeviceFacts.tuning) from gathered raw facts."""
    target = raw.get("default_target")
    backing = raw.get("swap_backing") or {}
    swap = []
    for s in raw.get("swaps") or []:
        under = backing.get(s["path"]) or {}
        swap.append({**{k: s[k] for k in ("path", "size_bytes", "used_bytes", "priority")},
                     "type": "zram" if s["zram"] else s["type"],
                     "device": s["path"].rsplit("/", 1)[-1] if s["zram"] else under.get("device"),
                     "kind": "zram" if s["zram"] else under.get("kind") or "unknown"})
    return {
        "power_mode": _power_mode(raw.get("power_mode"), raw.get("nvpmodel_conf"), jetson or {}),
        "clocks": raw.get("jetson_clocks"),
        "default_target": target,
        "headless": None if target is None else target != "graphical",
        "desktop_bytes": (raw.get("desktop_memory") or {}).get("bytes"),
        "swap": swap,
        "zram": raw.get("zramctl") or [],
    }


def _power_mode(current: dict | None, conf: dict | None, jetson: dict) -> dict | None:
    """The mode in use and the board's top mode (`max` as edgekit.facts.power_modes.resolve reads the board's own
    nvpmodel.conf: MAXN_SUPER, else MAXN, else the most watts)."""
    if current is None and conf is None:
        return None
    top = None
    if conf:
        table = ModeTable(tuple(Mode(m["id"], m["name"]) for m in conf["modes"]), conf.get("default"))
        try:
            top = resolve("max", table, jetson.get("l4t"), jetson.get("part"))[0].name
        except EdgekitError:            # no mode states its watts or is MAXN: no top mode to name
            top = None
    name = current["name"] if current else None
    by_id = {m["id"]: m["name"] for m in (conf or {}).get("modes", [])}
    return {"name": name, "id": current.get("id") if current else None, "max": top,
            "is_max": None if name is None or top is None else name == top,
            "modes": [m["name"] for m in (conf or {}).get("modes", [])],
            "default": by_id.get((conf or {}).get("default"))}


def read_facts(transport, arch_override: str | None = None) -> DeviceFacts:
    """Read every fact from the device in one round trip."""
    raw = gather(lambda script: transport.run(script, check=False).stdout, ALL_FACTS)
    return derive(transport.name, raw, arch_override)


def require_supported(facts: DeviceFacts) -> None:
    """Refuse Jetsons whose GPU llama.cpp's CUDA backend no longer supports (Nano, TX1, TX2)."""
    j = facts.jetson
    if not j or not j.get("compute_capability"):
        return
    major, minor = (int(x) for x in j["compute_capability"].split("."))
    if (major, minor) < boards.MIN_COMPUTE:
        raise UnsuitableDevice(
            f"{j.get('module') or j.get('model')} (sm_{major}{minor}, L4T {j.get('l4t')}) is not supported: "
            "needs Orin/Xavier (sm_72+)",
            hint="use a Jetson Orin or Xavier; JetPack 4 boards cannot run current llama.cpp with CUDA")
