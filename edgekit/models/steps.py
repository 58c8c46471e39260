"""Steps that put a verified model on the device: fit check, then fetch (on the device or via the controller).

Public API (provision wires these):
    from edgekit.models.steps import model_steps, ModelRequest, require_pinned
    steps = model_steps(ModelRequest("chinese-alpaca-2-1.3b", quant="q4_k", n_ctx=None, fetch_on="auto"))

A catalog model is described by models.toml. A model by URL (`source_url`, with a `name` that is not a catalog name,
or no name: then it is named after the URL's file) is described by its own GGUF header: the shape the fit check
uses, its embedded chat template; its sha256 is `sha256` (--sha256), required unless `allow_unpinned`.

Nothing reaches the model's place unchecked: the file must be a valid GGUF (gguf_header.check_file: header, tensor
infos, every tensor's data inside the file; on the controller before the upload, on the device by the device
helper's `gguf`), and its sha256 must match edgekit.lock (lockfile: recorded the first time a model
is fetched, verified on every later install on every device). A file that fails is removed and the install is
refused with exit 4, like a sha256 mismatch: the bytes from outside are wrong, not the device (exit 5 is kept for
"does not fit this device").

Reads ctx.run.facts (read if missing); leaves a ModelState per model in ctx.run.models (name, path, n_ctx, entry,
need_bytes; sha256 and size once the fetch step verified or installed the file) and ctx.run.model_transfer. The fetch itself:
edgekit.models.fetch.

Device layout: <layout.MODELS_DIR>/<name>/<file> (verified), `<file>.partial` while downloading, and
`<file>.sha256` ("sha size mtime_ns") so a re-run skips a 5 GB file without rehashing it.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from edgekit import lockfile
from edgekit.errors import UsageError
from edgekit.facts.device import read_facts
from edgekit.layout import MODELS_DIR
from edgekit.models import catalog, download, fit
from edgekit.models.gguf_header import GGUFError, GGUFHeader, read_header_file
from edgekit.models.fetch import Fetch
from edgekit.models.on_device import GgufOnDevice, ModelFile, TcpReachable
from edgekit.models.request import (InvalidModelFile, ModelRequest, invalid_file, redact, require_pinned,  # noqa: F401  (re-exported)
                                    url_entry, url_names)
from edgekit.remote.plan import Change, Context, Noop
from edgekit.remote.run_state import ModelState
from edgekit.tuning.facts import BootTarget, DesktopMemory

def _facts(ctx: Context):
    if ctx.run.facts is None:
        ctx.run.facts = read_facts(ctx.transport)
    return ctx.run.facts


def _total_memory(ctx: Context) -> int:
    """The RAM a model may count on: all of it, less what a Jetson's desktop session keeps holding (unless this run
    makes it boot headless: then that memory is free from the next boot)."""
    mem = (_facts(ctx).memory or {}).get("total_bytes")
    if not mem:
        raise UsageError("cannot read the device's memory size (/proc/meminfo)",
                         hint=f"run `edgekit facts {ctx.transport.name}` to see what was found")
    return int(mem) - _desktop_held(ctx)


def _desktop_held(ctx: Context) -> int:
    t = ctx.run.tuning
    if t.desktop_held_bytes is None:
        if t.desktop_bytes is not None or not getattr(_facts(ctx), "jetson", None):
            t.desktop_held_bytes = 0                    # going headless (freed at the next boot), or not a Jetson
        else:
            graphical = ctx.fact(BootTarget()) == "graphical"
            t.desktop_held_bytes = ctx.fact(DesktopMemory())["bytes"] if graphical else 0
    return t.desktop_held_bytes


def _tuning_note(ctx: Context) -> str:
    t, notes = ctx.run.tuning, []
    if t.desktop_held_bytes:
        notes.append(f"the desktop holds {fit.gib(t.desktop_held_bytes)}, counted as taken (--headless frees it)")
    if t.desktop_bytes:
        notes.append(f"--headless frees the desktop's {fit.gib(t.desktop_bytes)} from the next boot")
    if t.swap_bytes:
        notes.append("swap is not counted: a model that swaps crawls")
    return f" ({'; '.join(notes)})" if notes else ""


def _resolved(request: ModelRequest, ctx: Context, header: GGUFHeader | None = None, size: int = 0):
    total = _total_memory(ctx)
    if request.by_url:
        entry, quant = url_entry(request, header, size)
        return entry, quant, total
    entry, quant = catalog.lookup(request.name or "", request.quant, total)
    catalog.require_pinned(entry.name, quant.name, request.allow_unpinned, sha256=request.sha256,
                           source_url=request.source_url)       # the board decides the quant: check it again
    return entry, quant, total


def _dest(entry, quant) -> str:
    return f"{MODELS_DIR}/{entry.name}/{quant.file}"


def _model(ctx: Context, name: str, path: str, request: ModelRequest | None = None) -> ModelState:
    """The run's record of one model, or of a draft (the fit step makes it, the fetch step completes it)."""
    model = ctx.run.table(request).setdefault(name, ModelState(name, path))
    model.path = path
    return model


def _draft(ctx: Context, request: ModelRequest, total: int):
    """The draft served with `request`'s model: (entry, quant) as its own request will fetch it, recorded in the
    run's drafts; None without one."""
    if not request.draft:
        return None
    entry, quant = catalog.lookup(request.draft, None, total)
    ctx.run.drafts.setdefault(entry.name, ModelState(entry.name, _dest(entry, quant))).entry = entry.to_json()
    return entry, quant


def _fit_url(ctx: Context, request: ModelRequest, header: GGUFHeader, size: int):
    """The fit of a model by URL from its GGUF header; refuses (exit 5) unless it fits or --force.
    -> (entry, n_ctx, verdict)."""
    entry, quant, total = _resolved(request, ctx, header, size)
    try:
        fit.Shape.from_dict(entry.shape)
    except UsageError as e:
        if request.force:
            return entry, request.n_ctx or entry.recommended_ctx, f"fit not checked (--force): {e.message}"
        raise UsageError(f"cannot estimate whether {entry.name} fits: its GGUF header lacks part of the shape "
                         f"({e.message})", hint="pass --force to install it without the fit check") from None
    draft = _draft(ctx, request, total)
    n_ctx = request.n_ctx or fit.default_ctx(entry, quant, total, request.kv_type, draft)
    report = fit.check_entry(entry, quant, n_ctx, total, ctx.transport.name, request.kv_type, request.cache_ram_mib,
                             draft)
    if not report.fits and not request.force:
        fit.require_fit(report)
    _count_cache(ctx, report)
    if draft:
        ctx.run.table(request)[entry.name].draft = draft[0].name
    return entry, n_ctx, f"{'fits' if report.fits else 'does NOT fit (--force)'}: {report.summary()}"


def _count_cache(ctx: Context, report: fit.FitReport) -> None:
    """The prompt-cache bound the service gets: the default model's (router mode: ModelSetFits shares it)."""
    if not ctx.run.models or next(iter(ctx.run.models)) == report.model:
        ctx.run.cache_ram_mib = report.cache_ram_mib


def local_model_file(url: str | None) -> Path | None:
    """The controller's file a --model-url names (a path or file://), when it is one that exists; else None."""
    if not url or urllib.parse.urlsplit(url).scheme in ("http", "https"):
        return None
    local = Path(urllib.parse.urlsplit(url).path if url.startswith("file://") else url).expanduser()
    return local if local.is_file() else None


class FitCheck:
    """The model (weights + KV cache + compute) fits the device's memory, or --force."""

    def __init__(self, request: ModelRequest):
        self.request = request
        self.name = f"model fits: {request.name or url_names(request)[0]}"

    def plan(self, ctx: Context) -> Noop:
        if self.request.by_url:
            return self._plan_url(ctx)
        entry, quant, total = _resolved(self.request, ctx)
        draft = _draft(ctx, self.request, total)
        n_ctx = self.request.n_ctx or fit.default_ctx(entry, quant, total, self.request.kv_type, draft)
        report = fit.check_entry(entry, quant, n_ctx, total, ctx.transport.name, self.request.kv_type,
                                 self.request.cache_ram_mib, draft)
        model = _model(ctx, entry.name, _dest(entry, quant), self.request)
        model.n_ctx, model.entry, model.need_bytes = n_ctx, entry.to_json(), report.model_bytes
        model.draft = draft[0].name if draft else None
        if not report.fits and not self.request.force:
            fit.require_fit(report)
        _count_cache(ctx, report)
        verdict = "fits" if report.fits else "does NOT fit (--force)"
        return Noop(f"{verdict}: {report.summary()}{_tuning_note(ctx)}")

    def _plan_url(self, ctx: Context) -> Noop:
        """A model by URL: the header of the local file, or of the one already on the device; else after the fetch."""
        entry, quant, total = _resolved(self.request, ctx)
        dest = _dest(entry, quant)
        model = _model(ctx, entry.name, dest, self.request)
        draft = _draft(ctx, self.request, total)
        model.draft = draft[0].name if draft else None
        url = self.request.source_url or ""
        header = None
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            local = local_model_file(url)
            if local is not None:
                try:
                    header, size = read_header_file(local), local.stat().st_size
                except GGUFError as e:
                    raise invalid_file(str(local), e.message, removed=False) from None
        else:
            status, found = ctx.fact(GgufOnDevice(dest))
            if status == "valid":
                header, size = found, found.file_size or 0          # type: ignore[union-attr]
        if header is None:
            return Noop(f"{entry.name}: the fit is checked against its GGUF header once the file is fetched, "
                        "before it is installed")
        entry, model.n_ctx, verdict = _fit_url(ctx, self.request, header, size)
        model.entry = entry.to_json()
        return Noop(verdict)


class FetchModel:
    """The model file (layout.MODELS_DIR/<name>/<file>) is present, a valid GGUF, matching its sha256 and edgekit.lock."""

    def __init__(self, request: ModelRequest):
        self.request = request
        self.name = f"model file: {request.name or url_names(request)[0]}"

    def _source(self, entry, quant) -> str:
        if self.request.source_url:
            return self.request.source_url
        return quant.url(entry.repo, download.endpoint(self.request.hf_endpoint))

    def plan(self, ctx: Context) -> Noop | Change:
        r = self.request
        entry, quant, _ = _resolved(r, ctx)
        dest = _dest(entry, quant)
        lock_name = f"{entry.name}/{quant.file}"
        want_sha = (r.sha256 or quant.sha256 or "").lower() or None
        if want_sha:
            lockfile.check("model", lock_name, want_sha, r.lock_file)    # pinned != recorded: refused before any change
        locked = lockfile.recorded("model", lock_name, r.lock_file)
        from_lock = want_sha is None and locked is not None
        want_sha = want_sha or locked
        url = self._source(entry, quant)
        state = ctx.fact(ModelFile(dest, want_sha))
        model = _model(ctx, entry.name, dest, r)
        if not r.by_url:
            model.entry = entry.to_json()
            model.n_ctx = model.n_ctx or r.n_ctx or entry.recommended_ctx
        why = "replace mismatching file" if state.get("state") == "mismatch" else "install"
        if state.get("state") == "verified":
            status, found = ctx.fact(GgufOnDevice(dest))
            if status == "valid":
                if ctx.dry_run:
                    lockfile.check("model", lock_name, state["sha256"], r.lock_file)
                else:
                    lockfile.check_or_record("model", lock_name, state["sha256"], redact(url), r.lock_file)
                if r.by_url:
                    entry, model.n_ctx, _ = _fit_url(ctx, r, found, state["size"])      # type: ignore[arg-type]
                    model.entry = entry.to_json()
                model.sha256, model.size = state["sha256"], state["size"]
                return Noop(f"{dest} present, sha256 {state['sha256'][:12]}… verified, a valid GGUF")
            why = f"replace the file there, which is not a valid GGUF ({found})"
        mode = self._mode(ctx, url)
        where = "on the device" if mode == "device" else "via the controller cache"
        shown = f"{quant.best_size / 2**30:.2f} GiB" if quant.best_size else "size from the server"
        summary = f"{why}: {entry.name}:{quant.name} ({shown}) {where} from {redact(url)}"
        fetch = Fetch(self.request, entry, quant, dest, url, want_sha, mode, lock_name, _fit_url)
        ops = fetch.ops(ctx)

        def apply(c: Context) -> None:
            try:
                fetch.apply(c, ops)
            except download.ChecksumError as e:
                if not from_lock:
                    raise
                lock = lockfile.location(r.lock_file)
                raise lockfile.LockMismatch(
                    f"{e.message}; the expected sha256 is the one {lock} recorded for model {lock_name} when it was "
                    "first fetched", hint=f"if the model really changed upstream, remove the \"{lock_name}\" entry "
                                          f"from {lock} and run again") from None

        return Change(summary, ops, apply, detail={"mode": mode, "url": redact(url), "path": dest})

    def _mode(self, ctx: Context, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return "controller"      # a local file on the controller
        if self.request.fetch_on != "auto":
            return self.request.fetch_on
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return "device" if ctx.fact(TcpReachable(parts.hostname or "", port)) else "controller"


def model_steps(request: ModelRequest) -> list:
    """The steps that make `request`'s model present and verified on the device."""
    require_pinned(request)        # unknown or unpinned: refused before connecting
    return [FitCheck(request), FetchModel(request)]
