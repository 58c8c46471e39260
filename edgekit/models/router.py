"""Several models in one service (llama-server's router mode): the check of how many fit in memory together, and
the model steps of a set. That number becomes the service's --models-max."""

from __future__ import annotations

from edgekit import layout as L
from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.facts.deployed import FileText
from edgekit.models import fit
from edgekit.models.drafts import DraftPair
from edgekit.models.steps import FetchModel, FitCheck, ModelRequest, _total_memory, require_pinned
from edgekit.remote.command import Upload
from edgekit.remote.plan import Change, Context, Noop
from edgekit.service.settings import preset_models


class ModelSetFits:
    """Router mode: how many of the models fit in memory together; that number is the service's --models-max."""

    name = "models fit together"

    def __init__(self, models_max: int | None = None, force: bool = False, cache_ram_mib: int | None = None):
        self.models_max, self.force, self.cache_ram_mib = models_max, force, cache_ram_mib

    def plan(self, ctx: Context) -> Noop:
        models = list(ctx.run.models.values())
        needs = {m.name: m.need_bytes for m in models}
        if None in needs.values():
            unknown = ", ".join(n for n, b in needs.items() if b is None)
            raise UsageError(f"the memory {unknown} needs is unknown, so how many models fit at once cannot be "
                             "told", hint="serve a model by URL on its own, not in a set")
        usable = fit.usable_bytes(_total_memory(ctx))
        together = fit.loadable_together(list(needs.values()), usable)
        told = f"{together} of {len(models)} fit in {fit.gib(usable)} usable at once (" + ", ".join(
            f"{n} {fit.gib(b)}" for n, b in needs.items()) + ")"
        chosen = self.models_max or together
        if together < 1 or (self.models_max and self.models_max > together and not self.force):
            raise UnsuitableDevice(f"{'not even one' if together < 1 else f'only {together}'} of these models "
                                   f"can stay loaded together on {ctx.transport.name}: {told}" +
                                   (f"; --models-max {self.models_max} asks for more" if self.models_max else ""),
                                   hint=f"--models-max {max(together, 1)}, smaller quants, or --force")
        ctx.run.models_max = chosen
        loaded = sum(sorted(needs.values(), reverse=True)[:chosen])
        if self.cache_ram_mib is None:       # each loaded model's server gets an equal share of what they leave
            ctx.run.cache_ram_mib = fit.prompt_cache_mib(usable - loaded) // chosen // 64 * 64
            cache = f"prompt cache {ctx.run.cache_ram_mib} MiB per loaded model (half the headroom, shared)"
        else:
            ctx.run.cache_ram_mib = self.cache_ram_mib
            cache = f"prompt cache {self.cache_ram_mib} MiB per loaded model (--cache-ram)"
            if loaded + chosen * self.cache_ram_mib * fit.MiB > usable and not self.force:
                raise UnsuitableDevice(f"--cache-ram {self.cache_ram_mib} for each of {chosen} loaded models does "
                                       f"not fit next to them: {told}",
                                       hint="a smaller --cache-ram, a smaller --models-max, or --force")
        return Noop(f"--models-max {chosen}: {told}; {cache}")


def model_set_steps(requests: list[ModelRequest], models_max: int | None = None) -> tuple[list, list]:
    """(the fit steps, the fetch steps) for the models of one service; several: router mode, with the check of
    how many fit together."""
    served = [r for r in requests if not r.draft_of]
    drafts = [r for r in requests if r.draft_of]
    for request in requests:
        require_pinned(request)
    fits = [FitCheck(r) for r in served]          # a draft is counted in its target's fit
    if len(served) > 1:
        fits.append(ModelSetFits(models_max, force=any(r.force for r in served),
                                 cache_ram_mib=served[0].cache_ram_mib))
    pairs = [DraftPair(d.draft_of, d.name) for d in drafts]      # type: ignore[arg-type]
    return fits, [*(FetchModel(r) for r in requests), *pairs]


DEFAULT_LINES = ("; the default model: loaded when the service starts", "load-on-startup = true")


def with_default(preset: str, model: str) -> str:
    """Pure: the presets with `model` as the one loaded at start (the default's two lines moved to its section)."""
    lines = [line for line in preset.splitlines() if line.strip() not in DEFAULT_LINES]
    out: list[str] = []
    in_model = False
    for line in lines:
        if line.strip().startswith("["):
            if in_model:
                while out and not out[-1].strip():
                    out.pop()
                out += [*DEFAULT_LINES, ""]
            in_model = line.strip() == f"[{model}]"
        out.append(line)
    if in_model:
        while out and not out[-1].strip():
            out.pop()
        out += list(DEFAULT_LINES)
    return "\n".join(out) + "\n"


class DefaultModel:
    """Router mode: the model loaded when the service starts (and the one `ask`/`chat`/`bench` use by default)."""

    name = "default model"

    def __init__(self, model: str):
        self.model = model

    def plan(self, ctx: Context) -> Noop | Change:
        preset = ctx.fact(FileText(L.PRESET_PATH))
        if preset is None:
            raise UsageError(f"{ctx.transport.name} serves one model, not several (no {L.PRESET_PATH})",
                             hint=f"provision several: `edgekit provision {ctx.transport.name} -m A -m B`")
        models = preset_models(preset)
        if self.model not in models:
            raise UsageError(f"{self.model} is not one of the models {ctx.transport.name} serves: "
                             f"{', '.join(models)}", hint=f"see `edgekit status {ctx.transport.name}`")
        new = with_default(preset, self.model)
        if new == preset:
            return Noop(f"{self.model} is the default already")
        return Change(f"make {self.model} the default (loaded when the service starts)",
                      [Upload(L.PRESET_PATH, new)])
