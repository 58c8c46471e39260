"""What chat needs to know about a model: family, system prompt, stop strings, sampling defaults.

`profile_for(model, family)` is the one adapter to the model catalog: a catalog model's settings are read from
its `edgekit.models.catalog.ModelEntry` (system_prompt, stop, sampling, chat_template, quants). The family
defaults below are only for models outside the catalog (`--family` with a model by URL); they are the seed's
scripts': Alpaca-2 chat.sh `--temp 0.5 --top_k 40 --top_p 0.9 --repeat_penalty 1.1` and system prompt,
Llama-3 chat.sh `--temp 0.2 --repeat_penalty 1.1`; Gemma uses Google's recommended values.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgekit.chat import prompts
from edgekit.models import catalog
from edgekit.errors import UsageError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. 你是一个乐于助人的助手。"


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; None means: leave it to the server."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repeat_penalty: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def merged(self, **overrides: Any) -> "Sampling":
        """A copy with every override that is not None applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_request(self) -> dict:
        """llama-server request fields (both /v1/chat/completions and /completion accept these names)."""
        out = {k: v for k, v in (("temperature", self.temperature), ("top_k", self.top_k), ("top_p", self.top_p),
                                  ("repeat_penalty", self.repeat_penalty), ("seed", self.seed)) if v is not None}
        if self.max_tokens is not None:
            out["max_tokens"] = out["n_predict"] = self.max_tokens
        return out


FAMILY_SAMPLING = {
    "llama2": Sampling(temperature=0.5, top_k=40, top_p=0.9, repeat_penalty=1.1),
    "llama3": Sampling(temperature=0.2, repeat_penalty=1.1),
    "gemma": Sampling(temperature=1.0, top_k=64, top_p=0.95),
}


@dataclass(frozen=True)
class ChatProfile:
    family: str | None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    stop: tuple[str, ...] = ()
    sampling: Sampling = field(default_factory=Sampling)
    model: str | None = None
    gguf_file: str | None = None
    chat_template: str | None = None     # the server-side template name llama-server is started with

    @property
    def stop_strings(self) -> list[str]:
        return prompts.stop_strings(self.family, self.stop) if self.family else list(self.stop)


def family_profile(family: str, model: str | None = None) -> ChatProfile:
    """The defaults for a family, when no catalog entry is known."""
    prompts.check_family(family)
    return ChatProfile(family=family, stop=prompts.STOP[family], sampling=FAMILY_SAMPLING[family], model=model)


def _catalog_sampling(entry: catalog.ModelEntry) -> dict:
    """The entry's sampling table (models.toml `sampling = {...}`), as Sampling fields."""
    known = {"temperature", "top_k", "top_p", "repeat_penalty", "max_tokens", "seed"}
    return {k: v for k, v in entry.sampling.items() if k in known}


def profile_for(model: str | None = None, family: str | None = None) -> ChatProfile:
    """The chat profile of a catalog model (with `family` overriding its family), or a family's defaults.

    A catalog model's system prompt, stop strings, sampling, server chat template and GGUF file (its default
    quantization's) come from its catalog entry. With neither model nor family, the profile has no family: chat
    through /v1/chat/completions still works (the server applies its template), `--raw` does not.
    """
    if family is not None:
        prompts.check_family(family)
    if model is None:
        return family_profile(family) if family else ChatProfile(family=None)
    try:
        entry = catalog.get(model)
    except UsageError:
        # a model by URL (not in the catalog): the server applies the chat template from its own GGUF
        return family_profile(family, model) if family else ChatProfile(family=None, model=model)
    fam = family or entry.family
    base = family_profile(fam, model) if fam in prompts.FAMILIES else ChatProfile(family=None, model=model)
    return replace(base, system_prompt=entry.system_prompt, stop=entry.stop or base.stop,
                   sampling=base.sampling.merged(**_catalog_sampling(entry)), gguf_file=entry.quant().file,
                   chat_template=entry.chat_template or None)
