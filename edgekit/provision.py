"""`edgekit provision`: preflight, build llama.cpp, fetch the model, install and start the service, prove it answers.

Also `status` on the same layout (uninstall and rollback are steps of their own: edgekit.uninstall, edgekit.rollback).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

from edgekit import layout as L
from edgekit import lockfile, settings
from edgekit import state as controller_state
from edgekit.llamacpp.packs import InstallPack
from edgekit.llamacpp.spec import BuildSpec
from edgekit.llamacpp.steps import BuildPlanned, run_build
from edgekit.errors import EdgekitError, UnsuitableDevice, UsageError
from edgekit.facts.deployed import Device, FileText, RouterChildren, read
from edgekit.facts.device import require_supported
from edgekit.models import catalog, gguf_header
from edgekit.models import fit, lora
from edgekit.models.drafts import check_catalog_pair
from edgekit.models.lora import Adapter
from edgekit.models.request import url_names
from edgekit.models.router import model_set_steps
from edgekit.models.steps import ModelRequest, local_model_file, require_pinned
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Context, Noop, run_steps
from edgekit import healthy
from edgekit.service import probe
from edgekit.service.settings import parse_env
from edgekit.service.steps import (ApiKey, DaemonReload, EnvFile, Healthy, PortFree, PresetFile,
                                   ServiceOptions, ServiceRunning, ServiceUser, UnitFile, probe_host, unit_properties,
                                   wait_healthy)
from edgekit.metrics.steps import ExporterInstalled, ExporterOptions, ExporterPortFree
from edgekit.metrics.tokens import token_path
from edgekit.settings import Settings
from edgekit.tuning import TuningOptions, tuning_checks, tuning_steps


def checks(opts: ProvisionOptions) -> list:
    """The checks that refuse before any change: the server's port, the exporter's, what the tuning would refuse."""
    return [PortFree(), *([ExporterPortFree(opts.exporter)] if opts.exporter else []), *tuning_checks(opts.tuning)]


def exporter_steps(opts: ProvisionOptions) -> list:
    return [ExporterInstalled(opts.exporter)] if opts.exporter else []


def service_steps() -> list:
    """The steps that install and start the service, prove it answers, and record that state."""
    return [ApiKey(), EnvFile(), PresetFile(), UnitFile(), DaemonReload(), ServiceRunning(), Healthy(),
            healthy.RecordHealthy()]


@dataclass
class ProvisionOptions:
    model: ModelRequest                  # the default model (the only one, outside router mode)
    build: BuildSpec = field(default_factory=BuildSpec)
    service: ServiceOptions = field(default_factory=ServiceOptions)
    more_models: list[ModelRequest] = field(default_factory=list)    # router mode: the others
    draft: ModelRequest | None = None    # the default model's speculative draft (--draft)
    lora: Adapter | None = None          # a LoRA adapter served with it (--lora), checked against it
    models_max: int | None = None
    tuning: TuningOptions = field(default_factory=TuningOptions)
    exporter: ExporterOptions | None = None          # the board + server metrics exporter (None: --no-metrics)

    @property
    def models(self) -> list[ModelRequest]:
        return [self.model, *self.more_models, *([self.draft] if self.draft else [])]


def options(s: Settings) -> ProvisionOptions:
    """ProvisionOptions from validated settings; a model that is not pinned is refused here, before connecting.
    With --model-url and no --model, the model is one by URL, named and described by its own file."""
    by_url = bool(s.model_url) and s.source("model") == "default"
    requests = []
    for ref in s.model_refs:
        name, quant = catalog.split_ref(ref)
        requests.append(s.take(ModelRequest, name=None if by_url else name, quant=None if by_url else quant,
                               n_ctx=s.ctx, source_url=s.model_url, kv_type=s.cache_type_kv or "f16"))
        require_pinned(requests[-1])
    lockfile.validate(s.lock_file)                 # outside files are read before any device: a broken one stops here
    local, header = local_model_file(s.model_url), None
    if local is not None:
        try:
            header = gguf_header.check_file(local)
        except gguf_header.GGUFError as e:
            raise gguf_header.GGUFError(f"--model-url {local} is not a valid GGUF model: {e.message}; nothing was "
                                        "changed", hint=e.hint) from None
    draft = _draft_request(s, requests[0], header) if s.draft else None
    adapter = _adapter(s, requests[0], header) if s.lora else None
    tuning = s.take(TuningOptions)
    tuning.validate()
    return ProvisionOptions(
        model=requests[0], more_models=requests[1:], draft=draft, lora=adapter, models_max=s.models_max, tuning=tuning,
        exporter=s.take(ExporterOptions, "metrics_") if s.metrics else None,
        build=BuildSpec(source=s.llama_src, cpu_only=s.cpu, cuda_arch=s.cuda_arch, jobs=s.jobs,
                        extra_flags=tuple(s.cmake_flags), install_deps=not s.skip_deps, cpu_level=s.cpu_level),
        service=s.take(ServiceOptions, n_ctx=s.ctx,
                       lora_scaled=f"{adapter.device_path}:{adapter.scale:g}" if adapter else None))


def _adapter(s: Settings, target: ModelRequest, header=None) -> Adapter:
    """The --lora adapter, read and checked against the model (the catalog's shape, or a local model's header) and
    edgekit.lock, before connecting."""
    adapter = lora.read_adapter(s.lora)
    if target.by_url:
        if header is None:
            raise UsageError("--lora with a model by URL needs the model's file on this machine, to check the adapter "
                             "against it", hint="pass --model-url as a local .gguf file")
        shape, base = fit.Shape.from_header(header), url_names(target)[0]
    else:
        shape, base = fit.Shape.from_dict(catalog.get(target.name or "").shape), target.name or ""
    lora.check_base(adapter, shape, base)
    lockfile.check("lora", f"{base}/{adapter.name}", adapter.sha256, s.lock_file)
    return replace(adapter, base=base)


def _draft_request(s: Settings, target: ModelRequest, header=None) -> ModelRequest:
    """The draft's own request (fetched like a model, counted in its target's fit), its pair checked first: the
    catalog's tokenizers, or a local target file's own header (drafts.check_catalog_pair)."""
    name, quant = catalog.split_ref(s.draft)
    entry = catalog.get(name)
    target_entry = None if target.by_url else catalog.get(target.name or "")
    check_catalog_pair(target_entry, header if target.by_url else None, entry)
    target_name = target_entry.name if target_entry else url_names(target)[0]
    request = s.take(ModelRequest, name=entry.name, quant=quant, n_ctx=s.ctx, source_url=None, sha256=None,
                     kv_type=s.cache_type_kv or "f16", draft=None, draft_of=target_name)
    require_pinned(request)
    return request


def options_for(flags: dict, host) -> ProvisionOptions:
    """One host's options: its inventory settings under the command line's flags, validated once."""
    return options(settings.resolve(flags, host.settings, host.source or "inventory"))


class Preflight:
    """Read the device's facts; refuse devices edgekit cannot serve from, before touching anything."""

    name = "preflight"

    def plan(self, ctx: Context):
        facts = ctx.fact(Device(ctx.run.cuda_arch_override))
        require_supported(facts)
        if not facts.systemd:
            raise UnsuitableDevice(f"{ctx.transport.name} does not run systemd as PID 1",
                                   hint="edgekit installs a systemd service; JetPack's Ubuntu has it")
        if facts.sudo == "none":
            raise UnsuitableDevice(f"{ctx.transport.user} on {ctx.transport.name} cannot use sudo",
                                   hint="log in as a user in the sudo group (e.g. the user made at first boot)")
        ctx.read("true")  # a sudo password that is needed and missing, or wrong, fails here, before any change
        ctx.run.facts = facts
        j = facts.jetson
        board = f"{j['module'] or j['model']}, L4T R{j['l4t']}" if j else f"{facts.arch}, not a Jetson"
        return Noop(f"{facts.hostname}: {board}; {facts.cpus} CPUs, "
                    f"{(facts.memory or {}).get('total_bytes', 0) / 2**30:.1f} GiB RAM")


def provision(ctx: Context, opts: ProvisionOptions, pack=None):
    """Run every step; remember where the server listens on the controller. Returns the step results.

    Order: every check that can run before a change (facts, ports, build plan, tuning, fit) first; then the Jetson
    tuning (a faster power mode and swap help the compile too); the build is gated before `current` moves; a change
    that leaves the service unhealthy is rolled back (deploy_steps); the metrics exporter last, outside the gate
    (a failing exporter never rolls the server back)."""
    ctx.run.service = opts.service
    ctx.run.cuda_arch_override = opts.build.cuda_arch
    results: list = []
    with device_lock(ctx.transport, "provision", enabled=not ctx.dry_run, on_wait=ctx.lock_wait):
        fits, fetches = model_set_steps(opts.models, opts.models_max)
        planned = [BuildPlanned(opts.build)] if pack is None else []
        results += run_steps(ctx, [Preflight(), *checks(opts), *planned, *fits, ServiceUser()])
        results += run_steps(ctx, tuning_steps(opts.tuning))
        if pack is None:
            results += run_build(ctx, opts.build)
        else:                                      # a fleet's build, packed on its builder: gated here, then current
            results += run_steps(ctx, [InstallPack(pack, opts.build.keep)])
        adapter = [lora.LoraFile(opts.lora, opts.model.lock_file)] if opts.lora else []
        results += deploy_steps(ctx, opts.service, [*fetches, *adapter, *service_steps()])
        results += run_steps(ctx, exporter_steps(opts))
    remember(ctx, opts)
    return results


ROLLBACK_ON = {"service", "health"}          # failures after the service was changed


def deploy_steps(ctx: Context, opts: ServiceOptions, steps: list) -> list:
    """Run the model and service steps; when the service ends unhealthy after this run changed the build, the
    model or the settings, restore the last healthy state, check it answers, and raise DeployRolledBack."""
    try:
        return run_steps(ctx, steps)
    except EdgekitError as e:
        failed = next((r for r in reversed(ctx.results) if r.status == "failed"), None)
        changed = ctx.changed - {"preflight", "port", "service user", "build-deps", "llama-gate"}
        if ctx.dry_run or not opts.rollback or failed is None or failed.step not in ROLLBACK_ON or not changed:
            raise
        target = ctx.transport.name
        st = ctx.fact(healthy.DeployState())
        if not st["healthy"]:
            e.message += " (no earlier healthy state is recorded on the device, so nothing was rolled back)"
            raise
        ctx.current_step = "rollback"
        ctx.reporter.progress("rollback", f"restoring {healthy.describe(st['healthy'])}")
        reason, when = e.message.splitlines()[0], time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            record = healthy.restore(ctx.transport)
            wait_as_configured(ctx, min(opts.health_timeout, 300))
        except EdgekitError as again:
            _record_rollback(ctx, healthy.rollback_record(failed.step, reason, list(changed), st, st["healthy"],
                                                          False, when))
            raise healthy.DeployRolledBack(
                f"{failed.step} failed on {target}: {reason}; rolling back to the last healthy "
                f"state ({healthy.describe(st['healthy'])}) failed too: {again.message.splitlines()[0]}",
                hint=f"see `edgekit logs {target}` and `edgekit status {target}`") from None
        _record_rollback(ctx, healthy.rollback_record(failed.step, reason, list(changed), st, record, True, when))
        controller_state.set_model(target, record.get("model"))
        raise healthy.DeployRolledBack(
            f"{failed.step} failed on {target} after this run changed {', '.join(sorted(changed))}: "
            f"{reason}. Rolled back to the last healthy state ({healthy.describe(record)}); "
            f"the service answers again. Logs: `edgekit logs {target}` (journalctl -u {L.UNIT_NAME})",
            hint="fix the setting or model and provision again; --no-rollback keeps the broken state for debugging"
        ) from None


def _record_rollback(ctx: Context, record: dict) -> None:
    """Write last-rollback.json on the device (what `edgekit status` shows); a failure to write it is reported, it
    does not hide the failure that caused the rollback."""
    try:
        ctx.do(healthy.record_rollback_op(record))
    except EdgekitError as e:
        ctx.reporter.progress("rollback", f"could not record the rollback in {L.LAST_ROLLBACK}: {e.message}")


def wait_as_configured(ctx: Context, timeout: float) -> float:
    """Wait until the service answers where its env file says it listens (after a restore); -> seconds."""
    env = _env(ctx.transport)
    key = controller_state.read_api_key(ctx.transport.name) if env.get("LLAMA_ARG_API_KEY_FILE") else None
    loaded, _, _ = wait_healthy(ctx, int(env.get("LLAMA_ARG_PORT") or settings.DEFAULTS["port"]),
                                env.get("LLAMA_ARG_HOST") or "127.0.0.1", key, timeout)
    return loaded


def remember(ctx: Context, opts: ProvisionOptions) -> None:
    """Record on the controller where the server listens and where its API key is (for status, chat, bench)."""
    if ctx.dry_run:
        return
    def reach(bind: str) -> str:
        return ctx.transport.address if bind in ("0.0.0.0", "::") else bind

    facts, exporter = ctx.run.facts, opts.exporter
    controller_state.save(ctx.transport.name, {
        "url": f"http://{reach(opts.service.host)}:{opts.service.port}", "host": opts.service.host,
        "port": opts.service.port, "model": ctx.run.model.name if ctx.run.model else None,
        "models": list(ctx.run.models), "models_max": ctx.run.models_max if ctx.run.router else None,
        "api_key_file": str(controller_state.api_key_path(ctx.transport.name)) if opts.service.api_key else None,
        "board": ((facts.jetson or {}).get("module") or (facts.jetson or {}).get("model") or facts.arch or "")
        if facts else "",
        **({"exporter_address": reach(exporter.host), "exporter_port": exporter.port,
            "exporter_token_file": str(token_path(ctx.transport.name)) if exporter.token else None}
           if exporter else {}),
    })


def served_loras(env: dict) -> list[str]:
    """Pure: the LoRA adapters (PATH:SCALE) the env file's server arguments name."""
    args = (env.get("EDGEKIT_SERVER_ARGS") or "").split()
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--lora-scaled"]


def status(transport) -> dict:
    """The service's state, model, build, uptime, health and slots, read from the device."""
    show = unit_properties(transport)
    st = read(transport, healthy.DeployState())
    env = parse_env(st["env"])
    stamp = read(transport, FileText(f"{L.CURRENT}/{L.STAMP_NAME}"))
    out = {"unit": L.UNIT_NAME, "installed": show.get("LoadState") == "loaded", "active": show.get("ActiveState"),
           "sub": show.get("SubState"), "pid": int(show.get("MainPID") or 0), "enabled": show.get("UnitFileState"),
           "restarts": int(show.get("NRestarts") or 0), "since": show.get("ActiveEnterTimestamp") or None,
           "model": env.get("LLAMA_ARG_MODEL"), "ctx": env.get("LLAMA_ARG_CTX_SIZE"), "models": None,
           "models_max": env.get("LLAMA_ARG_MODELS_MAX"), "draft": env.get("LLAMA_ARG_SPEC_DRAFT_MODEL"),
           "spec_type": env.get("LLAMA_ARG_SPEC_TYPE"), "lora": served_loras(env),
           "listen": f"{env.get('LLAMA_ARG_HOST')}:{env.get('LLAMA_ARG_PORT')}" if env else None,
           "build": json.loads(stamp) if stamp else None, "health": None, "slots": None}
    h = st["healthy"]
    out["last_healthy"] = h
    out["last_rollback"] = healthy.parse_rollback(read(transport, FileText(L.LAST_ROLLBACK)))
    out["state"] = ("no healthy state recorded" if not h else
                    "the last healthy state" if healthy.is_recorded(st) else "changed since the last healthy state")
    if env.get("LLAMA_ARG_PORT") and out["active"] == "active":
        base = f"http://{probe_host(env.get('LLAMA_ARG_HOST') or '')}:{env['LLAMA_ARG_PORT']}"
        code, body = probe.request(transport, f"{base}/health", timeout=5)
        out["health"] = {200: "ok", 503: "loading"}.get(code, f"HTTP {code}" if code else "no answer")
        key = controller_state.read_api_key(transport.name)
        if env.get("LLAMA_ARG_MODELS_PRESET"):      # router mode: each model and whether it is loaded now
            code, body = probe.request(transport, f"{base}/models", key=key, timeout=5)
            if code == 200:
                rss = read(transport, RouterChildren())
                out["models"] = [{"id": m.get("id"), "status": (m.get("status") or {}).get("value"),
                                  "rss_bytes": rss.get(m.get("id"))} for m in json.loads(body).get("data") or []]
            return out
        code, body = probe.request(transport, f"{base}/slots", key=key, timeout=5)
        if code == 200:
            slots = json.loads(body)
            out["slots"] = {"total": len(slots), "busy": sum(1 for s in slots if s.get("is_processing"))}
    return out


def _env(transport) -> dict[str, str]:
    return parse_env(read(transport, FileText(L.ENV_PATH)) or "")

