"""What one run learns and hands from step to step, typed: facts, the build, the model, the service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BuildState:
    """The llama.cpp build the service runs: its versioned prefix and stamp (None in a dry run before install)."""

    prefix: str
    current: str
    stamp: dict | None = None

    @property
    def bin_dir(self) -> str:
        return f"{self.prefix}/bin"


@dataclass
class ModelState:
    """The model the service serves: its place on the device and, once verified, its sha256 and size."""

    name: str
    path: str = ""
    n_ctx: int | None = None              # the context window the service gets
    entry: dict = field(default_factory=dict)
    sha256: str | None = None
    size: int | None = None
    draft: str | None = None              # the name of its speculative draft (in RunState.drafts)
    need_bytes: int | None = None         # memory it takes loaded (weights, KV cache, compute, runtime, draft) per
                                          # the fit, without the prompt cache (run.cache_ram_mib)


@dataclass
class TuningState:
    """What the Jetson tuning steps found and did, for the fit check and the report (edgekit.tuning)."""

    power_mode: str | None = None          # the mode the board runs, or will run after the next boot
    after_reboot: list[str] = field(default_factory=list)    # changes that take effect at the next boot
    desktop_bytes: int | None = None       # RSS of the desktop session now (headless frees about this at next boot)
    zram_swap_bytes: int | None = None     # zram swap capacity turned off
    swap_bytes: int | None = None          # the swap file's size
    desktop_held_bytes: int | None = None  # what the desktop keeps holding (counted as taken by the fit check)


@dataclass
class RunState:
    # The engine sits below the facts and the steps (docs/concepts.md, Layers): their types are named, not imported.
    facts: Any = None                     # edgekit.facts.device.DeviceFacts, from preflight
    cuda_arch_override: str | None = None
    service: Any = None                   # edgekit.service.steps.ServiceOptions, the service's settings
    service_groups: list[str] = field(default_factory=list)
    build: BuildState | None = None
    build_seconds: float = 0.0
    resolved_builds: dict[Any, Any] = field(default_factory=dict)   # BuildSpec -> its resolution, once per run
    models: dict[str, ModelState] = field(default_factory=dict)   # what the service serves, the default first
    drafts: dict[str, ModelState] = field(default_factory=dict)   # speculative drafts, by name (model.draft names it)
    models_max: int | None = None         # router mode: models loaded at once (what fits together)
    cache_ram_mib: int | None = None      # the prompt-cache bound per server (--cache-ram) the fit counted
    model_transfer: dict | None = None    # how the model arrived: {"mode", "downloaded", "resumed_from", ...}
    api_key_new: str | None = None        # a key generated in this run (shown once)
    health: dict | None = None            # {"loaded_s", "smoke_s"}
    smoke_answer: str | None = None
    tuning: TuningState = field(default_factory=TuningState)

    def table(self, request) -> dict[str, ModelState]:
        """Where a model request's state lives: the drafts' table for a draft, else the served models'."""
        return self.drafts if getattr(request, "draft_of", None) else self.models

    @property
    def model(self) -> ModelState | None:
        """The default model (the only one, outside router mode)."""
        return next(iter(self.models.values()), None)

    @property
    def router(self) -> bool:
        return len(self.models) > 1
