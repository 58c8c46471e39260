"""Pure: the commands that put back what the tuning steps changed, from the originals they recorded on the device.

`restore_tuning_commands(read(transport, TuningRecords()))` gives shell commands (run as root, in order, each
harmless when its setting is already back): uninstall runs them before it removes /var/lib/edgekit, and rollback
of the tuning runs them alone. Each setting is restored only when its record exists, that is only when edgekit
changed it.
"""

from __future__ import annotations

from edgekit import layout as L
from edgekit.remote.command import q, sh
from edgekit.tuning.steps import nvpmodel_set_or_next_boot


def restore_tuning_commands(original: dict) -> list[str]:
    """From TuningRecords' dict: clocks unit removed and clocks restored, power mode, boot target, the swap file
    edgekit made removed, zram back, then the records themselves removed."""
    commands: list[str] = []
    clocks = original.get("clocks")
    if clocks is not None:
        unit = f"{L.CLOCKS_UNIT_NAME}.service"
        commands.append(f"systemctl disable --now {unit} 2>/dev/null; rm -f {q(L.CLOCKS_UNIT_PATH)}; "
                        "systemctl daemon-reload")
        if not clocks.get("pinned") and original.get("clocks_store"):
            commands.append(sh("jetson_clocks", "--restore", L.CLOCKS_STORE))
    mode = original.get("power_mode")
    if mode is not None and mode.get("id") is not None:
        commands.append(nvpmodel_set_or_next_boot(mode["id"]))   # live, else for the next boot
    target = original.get("default_target")
    if target:
        commands.append(sh("systemctl", "set-default", target))
    swap = original.get("swap")                 # the swap step's fstab line starts with the path
    if swap and swap.get("path"):
        path, tmp = swap["path"], "/etc/fstab.edgekit-tmp"
        commands.append(f"swapoff {q(path)} 2>/dev/null; cp -p /etc/fstab {tmp} && "
                        f"awk -v p={q(path)} '$1 != p' /etc/fstab > {tmp} && mv -f {tmp} /etc/fstab; rm -f {q(path)}")
    zram = original.get("zram")
    if zram and str(zram.get("nvzramconfig") or "").startswith("enabled"):
        commands.append(f"systemctl enable {L.ZRAM_UNIT} && systemctl start {L.ZRAM_UNIT}")
    if original:
        commands.append(sh("rm", "-rf", L.TUNING_DIR))
    return commands
