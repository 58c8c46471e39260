"""Steps that put a verified model on the device: fit check, then fetch (on the device or via the controller).

Public API (provision wires these):
    from edgekit.models.steps import model_steps, ModelRequest, require_pinned
    steps = model_steps(ModelRequest("chinese-alpaca-2-1.3b", quant="q4_k", ctx=None, fetch_on="auto"))

A catalog model is described by models.toml. A model by URL (`source_url`, with a `name` that is not a catalog name,
or no name: then it is named after the URL's file) is described by its own GGUF header: the shape the fit check
uses, its embedded chat template; its sha256 is `sha256` (--sha256), required unless `allow_unpinned`.

Nothing reaches the model's place unchecked: the file must be a valid GGUF (gguf_header.check_file: header, tensor
infos, every tensor's data inside the file; on the controller before the upload, on the device by gguf_header.py
uploaded like device_fetch.py), and its sha256 must match edgekit.lock (lockfile: recorded the first time a model
is fetched, verified on every later install on every device). A file that fails is removed and the install is
refused with exit 4, like a sha256 mismatch: the bytes from outside are wrong, not the device (exit 5 is kept for
"does not fit this device").

State handed to later steps (ctx.state):
    ctx.state["facts"]  read if missing (DeviceFacts)
    ctx.state["model"] = {"name", "path" (absolute, on the device), "sha256", "size", "entry" (dict), "ctx"}
      set by the fetch step after it verified or installed the file (and by the fit step with sha/size None
      in a dry run).

Device layout: /opt/edgekit/models/<name>/<file> (verified), `<file>.partial` while downloading, and
`<file>.sha256` ("sha size mtime_ns") so a re-run skips a 5 GB file without rehashing it.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgekit import lockfile
from edgekit.errors import EdgekitError, RemoteCommandFailed, UsageError
from edgekit.models import catalog, device_fetch, download, fit
from edgekit.models.device_fetch import PREFIX
from edgekit.models.gguf_header import GGUFError, GGUFHeader, check_file, read_header_file
from edgekit.remote.plan import Change, Context, Noop

from edgekit.layout import MODELS_DIR  # noqa: E402

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
    ctx: int | None = None
    fetch_on: str = "auto"            # auto | device | controller
    hf_endpoint: str | None = None
    source_url: str | None = None     # any https:// URL or a local file on the controller
    force: bool = False               # install even when the fit check says it will not fit
    sha256: str | None = None         # override the catalog's (e.g. for source_url)
    kv_type: str = "f16"
    allow_unpinned: bool = False      # install a quant with no pinned revision+sha256 (X-Linked-Etag only)
    lock_file: str | None = None      # the edgekit.lock to verify and record sha256s in (None: lockfile.default_path())

    def __post_init__(self):
        if self.fetch_on not in ("auto", "device", "controller"):
            raise UsageError(f"--fetch-on must be auto, device or controller, not {self.fetch_on!r}")
        if self.name and ":" in self.name and self.quant is None:
            self.name, _, q = self.name.partition(":")
            self.quant = q or None
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
        raise UsageError(f"cannot name the model from {_redact(url)!r}" if not request.name else
                         f"model name {name!r} is not 1-128 letters, digits, '.', '_' or '-'", hint=own)
    if not request.name and _in_catalog(name):
        raise UsageError(f"the file of {_redact(url)} is named like the catalog model {name}, but it is not that "
                         "entry's download", hint=own)
    return name, file or f"{name}.gguf"


def url_entry(request: ModelRequest, header: GGUFHeader | None = None,
              size: int = 0) -> tuple[catalog.ModelEntry, catalog.Quant]:
    """A catalog-like entry for a model by URL: shape, context and chat template from its GGUF header (when read).

    The chat template is the GGUF's own (llama-server applies tokenizer.chat_template): no built-in name is set."""
    name, file = url_names(request)
    source = _redact(request.source_url or "")
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
        raise UsageError(f"{name} comes from {_redact(request.source_url or '')}, which is not a catalog download, "
                         "and no sha256 was given to check it against",
                         hint=f"pass --sha256 with the file's SHA256 (from its source page), or "
                              f"{catalog.ALLOW_UNPINNED_FLAG} to install it checked only against the server's "
                              "X-Linked-Etag (and edgekit.lock after the first install)")


def _facts(ctx: Context):
    facts = ctx.state.get("facts")
    if facts is None:
        from edgekit.facts.device import read_facts

        facts = ctx.state["facts"] = read_facts(ctx.transport)
    return facts


def _total_memory(ctx: Context) -> int:
    mem = (_facts(ctx).memory or {}).get("total_bytes")
    if not mem:
        raise UsageError("cannot read the device's memory size (/proc/meminfo)",
                         hint=f"run `edgekit facts {ctx.transport.name}` to see what was found")
    return int(mem)


def _resolved(request: ModelRequest, ctx: Context, header: GGUFHeader | None = None, size: int = 0):
    total = _total_memory(ctx)
    if request.by_url:
        entry, quant = url_entry(request, header, size)
        return entry, quant, total
    entry, quant = catalog.resolve(request.name or "", request.quant, total)
    catalog.require_pinned(entry.name, quant.name, request.allow_unpinned, sha256=request.sha256,
                           source_url=request.source_url)       # the board decides the quant: check it again
    return entry, quant, total


def _dest(entry, quant) -> str:
    return f"{MODELS_DIR}/{entry.name}/{quant.file}"


def _device_script(ctx: Context, module: str = "device_fetch.py") -> str:
    """Upload one of edgekit.models' stdlib-only scripts (no secrets in them) once per run; its path on the device."""
    key = f"device_script:{module}"
    path = ctx.state.get(key)
    if path is None:
        source = resources.files("edgekit.models").joinpath(module)
        with resources.as_file(source) as local:      # a fresh mktemp name: a fixed one could be planted first
            path = ctx.transport.put_temp(local, f"edgekit-{Path(module).stem.replace('_', '-')}")
        ctx.state[key] = path
    return path


def _run_script(ctx: Context, module: str, args: list[str], stdin: str | None = None, on_event=None):
    """Run an uploaded script with python3 on the device; returns (its "@@edgekit " events, the result)."""
    events: list[dict] = []

    def on_line(line: str) -> None:
        if line.startswith(PREFIX):
            try:
                event = json.loads(line[len(PREFIX):])
            except ValueError:
                return
            events.append(event)
            if on_event:
                on_event(event)

    command = " ".join(shlex.quote(a) for a in ["python3", _device_script(ctx, module), *args])
    result = ctx.transport.run(command, stdin=stdin, on_line=on_line, check=False)
    return events, result


def run_device_script(ctx: Context, config: dict, on_event=None) -> dict:
    """Run device_fetch on the device; HF_TOKEN goes through stdin only (never argv or env)."""
    config = dict(config)
    token = config.pop("token", None)
    events, result = _run_script(ctx, "device_fetch.py", [json.dumps(config)] + (["--token-stdin"] if token else []),
                                 stdin=(token + "\n") if token else None, on_event=on_event)
    last = events[-1] if events else None
    if last and last.get("event") == "error":
        raise download.translate(device_fetch.FetchError(last["kind"], last["message"]), config.get("url") or "")
    if result.exit_code != 0 or last is None:
        raise RemoteCommandFailed("python3 device_fetch.py", result.exit_code,
                                  result.stdout + result.stderr, hint="the device needs python3")
    return last


def device_gguf(ctx: Context, path: str) -> tuple[str, GGUFHeader | str | None]:
    """Check a GGUF on the device (gguf_header.py, uploaded like device_fetch.py).

    Returns ("valid", GGUFHeader), ("missing", None) or ("invalid", the reason)."""
    events, result = _run_script(ctx, "gguf_header.py", [path])
    last = events[-1] if events else None
    if last and last.get("event") == "gguf":
        return "valid", GGUFHeader.from_json(last)
    if last and last.get("event") == "missing":
        return "missing", None
    if last and last.get("event") == "error" and last.get("kind") == "gguf":
        return "invalid", str(last.get("message"))
    raise RemoteCommandFailed(f"python3 gguf_header.py {path}", result.exit_code,
                              result.stdout + result.stderr, hint="the device needs python3")


def _invalid(what: str, reason: str, removed: bool = True) -> InvalidModelFile:
    return InvalidModelFile(f"{what} is not a valid GGUF model: {reason}; "
                            f"{'the fetched file was removed and ' if removed else ''}nothing was installed",
                            hint="check that the URL names a .gguf model file; if the download was cut short, run "
                                 "again to fetch it anew")


def _fit_url(ctx: Context, request: ModelRequest, header: GGUFHeader, size: int):
    """The fit of a model by URL from its GGUF header; refuses (exit 5) unless it fits or --force. -> (entry, ctx)."""
    entry, quant, total = _resolved(request, ctx, header, size)
    try:
        fit.Shape.from_dict(entry.shape)
    except UsageError as e:
        if request.force:
            ctx.state["model_fit"] = None
            return entry, request.ctx or entry.recommended_ctx, f"fit not checked (--force): {e.message}"
        raise UsageError(f"cannot estimate whether {entry.name} fits: its GGUF header lacks part of the shape "
                         f"({e.message})", hint="pass --force to install it without the fit check") from None
    n_ctx = request.ctx or fit.default_ctx(entry, quant, total, request.kv_type)
    report = fit.check_entry(entry, quant, n_ctx, total, ctx.transport.name, request.kv_type)
    ctx.state["model_fit"] = report
    if not report.fits and not request.force:
        fit.require_fit(report)
    return entry, n_ctx, f"{'fits' if report.fits else 'does NOT fit (--force)'}: {report.summary()}"


class FitCheck:
    """The model (weights + KV cache + compute) fits the device's memory, or --force."""

    def __init__(self, request: ModelRequest):
        self.request = request
        self.name = f"model fits: {request.name or url_names(request)[0]}"

    def plan(self, ctx: Context) -> Noop | Change:
        if self.request.by_url:
            return self._plan_url(ctx)
        entry, quant, total = _resolved(self.request, ctx)
        n_ctx = self.request.ctx or fit.default_ctx(entry, quant, total, self.request.kv_type)
        report = fit.check_entry(entry, quant, n_ctx, total, ctx.transport.name, self.request.kv_type)
        ctx.state["model_fit"] = report
        ctx.state.setdefault("model", {}).update({"name": entry.name, "ctx": n_ctx, "entry": entry.to_json(),
                                                  "path": _dest(entry, quant)})
        if not report.fits and not self.request.force:
            fit.require_fit(report)
        verdict = "fits" if report.fits else "does NOT fit (--force)"
        return Noop(f"{verdict}: {report.summary()}")

    def _plan_url(self, ctx: Context) -> Noop:
        """A model by URL: the header of the local file, or of the one already on the device; else after the fetch."""
        entry, quant, _ = _resolved(self.request, ctx)
        dest = _dest(entry, quant)
        ctx.state.setdefault("model", {}).update({"name": entry.name, "path": dest})
        url = self.request.source_url or ""
        header = None
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            local = Path(urllib.parse.urlsplit(url).path if url.startswith("file://") else url).expanduser()
            if local.is_file():
                try:
                    header, size = read_header_file(local), local.stat().st_size
                except GGUFError as e:
                    raise _invalid(str(local), e.message, removed=False) from None
        else:
            status, found = device_gguf(ctx, dest)
            if status == "valid":
                header, size = found, found.file_size or 0          # type: ignore[union-attr]
        if header is None:
            return Noop(f"{entry.name}: the fit is checked against its GGUF header once the file is fetched, "
                        "before it is installed")
        entry, n_ctx, verdict = _fit_url(ctx, self.request, header, size)
        ctx.state["model"].update({"ctx": n_ctx, "entry": entry.to_json()})
        return Noop(verdict)


class FetchModel:
    """/opt/edgekit/models/<name>/<file> is present, a valid GGUF, and matches its sha256 and edgekit.lock."""

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
        state = run_device_script(ctx, {"mode": "check", "dest": dest, "sha256": want_sha})
        model = ctx.state.setdefault("model", {})
        model.update({"name": entry.name, "path": dest})
        if not r.by_url:
            model["entry"] = entry.to_json()
            model.setdefault("ctx", r.ctx or entry.recommended_ctx)
        why = "replace mismatching file" if state.get("state") == "mismatch" else "install"
        if state.get("state") == "verified":
            status, found = device_gguf(ctx, dest)
            if status == "valid":
                if ctx.dry_run:
                    lockfile.check("model", lock_name, state["sha256"], r.lock_file)
                else:
                    lockfile.check_or_record("model", lock_name, state["sha256"], _redact(url), r.lock_file)
                if r.by_url:
                    entry, n_ctx, _ = _fit_url(ctx, r, found, state["size"])      # type: ignore[arg-type]
                    model.update({"entry": entry.to_json(), "ctx": n_ctx})
                model.update({"sha256": state["sha256"], "size": state["size"]})
                return Noop(f"{dest} present, sha256 {state['sha256'][:12]}… verified, a valid GGUF")
            why = f"replace the file there, which is not a valid GGUF ({found})"
        mode = self._mode(ctx, url)
        where = "on the device" if mode == "device" else "via the controller cache"
        size = quant.size or quant.size_approx
        shown = f"{size / 2**30:.2f} GiB" if size else "size from the server"
        summary = f"{why}: {entry.name}:{quant.name} ({shown}) {where} from {_redact(url)}"
        lock = lockfile.location(r.lock_file)
        checks = ["check it is a valid GGUF (header, tensor infos, tensor data within the file), else remove it",
                  f"check its sha256 against {lock} (recorded there the first time)"]
        if r.by_url:
            checks.append("check the fit from its GGUF header")
        if mode == "device":
            commands = [f"install -d {MODELS_DIR}/{entry.name}",
                        f"download {_redact(url)} -> {dest}.partial (resume, sha256 {want_sha or 'X-Linked-Etag'})",
                        f"verify sha256, then mv {dest}.partial {dest}", *(f"{c}: {dest}" for c in checks)]
        else:
            cache = download.cache_path(entry.name, quant.file)
            commands = [f"download {_redact(url)} -> {cache} (resume, sha256 {want_sha or 'X-Linked-Etag'})",
                        *(f"{c}: {cache}" for c in checks), f"install -d {MODELS_DIR}/{entry.name}",
                        f"push {cache} -> {dest}.partial, verify sha256, then mv {dest}.partial {dest}"]

        def apply(c: Context) -> None:
            try:
                self._apply(c, entry, quant, dest, url, want_sha, mode, lock_name)
            except download.ChecksumError as e:
                if not from_lock:
                    raise
                raise lockfile.LockMismatch(
                    f"{e.message}; the expected sha256 is the one {lock} recorded for model {lock_name} when it was "
                    "first fetched", hint=f"if the model really changed upstream, remove the \"{lock_name}\" entry "
                                          f"from {lock} and run again") from None

        return Change(summary, commands, apply, detail={"mode": mode, "url": _redact(url), "path": dest})

    def _mode(self, ctx: Context, url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return "controller"      # a local file on the controller
        if self.request.fetch_on != "auto":
            return self.request.fetch_on
        port = parts.port or (443 if parts.scheme == "https" else 80)
        probe = (f"python3 -c 'import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)' "
                 f"{shlex.quote(parts.hostname or '')} {port}")
        return "device" if ctx.transport.run(probe, check=False).exit_code == 0 else "controller"

    def _prepare_dir(self, ctx: Context, entry) -> None:
        user = ctx.transport.user
        ctx.sudo(f"install -d -m 0755 {MODELS_DIR} && install -d -m 0755 -o {shlex.quote(user)} "
                 f"-g $(id -gn {shlex.quote(user)}) {MODELS_DIR}/{entry.name}")

    def _accept(self, ctx: Context, lock_name: str, sha: str, url: str, header: GGUFHeader, size: int) -> None:
        """The last checks before the file is put in place: edgekit.lock, then (a model by URL) the fit."""
        lockfile.check_or_record("model", lock_name, sha, _redact(url), self.request.lock_file)
        if self.request.by_url:
            entry, n_ctx, _ = _fit_url(ctx, self.request, header, size)
            ctx.state["model"].update({"entry": entry.to_json(), "ctx": n_ctx})

    def _apply(self, ctx: Context, entry, quant, dest, url, want_sha, mode, lock_name) -> None:
        size = quant.size or None
        if mode == "device":
            self._prepare_dir(ctx, entry)

            def on_event(event: dict) -> None:
                if event.get("event") == "progress":
                    ctx.progress(download.Progress(event["done"], event["total"], event["rate"],
                                                   event["eta"]).text(), event["done"], event["total"])
                elif event.get("event") == "start":
                    ctx.state["model_fetch_pid"] = event.get("pid")
                elif event.get("event") == "warning":
                    ctx.progress(event["message"])

            done = run_device_script(ctx, {"mode": "fetch", "url": url, "dest": dest, "sha256": want_sha,
                                           "size": size, "token": download.token()}, on_event)
            try:
                status, found = device_gguf(ctx, dest)
                if status != "valid":
                    raise _invalid(f"{_redact(url)} (fetched to {dest})", str(found or "the file is missing"))
                self._accept(ctx, lock_name, done["sha256"], url, found, done["size"])   # type: ignore[arg-type]
            except EdgekitError:
                q = shlex.quote
                ctx.transport.run(f"rm -f {q(dest)} {q(device_fetch.sidecar_path(dest))}", check=False)
                raise
            ctx.state["model_transfer"] = {"mode": "device", "downloaded": done["downloaded"],
                                           "resumed_from": done["resumed_from"]}
        else:
            local = download.cache_path(entry.name, quant.file)
            got = download.fetch(url, local, want_sha, size,
                                 on_progress=lambda p: ctx.progress(p.text(), p.done, p.total))
            try:
                header = check_file(local)
            except GGUFError as e:
                for path in (local, Path(device_fetch.sidecar_path(str(local)))):
                    path.unlink(missing_ok=True)
                raise _invalid(f"{_redact(url)} (cached as {local})", e.message) from None
            for warning in got.warnings:
                ctx.progress(warning)
            self._accept(ctx, lock_name, got.sha256, url, header, got.size)
            # room for it on the device? (exit 5 with the numbers before anything is copied)
            run_device_script(ctx, {"mode": "space", "dest": dest, "size": got.size})
            self._prepare_dir(ctx, entry)
            ctx.progress(f"pushing {local.name} to {ctx.transport.name}")
            ctx.transport.put(local, f"{dest}.partial")
            done = run_device_script(ctx, {"mode": "adopt", "dest": dest, "sha256": got.sha256, "size": got.size})
            ctx.state["model_transfer"] = {"mode": "controller", "downloaded": got.downloaded,
                                           "resumed_from": got.resumed_from, "cache": str(local)}
        ctx.state["model"].update({"sha256": done["sha256"], "size": done["size"]})


def _redact(url: str) -> str:
    return url.split("?", 1)[0]


def model_steps(request: ModelRequest) -> list:
    """The steps that make `request`'s model present and verified on the device."""
    require_pinned(request)        # unknown or unpinned: refused before connecting
    return [FitCheck(request), FetchModel(request)]
