"""The role's filters: edgekit's own probes, parsers and rules, so the role and `edgekit provision` read a device the
same way (one parser per output, one power-mode resolver, one record format).

They run in ansible-playbook's Python on the controller and import the `edgekit` package: installed there
(`pip install edgekit`), or the checkout this role lives in (ansible/roles/edgekit/ inside edgekit's repository).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_CHECKOUT = Path(__file__).resolve().parents[4]      # <checkout>/ansible/roles/edgekit/filter_plugins/edgekit.py


def _edgekit():
    """Import edgekit: the checkout holding this role first (the role and its edgekit are one version), else the
    installed package; or say how to get it."""
    if (_CHECKOUT / "edgekit" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
        sys.path.insert(0, str(_CHECKOUT))
    try:
        import edgekit  # noqa: F401
    except ImportError as e:
        raise AnsibleFilterError(
            "the edgekit role needs the edgekit Python package on the controller, importable by "
            f"ansible-playbook's Python ({sys.executable}): pip install edgekit ({e})") from None


def _refusal(e: Exception) -> AnsibleFilterError:
    """An edgekit refusal (UsageError, UnsuitableDevice) as the task's failure: its message and its hint."""
    hint = getattr(e, "hint", None)
    return AnsibleFilterError(getattr(e, "message", str(e)) + (f" (hint: {hint})" if hint else ""))


def _probe(name: str, arg=None):
    _edgekit()
    from edgekit.facts.deployed import PortListener, UnitState
    from edgekit.tuning import facts as T

    return {
        "current_power_mode": T.CurrentPowerMode, "clocks": T.ClocksState, "boot_target": T.BootTarget,
        "swaps": T.SwapState, "desktop": T.DesktopMemory, "records": T.TuningRecords,
        "backing": lambda: T.BackingDevice(arg), "swap_file": lambda: T.SwapFile(arg),
        "unit": lambda: UnitState(arg), "port": lambda: PortListener(int(arg)),
    }[name]()


def edgekit_probe(name: str, arg=None) -> str:
    """The shell command edgekit runs for a fact: 'current_power_mode', 'clocks', 'boot_target', 'swaps', 'desktop',
    'records', 'backing' (a path), 'swap_file' (a path), 'unit' (a unit name), 'port' (a TCP port)."""
    return _probe(name, arg).command


def edgekit_parse(output: str, name: str, arg=None):
    """That fact's parser on the command's output (plain data: dicts, lists, strings)."""
    value = _probe(name, arg).parse(output or "")
    return list(value) if isinstance(value, tuple) else value


def edgekit_power_mode(board: str, name: str) -> dict:
    """The mode NAME (or `max` / `efficient`) means on this board, from the output of
    `cat /etc/nvpmodel.conf; echo @@release; head -n1 /etc/nv_tegra_release; echo @@compatible; <compatible>`:
    {'id', 'name', 'note', 'listing'} (edgekit.tuning.modes.resolve; a name the board lacks fails the task)."""
    _edgekit()
    from edgekit.errors import EdgekitError
    from edgekit.facts import boards
    from edgekit.facts.jetson import DeviceCompatible, JetsonRelease
    from edgekit.tuning.modes import parse_conf, resolve

    conf, _, rest = (board or "").partition("@@release")
    release, _, compatible = rest.partition("@@compatible")
    table = parse_conf(conf)
    if table is None:
        raise AnsibleFilterError("this device has no /etc/nvpmodel.conf: nvpmodel power modes exist only on Jetson "
                                 "boards (hint: leave edgekit_power_mode unset for this host)")
    l4t = (JetsonRelease.parse(release) or {}).get("l4t")
    module = boards.module_for(DeviceCompatible.parse(compatible))
    try:
        mode, note = resolve(str(name), table, l4t, module.part if module else None)
    except EdgekitError as e:
        raise _refusal(e) from None
    return {"id": mode.id, "name": mode.name, "note": note, "listing": table.listing()}


def edgekit_power_mode_reboot(board: str, current_id, target_id) -> bool:
    """Whether nvpmodel asks for a reboot to switch between these modes (edgekit.tuning.modes.reboot_expected: the
    modes power-gate different parts of the GPU)."""
    _edgekit()
    from edgekit.tuning.modes import parse_conf, reboot_expected

    table = parse_conf((board or "").partition("@@release")[0])
    if table is None or table.by_id(target_id) is None:
        return False
    return reboot_expected(table.by_id(current_id if current_id is None else int(current_id)),
                           table.by_id(int(target_id)))


def edgekit_nvpmodel_status(status_text, mode_id) -> str:
    """/var/lib/nvpmodel/status selecting `mode_id` at the next boot (edgekit.tuning.modes.status_with)."""
    _edgekit()
    from edgekit.tuning.modes import status_with

    return status_with(status_text or None, int(mode_id))


def edgekit_size(text) -> int:
    """A swap size ('8G', '16GiB', '4096M') in bytes, as edgekit reads it (at least 64 MiB, 4 KiB aligned)."""
    _edgekit()
    from edgekit.errors import EdgekitError
    from edgekit.tuning.steps import parse_size

    try:
        return parse_size(str(text))
    except EdgekitError as e:
        raise _refusal(e) from None


def edgekit_record(value) -> str:
    """A tuning record's file content, as edgekit writes it (layout.TUNING_DIR/<setting>.json)."""
    return json.dumps(value, sort_keys=True) + "\n"


def edgekit_record_path(key: str) -> str:
    _edgekit()
    from edgekit.tuning.facts import record_path

    return record_path(key)


def edgekit_metrics_check(host: str, port, token: bool) -> str:
    """The command that polls the exporter's /metrics on the device for 20 s and prints the last HTTP status; the
    token is read from its file there, so it never passes through Ansible (edgekit.metrics.steps.poll_command)."""
    _edgekit()
    from edgekit import layout as L
    from edgekit.metrics.steps import ExporterOptions, check_url, poll_command

    return poll_command(check_url(ExporterOptions(port=int(port), host=str(host), token=bool(token))),
                        L.EXPORTER_TOKEN if token else None)


class FilterModule:
    def filters(self):
        return {f.__name__: f for f in (edgekit_probe, edgekit_parse, edgekit_power_mode, edgekit_power_mode_reboot,
                                        edgekit_nvpmodel_status, edgekit_size, edgekit_record, edgekit_record_path,
                                        edgekit_metrics_check)}
