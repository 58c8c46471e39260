"""Pure: a board's power modes from its own /etc/nvpmodel.conf, and which one a name like `max` means there.

Mode ids differ per module and JetPack release (MAXN_SUPER is id 2 on an Orin Nano 8GB with JetPack 6.2, MAXN is
id 0 on an AGX Orin), so a mode is always looked up by name in the device's conf, never by a fixed id.

How a NAME resolves (`resolve`):
- a mode's own name, compared without case and without a `MODE_` prefix (`maxn_super`, `25w`, `30W_ALL`);
- `max`: MAXN_SUPER when the conf has it, else MAXN, else the mode with the most watts in its name;
- `efficient`: the mode with the fewest watts in its name (the lowest power budget, not a measured tokens per
  joule: `edgekit bench --sweep power-mode` measures that). Watts are read from names like `15W`, `MODE_30W_ALL`,
  `7W_AI`, `MODE_28_1_W` (28.1 W); a tie goes to the lowest id. A mode without watts in its name (a custom one)
  is never chosen by `max`/`efficient`, only by its own name.
- a bare number is refused: ids are not portable across boards.

Whether a switch needs a reboot (`reboot_expected`): nvpmodel asks for one ("NVPM WARN: Reboot required for changing
to this power mode") when the new mode power-gates a different part of the GPU (the *_PG_MASK values differ), a
setting the GPU driver takes only at boot; clock caps and CPU hot-plug apply live. That rule is edgekit's reading of
public reports (docs/jetson-settings.md), not NVIDIA's documentation, so the power-mode step also reads nvpmodel's
own answer and says when the prompt came anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgekit.errors import UnsuitableDevice, UsageError

_HEADER = re.compile(r"^<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)\s*>")
_DEFAULT = re.compile(r"^<\s*PM_CONFIG\s+DEFAULT\s*=\s*(\d+)\s*>")
_WATTS = re.compile(r"(?:^|_)(\d+)(?:_(\d+))?_?W(?=$|_)", re.I)

SUPER_L4T = (36, 4, 3)          # JetPack 6.2: the first release with the Orin Nano/NX "Super" modes


@dataclass(frozen=True)
class Mode:
    """One `< POWER_MODEL ID=n NAME=x >` block: its id, name and `PARAM ARG VALUE` settings in file order."""

    id: int
    name: str
    settings: tuple[tuple[str, str, str], ...] = ()

    def values(self, param: str, arg: str) -> list[str]:
        return [v for p, a, v in self.settings if p == param and a == arg]

    @property
    def watts(self) -> float | None:
        """The power budget its name states (`15W` -> 15, `MODE_28_1_W` -> 28.1), None when the name has none."""
        m = _WATTS.search(self.name)
        if not m:
            return None
        return float(f"{m[1]}.{m[2]}") if m[2] else float(m[1])

    @property
    def gpu_gating(self) -> tuple[tuple[str, str], ...]:
        """The GPU power-gating masks it sets (FBP_PG_MASK, TPC_PG_MASK, ...): taken by the GPU only at boot."""
        return tuple(sorted((a, v) for p, a, v in self.settings if a.endswith("_PG_MASK")))

    @property
    def cpus_online(self) -> int | None:
        cores = [v for p, a, v in self.settings if p == "CPU_ONLINE"]
        return sum(1 for v in cores if v == "1") if cores else None

    @property
    def gpu_max_hz(self) -> int | None:
        """The GPU clock cap in Hz; None when uncapped (-1) or not set."""
        caps = [int(v) for v in self.values("GPU", "MAX_FREQ") if v.lstrip("-").isdecimal() and int(v) > 0]
        return min(caps) if caps else None

    @property
    def emc_max_hz(self) -> int | None:
        """The memory clock cap in Hz; None when uncapped (-1 or 0) or not set."""
        caps = [int(v) for v in self.values("EMC", "MAX_FREQ") if v.lstrip("-").isdecimal() and int(v) > 0]
        return min(caps) if caps else None


@dataclass(frozen=True)
class ModeTable:
    modes: tuple[Mode, ...]
    default: int | None = None

    def by_id(self, mode_id: int | None) -> Mode | None:
        return next((m for m in self.modes if m.id == mode_id), None)

    def by_name(self, name: str) -> Mode | None:
        return next((m for m in self.modes if m.name == name), None)

    def listing(self) -> str:
        """'15W (id 0), 25W (id 1), MAXN_SUPER (id 2)'."""
        return ", ".join(f"{m.name} (id {m.id})" for m in self.modes)


def parse_conf(text: str) -> ModeTable | None:
    """Pure: /etc/nvpmodel.conf -> its modes with their settings, and the boot default; None without any mode.

    Comment lines (`#`, which is how the file's own format header is written) are skipped; a `< PARAM ... >` header
    ends a mode's block."""
    modes: list[Mode] = []
    default = None
    current: tuple[int, str] | None = None
    settings: list[tuple[str, str, str]] = []

    def close():
        if current is not None:
            modes.append(Mode(current[0], current[1], tuple(settings)))

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header or line.startswith("<"):
            close()
            current, settings = None, []
            if header:
                current = (int(header[1]), header[2])
            elif _DEFAULT.match(line):
                default = int(_DEFAULT.match(line)[1])
            continue
        parts = line.split()
        if current is not None and len(parts) == 3:
            settings.append((parts[0], parts[1], parts[2]))
    close()
    return ModeTable(tuple(modes), default) if modes else None


def _key(name: str) -> str:
    key = name.strip().upper().replace(" ", "_").replace("-", "_")
    return key[5:] if key.startswith("MODE_") else key


def _l4t_tuple(l4t: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(p) for p in (l4t or "").split(".")) or None
    except ValueError:
        return None


def super_capable(part: str | None) -> bool:
    """Orin Nano and Orin NX modules (p3767-*) have Super modes with JetPack 6.2; AGX Orin and older ones do not."""
    return bool(part) and part.startswith("p3767")


def super_note(l4t: str | None) -> str:
    """Why a board lacks the Super modes, from its L4T release."""
    have = _l4t_tuple(l4t)
    if have is not None and have < SUPER_L4T:
        return (f"the Super modes (MAXN_SUPER) need JetPack 6.2 (L4T 36.4.3) or later; this board runs L4T {l4t}")
    return ("the Super modes (MAXN_SUPER) exist only for Orin Nano and Orin NX modules, in the *_super nvpmodel "
            "configuration JetPack 6.2 installs for them")


def too_new(mode: Mode, l4t: str | None) -> str | None:
    """Pure: why `mode` must not be set on a board running L4T `l4t` (a Super mode before JetPack 6.2 / L4T 36.4.3,
    whatever its nvpmodel.conf lists); None when it may be, or when the release is unknown."""
    have = _l4t_tuple(l4t)
    if "SUPER" in _key(mode.name) and have is not None and have < SUPER_L4T:
        return super_note(l4t)
    return None


def resolve(name: str, table: ModeTable, l4t: str | None = None, part: str | None = None) -> tuple[Mode, str]:
    """Pure: the mode NAME means on this board, and a note on how it was chosen ('' for an exact name).

    Raises UsageError for a bare id and UnsuitableDevice for a name the board lacks (listing its modes, and saying
    when the Super modes need a newer JetPack)."""
    wanted = name.strip()
    if wanted.isdecimal():
        raise UsageError(f"--power-mode {wanted}: name a mode, not an id (ids differ per board and JetPack); "
                         f"this board has {table.listing()}",
                         hint="use a mode's name, or `max` / `efficient`")
    lowered = wanted.lower()
    if lowered in ("max", "efficient"):
        usable = [m for m in table.modes if too_new(m, l4t) is None]     # a Super mode before JetPack 6.2: never
        if lowered == "max":
            for top in ("MAXN_SUPER", "MAXN"):
                found = next((m for m in usable if _key(m.name) == top), None)
                if found:
                    break
            else:
                rated = [m for m in usable if m.watts is not None]
                found = max(rated, key=lambda m: (m.watts, -m.id)) if rated else None
        else:
            rated = [m for m in usable if m.watts is not None]
            found = min(rated, key=lambda m: (m.watts, m.id)) if rated else None
        if found is None:
            raise UnsuitableDevice(f"--power-mode {wanted}: none of this board's modes ({table.listing()}) states "
                                   "its watts or is MAXN, so edgekit cannot rank them",
                                   hint="name the mode to use instead of `max` / `efficient`")
        note = f"`{lowered}` is {found.name} here"
        if lowered == "max" and _key(found.name) != "MAXN_SUPER" and super_capable(part):
            note += f" ({super_note(l4t)})"
        return found, note
    found = next((m for m in table.modes if m.name == wanted), None) or \
        next((m for m in table.modes if _key(m.name) == _key(wanted)), None)
    if found is not None:
        refused = too_new(found, l4t)
        if refused:
            raise UnsuitableDevice(f"power mode {found.name} is refused on this board: {refused}",
                                   hint=f"update the board to JetPack 6.2 (L4T {'.'.join(map(str, SUPER_L4T))}) "
                                        "or later, or pick another mode (`max` picks the best one there)")
        return found, ""
    message = f"this board has no power mode {wanted!r}; its modes are {table.listing()}"
    if "SUPER" in _key(wanted):
        message += f" ({super_note(l4t)})"
    raise UnsuitableDevice(message, hint="pick one of the modes listed, or `max` / `efficient`")


def reboot_expected(current: Mode | None, target: Mode) -> bool:
    """Whether nvpmodel will ask for a reboot to switch from `current` to `target` (see the module's docstring).
    An unknown current mode predicts no reboot: the step then reads nvpmodel's own answer."""
    return current is not None and current.gpu_gating != target.gpu_gating


_PMODE = re.compile(r"pmode:\s*(\d+)")


def status_pmode(text: str | None) -> int | None:
    """The mode id in /var/lib/nvpmodel/status ('pmode:0002' -> 2), None when absent."""
    m = _PMODE.search(text or "")
    return int(m[1]) if m else None


def status_with(text: str | None, mode_id: int) -> str:
    """/var/lib/nvpmodel/status selecting `mode_id` for the next boot, keeping anything else on its line."""
    token = f"pmode:{mode_id:04d}"
    if text and _PMODE.search(text):
        return _PMODE.sub(token, text, count=1) if text.endswith("\n") else _PMODE.sub(token, text, count=1) + "\n"
    return token + "\n"
