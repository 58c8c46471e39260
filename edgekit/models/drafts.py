"""Speculative decoding's draft models: a pair is served only when the two share one tokenizer.

A draft proposes tokens the target then checks in one batch; the ids must mean the same text in both, so the
two GGUFs' tokenizers must match: vocabulary size, the token list (a sha256 of every token's text, in id order)
and types, and the settings llama.cpp compares (vocabulary type, BOS/EOS ids, add-BOS/EOS). The fingerprint is
read from each GGUF header by edgekit.models.gguf_header (its `tokenizer`, read here as a Tokenizer); catalog entries carry it when it was read
from the file (`tokenizer = {...}` in models.toml), and the vocabulary size in every entry's shape.

Checked twice, each time before the draft can reach the server: `check_pair` before anything connects (the
catalog's fingerprints, or a local model file's own header), and the `DraftPair` step on the device, from the two
files' headers once both are there, before the env file names the draft.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import UsageError
from edgekit.models import catalog
from edgekit.models.gguf_header import TOKENIZER_KEYS
from edgekit.models.on_device import GgufOnDevice
from edgekit.remote.plan import Context, Noop


@dataclass(frozen=True)
class Tokenizer:
    """What a GGUF's tokenizer is, read from its header: vocabulary size, a sha256 of its token list (each token's
    text, length-prefixed, in id order) and of its token types, and its scalar settings (TOKENIZER_KEYS)."""

    vocab_size: int | None
    tokens_sha256: str | None
    types_sha256: str | None = None
    settings: tuple = ()               # ((key, value), ...) for the TOKENIZER_KEYS present

    def to_json(self) -> dict:
        return {"vocab_size": self.vocab_size, "tokens_sha256": self.tokens_sha256,
                "types_sha256": self.types_sha256, "settings": dict(self.settings)}

    @classmethod
    def from_json(cls, data: dict | None) -> "Tokenizer | None":
        if not isinstance(data, dict):
            return None
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        return cls(data.get("vocab_size"), data.get("tokens_sha256"), data.get("types_sha256"),
                   tuple(sorted((k, v) for k, v in settings.items() if k in TOKENIZER_KEYS)))

    def differences(self, other: "Tokenizer") -> list[str]:
        """What differs from `other`, each as "what: mine vs other's" (empty: the same tokenizer)."""
        out = []
        if self.vocab_size != other.vocab_size:
            out.append(f"vocabulary size {self.vocab_size} vs {other.vocab_size}")
        if self.tokens_sha256 != other.tokens_sha256:
            out.append(f"token list sha256 {str(self.tokens_sha256)[:12]} vs {str(other.tokens_sha256)[:12]}")
        elif self.types_sha256 != other.types_sha256:
            out.append(f"token types sha256 {str(self.types_sha256)[:12]} vs {str(other.types_sha256)[:12]}")
        mine, theirs = dict(self.settings), dict(other.settings)
        for key in TOKENIZER_KEYS:
            if mine.get(key) != theirs.get(key):
                out.append(f"tokenizer.ggml.{key} {mine.get(key, 'unset')} vs {theirs.get(key, 'unset')}")
        return out


class DraftMismatch(UsageError):
    """A draft whose tokenizer is not its target's: refused before it is served."""


def _refuse(target: str, draft: str, differences: list[str]) -> DraftMismatch:
    return DraftMismatch(f"{draft} cannot draft for {target}: their tokenizers differ ({'; '.join(differences)}; "
                         f"{target}'s first)",
                         hint=f"a draft must share its target's vocabulary: see `edgekit models show {target}` for "
                              "its drafts, or use draft-free speculation (--spec-type ngram-mod)")


def check_pair(target: str, target_tok: Tokenizer | None, target_vocab: int | None,
               draft: str, draft_tok: Tokenizer | None, draft_vocab: int | None) -> str:
    """Pure: refuse (DraftMismatch) a pair whose tokenizers are known to differ; otherwise say what was compared
    (the whole fingerprint, or only the vocabulary size until the files' headers are read)."""
    if target == draft:
        raise UsageError(f"{draft} cannot draft for itself", hint="a draft is a smaller model of the same vocabulary")
    if target_tok is not None and draft_tok is not None:
        differences = target_tok.differences(draft_tok)
        if differences:
            raise _refuse(target, draft, differences)
        return f"same tokenizer ({target_tok.vocab_size} tokens, sha256 {str(target_tok.tokens_sha256)[:12]}…)"
    if target_vocab and draft_vocab and target_vocab != draft_vocab:
        raise _refuse(target, draft, [f"vocabulary size {target_vocab} vs {draft_vocab}"])
    return f"same vocabulary size ({target_vocab}); the token lists are compared from the files' headers"


def catalog_tokenizer(entry: catalog.ModelEntry) -> Tokenizer | None:
    return Tokenizer.from_json(entry.tokenizer) if entry.tokenizer else None


def check_catalog_pair(target: catalog.ModelEntry | None, target_header, draft: catalog.ModelEntry) -> str:
    """Before connecting: the target (a catalog entry, or a model file's header read on the controller) and a
    catalog draft."""
    if target_header is not None and target_header.tokenizer:
        t_tok, t_vocab = Tokenizer.from_json(target_header.tokenizer), target_header.vocab_size
        t_name = target.name if target else (target_header.name or "the model")
    elif target is not None:
        t_tok, t_vocab, t_name = catalog_tokenizer(target), target.shape.get("vocab_size"), target.name
    else:
        return "compared from the files' headers on the device"
    return check_pair(t_name, t_tok, t_vocab, draft.name, catalog_tokenizer(draft), draft.shape.get("vocab_size"))


class DraftPair:
    """The draft's file and the target's have the same tokenizer (from their GGUF headers on the device)."""

    def __init__(self, target: str, draft: str):
        self.target, self.draft = target, draft
        self.name = f"draft pair: {draft} for {target}"

    def plan(self, ctx: Context) -> Noop:
        target, draft = ctx.run.models.get(self.target), ctx.run.drafts.get(self.draft)
        assert target is not None and draft is not None, "the model steps record both first"
        found = {}
        for role, model in (("target", target), ("draft", draft)):
            status, header = ctx.fact(GgufOnDevice(model.path))
            if status != "valid" or not getattr(header, "tokenizer", None):
                return Noop(f"compared once {model.path} is on the device, before the server is given the draft")
            found[role] = header
        said = check_pair(target.name, Tokenizer.from_json(found["target"].tokenizer), found["target"].vocab_size,
                          draft.name, Tokenizer.from_json(found["draft"].tokenizer), found["draft"].vocab_size)
        return Noop(f"{draft.name} drafts for {target.name}: {said}")
