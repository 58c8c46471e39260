"""Jetson tuning as steps: power mode, clocks, headless boot, swap without zram (issue 14).

`tuning_steps(TuningOptions(...))` gives the steps for one device, in the order they must run (the power mode before
the clocks: jetson_clocks pins to the mode's maximum); `tuning_checks(options)` gives the one check step that
refuses, before anything changes, what the steps would refuse. `restore_tuning_commands` undoes what they did.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit import layout as L
from edgekit.errors import UsageError
from edgekit.tuning.restore import restore_tuning_commands
from edgekit.tuning.steps import ClocksMax, Headless, PowerMode, Swap, TuningChecks, parse_size

CLOCKS = ("max",)


@dataclass(frozen=True)
class TuningOptions:
    power_mode: str | None = None      # a mode's name in the board's nvpmodel.conf, or `max` / `efficient`
    clocks: str | None = None          # `max`: jetson_clocks now and at every boot
    headless: bool = False             # boot to multi-user.target
    swap: str | None = None            # a swap file's size (8G), zram off
    swap_path: str = L.SWAP_FILE
    force_swap_on_sd: bool = False

    def validate(self) -> None:
        """Checks that need no device (run with the other settings checks, before connecting)."""
        if self.clocks is not None and self.clocks not in CLOCKS:
            raise UsageError(f"--clocks {self.clocks!r}: the only value is `max`",
                             hint="`max` pins the clocks at the power mode's maximum, at every boot too")
        if self.power_mode is not None and not self.power_mode.strip():
            raise UsageError("--power-mode needs a mode's name, or `max` / `efficient`")
        if self.swap is not None:
            parse_size(self.swap)
        if self.force_swap_on_sd and self.swap is None:
            raise UsageError("--force-swap-on-sd without --swap",
                             hint="give a swap size too, or leave forcing swap on eMMC/SD off")


def tuning_steps(options: TuningOptions) -> list:
    """The tuning steps options ask for, in order: power mode, clocks, headless, swap."""
    options.validate()
    steps: list = []
    if options.power_mode is not None:
        steps.append(PowerMode(options.power_mode))
    if options.clocks == "max":
        steps.append(ClocksMax())
    if options.headless:
        steps.append(Headless())
    if options.swap is not None:
        steps.append(Swap(options.swap, options.swap_path, options.force_swap_on_sd))
    return steps


def tuning_checks(options: TuningOptions) -> list:
    """[TuningChecks] over the steps options ask for ([] when none): for provision's group of checks."""
    steps = tuning_steps(options)
    return [TuningChecks(steps)] if steps else []


__all__ = ["TuningOptions", "tuning_steps", "tuning_checks", "restore_tuning_commands", "PowerMode", "ClocksMax",
           "Headless", "Swap", "TuningChecks"]
