"""The model catalog (edgekit/data/models.toml): known GGUFs, where they live, and how to chat with them.

`get(name)` returns a `ModelEntry`; `lookup(spec)` turns "NAME[:QUANT]" into the entry and one `Quant`.
Unknown names raise UsageError naming the closest known ones. Test models (`gemma3-270m`, `tiny-llama`)
live in the catalog's test section: found by `get`, hidden from `entries()` unless `include_test=True`.

A quant is *pinned* when it has a 40-hex commit `revision` and a 64-hex `sha256`: the download URL is fixed and
the bytes are checked against a published hash. The file is validated when it loads (`parse`): a quant that is
not pinned must say so (`pinned = false` with an `unpinned_reason`), anything else is a CatalogError. The
install path calls `require_pinned`, which refuses an unpinned quant unless the user opted in (--allow-unpinned).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from importlib import resources

from edgekit.errors import EdgekitError, UsageError

DEFAULT_ENDPOINT = "https://huggingface.co"
SMALL_BOARD_BYTES = 6 * 2**30     # below this much RAM, `small_board_quant` is the default
ALLOW_UNPINNED_FLAG = "--allow-unpinned"
_REVISION = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class CatalogError(EdgekitError):
    """The packaged model catalog (edgekit/data/models.toml) is malformed: a bug in edgekit, not in the input."""


@dataclass(frozen=True)
class Quant:
    name: str
    file: str
    size: int = 0              # exact bytes when known (0 = unknown: use X-Linked-Size at download)
    size_approx: int = 0       # rounded figure from the Hub page (display, fit estimate)
    sha256: str = ""           # empty = unknown: only the server's X-Linked-Etag can be checked
    revision: str = "main"
    source: str = ""           # the public page the sha256 and revision were read from
    unpinned_reason: str = ""  # why it is not pinned (set exactly when it is not)

    @property
    def pinned(self) -> bool:
        """A 40-hex commit revision and a 64-hex sha256: a fixed URL and a published hash to check it against."""
        return bool(_REVISION.fullmatch(self.revision) and _SHA256.fullmatch(self.sha256))

    def to_json(self) -> dict:
        return {**asdict(self), "pinned": self.pinned}

    def url(self, repo: str, endpoint: str | None = None) -> str:
        """The Hugging Face style URL: {endpoint}/{repo}/resolve/{revision}/{file}."""
        base = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        return f"{base}/{repo}/resolve/{self.revision}/{self.file}"

    @property
    def best_size(self) -> int:
        """The exact size when known, else the Hub page's rounded one (0: neither known)."""
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
    drafts: tuple[str, ...] = ()   # catalog models meant as its speculative-decoding drafts (same vocabulary)
    tokenizer: dict = field(default_factory=dict)   # gguf_header.Tokenizer.to_json() when read from the file

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
        data["drafts"] = list(self.drafts)
        data["quants"] = {name: q.to_json() for name, q in self.quants.items()}
        return data


_QUANT_KEYS = {f.name for f in fields(Quant)} - {"name"}


def _quant(model: str, name: str, spec: dict) -> Quant:
    """One quant from the TOML, checked: hashes well formed, and pinned or explicitly marked `pinned = false`."""
    where = f"models.toml {model}:{name}"
    spec = dict(spec)
    declared = spec.pop("pinned", None)
    unknown = set(spec) - _QUANT_KEYS
    if unknown:
        raise CatalogError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if not spec.get("file"):
        raise CatalogError(f"{where}: no file")
    quant = Quant(name=name, **spec)
    if quant.sha256 and not _SHA256.fullmatch(quant.sha256):
        raise CatalogError(f"{where}: sha256 {quant.sha256!r} is not 64 lowercase hex digits")
    if not quant.revision:
        raise CatalogError(f"{where}: empty revision (use a 40-hex commit id)")
    if quant.pinned:
        if declared is False or quant.unpinned_reason:
            raise CatalogError(f"{where}: has a 40-hex revision and a 64-hex sha256 but is marked unpinned",
                               hint="remove `pinned = false` and `unpinned_reason`")
        return quant
    if declared is not False or not quant.unpinned_reason.strip():
        raise CatalogError(f"{where}: not pinned (revision {quant.revision!r}, sha256 {quant.sha256 or 'empty'}) "
                           "and not marked so",
                           hint="give a 40-hex commit revision and a 64-hex sha256 read from a public page, or "
                                "mark it `pinned = false` with an `unpinned_reason`")
    return quant


def _entry(name: str, raw: dict, test: bool) -> ModelEntry:
    quants = {q.lower(): _quant(name, q.lower(), spec) for q, spec in raw.get("quants", {}).items()}
    entry = ModelEntry(
        name=name, repo=raw["repo"], family=raw["family"], chat=bool(raw.get("chat", True)),
        chat_template=raw.get("chat_template", ""), system_prompt=raw.get("system_prompt", ""),
        native_ctx=int(raw["native_ctx"]), recommended_ctx=int(raw["recommended_ctx"]),
        stop=tuple(raw.get("stop", [])), default_quant=raw["default_quant"],
        small_board_quant=raw.get("small_board_quant", raw["default_quant"]), note=raw.get("note", ""),
        shape=dict(raw.get("shape", {})), sampling=dict(raw.get("sampling", {})), quants=quants, test=test,
        drafts=tuple(raw.get("drafts", ())), tokenizer=dict(raw.get("tokenizer", {})))
    for role in ("default_quant", "small_board_quant"):
        if getattr(entry, role) not in quants:
            raise CatalogError(f"models.toml {name}: {role} {getattr(entry, role)!r} is not one of its quants "
                               f"({', '.join(quants) or 'none'})")
    return entry


def parse(text: str) -> dict[str, ModelEntry]:
    """The catalog in `text` (models.toml), validated; CatalogError on the first problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"models.toml: {e}") from None
    out: dict[str, ModelEntry] = {}
    for section, test in (("models", False), ("test", True)):
        for name, spec in raw.get(section, {}).items():
            if name in out:
                raise CatalogError(f"models.toml: {name} is defined twice")
            try:
                out[name] = _entry(name, spec, test)
            except (KeyError, TypeError, ValueError) as e:
                raise CatalogError(f"models.toml {name}: {type(e).__name__}: {e}") from None
    for entry in out.values():
        for draft in entry.drafts:
            if draft not in out or draft == entry.name:
                raise CatalogError(f"models.toml {entry.name}: draft {draft!r} is not another catalog model")
            if out[draft].shape.get("vocab_size") != entry.shape.get("vocab_size"):
                raise CatalogError(f"models.toml {entry.name}: draft {draft} has another vocabulary size")
    return out


@lru_cache(maxsize=1)
def _load() -> dict[str, ModelEntry]:
    return parse(resources.files("edgekit").joinpath("data/models.toml").read_text(encoding="utf-8"))


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


def split_ref(ref: str) -> tuple[str, str | None]:
    """'NAME[:QUANT]' -> (NAME, QUANT or None): the one reading of a model reference."""
    name, _, quant = ref.partition(":")
    return name, quant or None


def lookup(spec: str, quant: str | None = None, total_memory: int | None = None) -> tuple[ModelEntry, Quant]:
    """'NAME[:QUANT]' (or NAME plus quant) -> (entry, quant)."""
    name, spec_quant = split_ref(spec)
    entry = get(name)
    return entry, entry.quant(quant or spec_quant, total_memory)


def require_pinned(name: str, quant: str | None = None, allow_unpinned: bool = False, *,
                   total_memory: int | None = None, sha256: str | None = None,
                   source_url: str | None = None) -> Quant:
    """The quant NAME[:QUANT] installs, refusing (UsageError, exit 2) one whose download is not pinned.

    Pinned = a 40-hex revision and a 64-hex sha256 in the catalog. An explicit `sha256` (e.g. `--sha256`) pins the
    bytes whatever the revision; with `source_url` (the user's own URL) the revision is not used, so a known
    sha256 is enough. `allow_unpinned` (--allow-unpinned) accepts the rest: then only the server's X-Linked-Etag
    is checked. Without `quant` and `total_memory` (board not known yet), every quant the board could pick
    (default and small-board) must pass, so the refusal comes before anything connects.
    """
    spec_name, spec_quant = split_ref(name)
    quant = quant or spec_quant
    if sha256 and not _SHA256.fullmatch(sha256.strip().lower()):
        raise UsageError(f"sha256 {sha256!r} is not 64 hex digits", hint="copy the file's SHA256 from its source page")
    entry = get(spec_name)
    chosen = entry.quant(quant, total_memory)
    if allow_unpinned or sha256:
        return chosen
    candidates = [chosen]
    if quant is None and total_memory is None:
        candidates.append(entry.quant(entry.small_board_quant))
    for q in candidates:
        if q.pinned or (source_url and _SHA256.fullmatch(q.sha256)):
            continue
        pinned = ", ".join(f"{entry.name}:{p.name}" for p in entry.quants.values() if p.pinned)
        other = f"install a pinned quantization ({pinned}), or " if pinned else ""
        raise UsageError(f"{entry.name}:{q.name} is not pinned (no published commit and sha256 to check its "
                         f"download against): {q.unpinned_reason or 'no hash known'}",
                         hint=f"{other}pass {ALLOW_UNPINNED_FLAG} to install it checked only against the server's "
                              "X-Linked-Etag")
    return chosen
