"""Steps that put a verified model on the device: fit check, then fetch (on the device or via the controller).

Public API (provision wires these):
    from edgekit.models.steps import model_steps, ModelRequest
    steps = model_steps(ModelRequest("chinese-alpaca-2-1.3b", quant="q4_k", ctx=None, fetch_on="auto"))

State handed to later steps (ctx.state):
    ctx.state["facts"]  read if missing (DeviceFacts)
    ctx.state["model"] = {"name", "path" (absolute, on the device), "sha256", "size", "entry" (dict), "ctx"}
      set by the fetch step after it verified or installed the file (and by the fit step with sha/size None
      in a dry run).

Device layout: /opt/edgekit/models/<name>/<file> (verified), `<file>.partial` while downloading, and
`<file>.sha256` ("sha size mtime_ns") so a re-run skips a 5 GB file without rehashing it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import urllib.parse
from dataclasses import dataclass
from importlib import resources

from edgekit.errors import UsageError
from edgekit.models import catalog, download, fit
from edgekit.models.device_fetch import PREFIX
from edgekit.remote.plan import Change, Context, Noop

from edgekit.layout import MODELS_DIR  # noqa: E402


@dataclass
class ModelRequest:
    name: str
    quant: str | None = None
    ctx: int | None = None
    fetch_on: str = "auto"            # auto | device | controller
    hf_endpoint: str | None = None
    source_url: str | None = None     # any https:// URL or a local file on the controller
    force: bool = False               # install even when the fit check says it will not fit
    sha256: str | None = None         # override the catalog's (e.g. for source_url)
    kv_type: str = "f16"
    allow_unpinned: bool = False      # install a quant with no pinned revision+sha256 (X-Linked-Etag only)

    def __post_init__(self):
        if self.fetch_on not in ("auto", "device", "controller"):
            raise UsageError(f"--fetch-on must be auto, device or controller, not {self.fetch_on!r}")
        if ":" in self.name and self.quant is None:
            self.name, _, q = self.name.partition(":")
            self.quant = q or None


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


def _resolved(request: ModelRequest, ctx: Context):
    total = _total_memory(ctx)
    entry, quant = catalog.resolve(request.name, request.quant, total)
    catalog.require_pinned(entry.name, quant.name, request.allow_unpinned, sha256=request.sha256,
                           source_url=request.source_url)       # the board decides the quant: check it again
    return entry, quant, total


def _device_script(ctx: Context) -> str:
    """Upload device_fetch.py (no secrets in it) once per run; returns its path on the device."""
    path = ctx.state.get("device_fetch_path")
    if path is None:
        source = resources.files("edgekit.models").joinpath("device_fetch.py")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
        path = f"/tmp/edgekit-device-fetch-{digest}.py"
        with resources.as_file(source) as local:
            ctx.transport.put(local, path)
        ctx.state["device_fetch_path"] = path
    return path


def run_device_script(ctx: Context, config: dict, on_event=None) -> dict:
    """Run device_fetch on the device; HF_TOKEN goes through stdin only (never argv or env)."""
    events: list[dict] = []
    config = dict(config)
    token = config.pop("token", None)

    def on_line(line: str) -> None:
        if line.startswith(PREFIX):
            try:
                event = json.loads(line[len(PREFIX):])
            except ValueError:
                return
            events.append(event)
            if on_event:
                on_event(event)

    command = f"python3 {_device_script(ctx)} {shlex.quote(json.dumps(config))}"
    if token:
        command += " --token-stdin"
    result = ctx.transport.run(command, stdin=(token + "\n") if token else None, on_line=on_line, check=False)
    last = events[-1] if events else None
    if last and last.get("event") == "error":
        from edgekit.models.device_fetch import FetchError

        raise download.translate(FetchError(last["kind"], last["message"]), config.get("url") or "")
    if result.exit_code != 0 or last is None:
        from edgekit.errors import RemoteCommandFailed

        raise RemoteCommandFailed("python3 device_fetch.py", result.exit_code,
                                  result.stdout + result.stderr, hint="the device needs python3")
    return last


class FitCheck:
    """The model (weights + KV cache + compute) fits the device's memory, or --force."""

    def __init__(self, request: ModelRequest):
        self.request = request
        self.name = f"model fits: {request.name}"

    def plan(self, ctx: Context) -> Noop | Change:
        entry, quant, total = _resolved(self.request, ctx)
        n_ctx = self.request.ctx or fit.default_ctx(entry, quant, total, self.request.kv_type)
        report = fit.check_entry(entry, quant, n_ctx, total, ctx.transport.name, self.request.kv_type)
        ctx.state["model_fit"] = report
        ctx.state.setdefault("model", {}).update({"name": entry.name, "ctx": n_ctx, "entry": entry.to_json(),
                                                  "path": f"{MODELS_DIR}/{entry.name}/{quant.file}"})
        if not report.fits and not self.request.force:
            fit.require_fit(report)
        verdict = "fits" if report.fits else "does NOT fit (--force)"
        return Noop(f"{verdict}: {report.summary()}")


class FetchModel:
    """/opt/edgekit/models/<name>/<file> is present and matches its sha256."""

    def __init__(self, request: ModelRequest):
        self.request = request
        self.name = f"model file: {request.name}"

    def _source(self, entry, quant) -> str:
        if self.request.source_url:
            return self.request.source_url
        return quant.url(entry.repo, download.endpoint(self.request.hf_endpoint))

    def plan(self, ctx: Context) -> Noop | Change:
        entry, quant, _ = _resolved(self.request, ctx)
        dest = f"{MODELS_DIR}/{entry.name}/{quant.file}"
        want_sha = (self.request.sha256 or quant.sha256 or "").lower() or None
        url = self._source(entry, quant)
        state = run_device_script(ctx, {"mode": "check", "dest": dest, "sha256": want_sha})
        model = ctx.state.setdefault("model", {})
        model.update({"name": entry.name, "path": dest, "entry": entry.to_json()})
        model.setdefault("ctx", self.request.ctx or entry.recommended_ctx)
        if state.get("state") == "verified":
            model.update({"sha256": state["sha256"], "size": state["size"]})
            return Noop(f"{dest} present, sha256 {state['sha256'][:12]}… verified")
        mode = self._mode(ctx, url)
        where = "on the device" if mode == "device" else "via the controller cache"
        size = quant.size or quant.size_approx
        why = "replace mismatching file" if state.get("state") == "mismatch" else "install"
        summary = f"{why} {entry.name}:{quant.name} ({size / 2**30:.2f} GiB) {where} from {_redact(url)}"
        commands = [f"install -d {MODELS_DIR}/{entry.name}",
                    f"download {_redact(url)} -> {dest}.partial (resume, sha256 {want_sha or 'X-Linked-Etag'})",
                    f"verify sha256, then mv {dest}.partial {dest}"]

        def apply(c: Context) -> None:
            self._apply(c, entry, quant, dest, url, want_sha, mode)

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

    def _apply(self, ctx: Context, entry, quant, dest, url, want_sha, mode) -> None:
        self._prepare_dir(ctx, entry)
        size = quant.size or None
        if mode == "device":
            def on_event(event: dict) -> None:
                if event.get("event") == "progress":
                    ctx.progress(download.Progress(event["done"], event["total"], event["rate"],
                                                   event["eta"]).text(), event["done"], event["total"])
                elif event.get("event") == "start":
                    ctx.state["model_fetch_pid"] = event.get("pid")

            done = run_device_script(ctx, {"mode": "fetch", "url": url, "dest": dest, "sha256": want_sha,
                                           "size": size, "token": download.token()}, on_event)
            ctx.state["model_transfer"] = {"mode": "device", "downloaded": done["downloaded"],
                                           "resumed_from": done["resumed_from"]}
        else:
            local = download.cache_path(entry.name, quant.file)
            got = download.fetch(url, local, want_sha, size,
                                 on_progress=lambda p: ctx.progress(p.text(), p.done, p.total))
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
    catalog.require_pinned(request.name, request.quant, request.allow_unpinned, sha256=request.sha256,
                           source_url=request.source_url)       # unknown or unpinned: refused before connecting
    return [FitCheck(request), FetchModel(request)]

