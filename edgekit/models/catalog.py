"""The model catalog (edgekit/data/models.toml): known GGUFs, where they live, and how to chat with them.

`get(name)` returns a `ModelEntry`; `resolve(spec)` turns "NAME[:QUANT]" into the entry and one `Quant`.
Unknown names raise UsageError naming the closest known ones. Test models (`gemma3-270m`, `tiny-llama`)
live in the catalog's test section: found by `get`, hidden from `entries()` unless `include_test=True`.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources

from edgekit.errors import UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
SMALL_BOARD_BYTES = 6 * 2**30     # below this much RAM, `small_board_quant` is the default


@dataclass(frozen=True)
class Quant:
    name: str
    file: str
    size: int = 0              # exact bytes when known (0 = unknown: use X-Linked-Size at download)
    size_approx: int = 0       # rounded figure from the Hub page (display, fit estimate)
    sha256: str = ""           # empty = unknown: verify against X-Linked-Etag at download
    revision: str = "main"
    source: str = ""

    def url(self, repo: str, endpoint: str | None = None) -> str:
        """The Hugging Face style URL: {endpoint}/{repo}/resolve/{revision}/{file}."""
        base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        return f"{base}/{repo}/resolve/{self.revision}/{self.file}"

    @property
    def best_size(self) -> int:
        return self.size or self.size_approx


@dataclass(frozen=True)
class ModelEntry:
    name: str
    repo: str
    family: str
    chat: bool
    chat_template: str
    system_prompt: str
    native_ctx: int
    recommended_ctx: int
    stop: tuple[str, ...]
    default_quant: str
    small_board_quant: str
    note: str
    shape: dict
    sampling: dict
    quants: dict[str, Quant] = field(default_factory=dict)
    test: bool = False

    def quant(self, name: str | None = None, total_memory: int | None = None) -> Quant:
        """The named quantization, or the default for a board with `total_memory` bytes of RAM."""
        if name is None:
            small = total_memory is not None and total_memory < SMALL_BOARD_BYTES
            name = self.small_board_quant if small else self.default_quant
        key = name.lower()
        if key not in self.quants:
            raise UsageError(f"{self.name} has no quantization {name!r}",
                             hint=f"choose one of: {', '.join(self.quants)} (e.g. {self.name}:{self.default_quant})")
        return self.quants[key]

    def to_json(self) -> dict:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


def _entry(name: str, raw: dict, test: bool) -> ModelEntry:
    quants = {q.lower(): Quant(name=q.lower(), **spec) for q, spec in raw.get("quants", {}).items()}
    return ModelEntry(
        name=name, repo=raw["repo"], family=raw["family"], chat=bool(raw.get("chat", True)),
        chat_template=raw.get("chat_template", ""), system_prompt=raw.get("system_prompt", ""),
        native_ctx=int(raw["native_ctx"]), recommended_ctx=int(raw["recommended_ctx"]),
        stop=tuple(raw.get("stop", [])), default_quant=raw["default_quant"],
        small_board_quant=raw.get("small_board_quant", raw["default_quant"]), note=raw.get("note", ""),
        shape=dict(raw.get("shape", {})), sampling=dict(raw.get("sampling", {})), quants=quants, test=test)


@lru_cache(maxsize=1)
def _load() -> dict[str, ModelEntry]:
    text = resources.files("edgekit").joinpath("data/models.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    out: dict[str, ModelEntry] = {}
    for section, test in (("models", False), ("test", True)):
        for name, spec in raw.get(section, {}).items():
            out[name] = _entry(name, spec, test)
    return out


def entries(include_test: bool = False) -> list[ModelEntry]:
    """Catalog entries in file order; test models only when asked."""
    return [e for e in _load().values() if include_test or not e.test]


def names(include_test: bool = True) -> list[str]:
    return [e.name for e in entries(include_test)]


def get(name: str) -> ModelEntry:
    """The catalog entry for `name`; UsageError with the closest names when unknown."""
    found = _load().get(name.strip().lower())
    if found is not None:
        return found
    close = difflib.get_close_matches(name.lower(), names(), n=3, cutoff=0.4)
    hint = (f"did you mean {' or '.join(close)}? " if close else "") + "see `edgekit models list`"
    raise UsageError(f"unknown model {name!r}", hint=hint)


def resolve(spec: str, quant: str | None = None, total_memory: int | None = None) -> tuple[ModelEntry, Quant]:
    """'NAME[:QUANT]' (or NAME plus quant) -> (entry, quant)."""
    name, _, q = spec.partition(":")
    entry = get(name)
    return entry, entry.quant(quant or q or None, total_memory)
