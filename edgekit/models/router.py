"""Several models in one service (llama-server's router mode): the check of how many fit in memory together, and
the model steps of a set. That number becomes the service's --models-max."""

from __future__ import annotations

from edgekit.errors import UnsuitableDevice, UsageError
from edgekit.models import fit
from edgekit.models.steps import FetchModel, FitCheck, ModelRequest, _total_memory, require_pinned
from edgekit.remote.plan import Context, Noop


class ModelSetFits:
    """Router mode: how many of the models fit in memory together; that number is the service's --models-max."""

    name = "models fit together"

    def __init__(self, models_max: int | None = None, force: bool = False):
        self.models_max, self.force = models_max, force

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
        return Noop(f"--models-max {chosen}: {told}")


def model_set_steps(requests: list[ModelRequest], models_max: int | None = None) -> tuple[list, list]:
    """(the fit steps, the fetch steps) for the models of one service; several: router mode, with the check of
    how many fit together."""
    for request in requests:
        require_pinned(request)
    fits = [FitCheck(r) for r in requests]
    if len(requests) > 1:
        fits.append(ModelSetFits(models_max, force=any(r.force for r in requests)))
    return fits, [FetchModel(r) for r in requests]
