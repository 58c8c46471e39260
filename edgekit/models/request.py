"""What model to install: a catalog NAME[:QUANT] or a model by URL (named and described by its own GGUF header),
checked to be pinned before anything connects."""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from dataclasses import dataclass

from edgekit.errors import UsageError
from edgekit.models import catalog, download, fit
from edgekit.models.gguf_header import GGUFHeader

URL_CTX = 4096                 # the context a model by URL gets by default (at most its own; lowered to fit)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class InvalidModelFile(download.DownloadError):
    """The file is not a valid GGUF (truncated, foreign, corrupt): it was removed and nothing was installed."""


@dataclass
class ModelRequest:
    name: str | None                  # catalog NAME[:QUANT]; with source_url any other name (None: the URL's file)
    quant: str | None = None
    n_ctx: int | None = None         # the context window (None: the catalog's, lowered to fit)
    fetch_on: str = "auto"            # auto | device | controller
    hf_endpoint: str | None = None
    source_url: str | None = None     # any https:// URL or a local file on the controller
    force: bool = False               # install even when the fit check says it will not fit
    sha256: str | None = None         # override the catalog's (e.g. for source_url)
    kv_type: str = "f16"
    allow_unpinned: bool = False      # install a quant with no pinned revision+sha256 (X-Linked-Etag only)
    lock_file: str | None = None      # the edgekit.lock to verify and record sha256s in (None: lockfile.default_path())
    cache_ram_mib: int | None = None  # the prompt-cache bound (--cache-ram; None: the fit's share)
    draft: str | None = None          # the catalog NAME[:QUANT] served as its speculative draft (--draft)
    draft_of: str | None = None       # this request is a draft: for the model of this name (fit with it, not alone)

    def __post_init__(self):
        if self.fetch_on not in ("auto", "device", "controller"):
            raise UsageError(f"--fetch-on must be auto, device or controller, not {self.fetch_on!r}")
        if self.name and ":" in self.name and self.quant is None:
            self.name, self.quant = catalog.split_ref(self.name)
        if not self.name and not self.source_url:
            raise UsageError("which model? give a catalog name or a model URL", hint="see `edgekit models list`")

    @property
    def by_url(self) -> bool:
        """A model by URL that is not in the catalog: described by its own GGUF header."""
        return bool(self.source_url) and not (self.name and _in_catalog(self.name))


def _in_catalog(name: str) -> bool:
    try:
        catalog.get(name)
    except UsageError:
        return False
    return True


def url_names(request: ModelRequest) -> tuple[str, str]:
    """(model name, file name) of a model by URL: the name given, else the URL's file name without `.gguf`."""
    url = request.source_url or ""
    path = urllib.parse.urlsplit(url).path if "://" in url else url
    stem = posixpath.basename(urllib.parse.unquote(path))
    stem = _UNSAFE.sub("-", stem[:-5] if stem.lower().endswith(".gguf") else stem).strip(".-")[:120]
    file = f"{stem}.gguf" if stem else ""
    name = request.name or stem
    own = "give the model a name of its own (letters, digits, '.', '_', '-'; not one in `edgekit models list`)"
    if not _NAME.fullmatch(name or ""):
        raise UsageError(f"cannot name the model from {redact(url)!r}" if not request.name else
                         f"model name {name!r} is not 1-128 letters, digits, '.', '_' or '-'", hint=own)
    if not request.name and _in_catalog(name):
        raise UsageError(f"the file of {redact(url)} is named like the catalog model {name}, but it is not that "
                         "entry's download", hint=own)
    return name, file or f"{name}.gguf"


def url_entry(request: ModelRequest, header: GGUFHeader | None = None,
              size: int = 0) -> tuple[catalog.ModelEntry, catalog.Quant]:
    """A catalog-like entry for a model by URL: shape, context and chat template from its GGUF header (when read).

    The chat template is the GGUF's own (llama-server applies tokenizer.chat_template): no built-in name is set."""
    name, file = url_names(request)
    source = redact(request.source_url or "")
    qname = (request.quant or "gguf").lower()
    quant = catalog.Quant(name=qname, file=file, size=size, sha256=(request.sha256 or "").lower(), revision="",
                          source=source, unpinned_reason="" if request.sha256 else "model by URL without --sha256")
    native = (header.context_length if header and _usable("context_length", header.context_length) else None) \
        or URL_CTX
    shape = {k: v for k in fit.Shape.__dataclass_fields__ if _usable(k, v := getattr(header, k, None))}
    entry = catalog.ModelEntry(
        name=name, repo=source, family="", chat=bool(header and header.chat_template), chat_template="",
        system_prompt="", native_ctx=native, recommended_ctx=min(native, URL_CTX), stop=(), default_quant=qname,
        small_board_quant=qname, note=f"from {source}: shape and chat template from its GGUF header", shape=shape,
        sampling={}, quants={qname: quant})
    return entry, quant


def _usable(key: str, value) -> bool:
    """A shape value the fit can use (the header may come from the device as JSON): a name, or a positive int."""
    if key == "architecture":
        return isinstance(value, str) and bool(value)
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def require_pinned(request: ModelRequest) -> None:
    """Refuse before connecting (UsageError, exit 2): an unknown or unpinned catalog model, or a model by URL with
    neither --sha256 nor --allow-unpinned."""
    if not request.by_url:
        catalog.require_pinned(request.name or "", request.quant, request.allow_unpinned, sha256=request.sha256,
                               source_url=request.source_url)
        return
    name, _ = url_names(request)
    if request.sha256:
        if not _SHA256.fullmatch(request.sha256.strip().lower()):
            raise UsageError(f"sha256 {request.sha256!r} is not 64 hex digits",
                             hint="copy the file's SHA256 from its source page")
    elif not request.allow_unpinned:
        raise UsageError(f"{name} comes from {redact(request.source_url or '')}, which is not a catalog download, "
                         "and no sha256 was given to check it against",
                         hint=f"pass --sha256 with the file's SHA256 (from its source page), or "
                              f"{catalog.ALLOW_UNPINNED_FLAG} to install it checked only against the server's "
                              "X-Linked-Etag (and edgekit.lock after the first install)")


def invalid_file(what: str, reason: str, removed: bool = True) -> InvalidModelFile:
    return InvalidModelFile(f"{what} is not a valid GGUF model: {reason}; "
                            f"{'the fetched file was removed and ' if removed else ''}nothing was installed",
                            hint="check that the URL names a .gguf model file; if the download was cut short, run "
                                 "again to fetch it anew")


def redact(url: str) -> str:
    return url.split("?", 1)[0]
