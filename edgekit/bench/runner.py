"""Run the workload against one server: warm-up, repetitions, one phase per case (times on this machine's clock).

`run_workload` never raises for a failing request: failures are kept in the results so a partial run still
gets reported and saved. It raises only when the server cannot be used at all (unreachable, wrong key).
`run_sweep` measures once per value of one setting (edgekit.bench.sweep applies and restores the values).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

from edgekit.bench import limits, pinning, report
from edgekit.bench import sweep as sw
from edgekit.bench import llama_bench as lb
from edgekit.redact import redact
from edgekit.bench.timing import RequestResult, timed_completion, timed_completions
from edgekit.bench.workload import PROMPT_TEXT, Case, Workload
from edgekit.chat.client import Endpoint, LlamaClient
from edgekit import state as controller_state
from edgekit.errors import ConnectError, EdgekitError, UsageError
from edgekit.facts import device as device_facts
from edgekit.layout import API_KEY_PATH, UNIT_NAME
from edgekit.remote.command import Check, q
from edgekit.remote.lock import device_lock
from edgekit.telemetry.remote import Recorder, Stream
from edgekit.tuning.steps import nvpmodel_set
from edgekit.telemetry.remote import stream as telemetry_stream


@dataclass
class CaseRun:
    case: Case
    started: Optional[float] = None          # first measured request (warm-up excluded)
    ended: Optional[float] = None
    batches: List[List[RequestResult]] = field(default_factory=list)   # one batch per repetition
    skipped: Optional[str] = None

    @property
    def results(self) -> List[RequestResult]:
        return [r for batch in self.batches for r in batch]

    def to_json(self) -> Dict[str, Any]:
        return {"name": self.case.name, "sweep": self.case.sweep, "prompt_tokens": self.case.prompt_tokens,
                "concurrency": self.case.concurrency, "started": self.started, "ended": self.ended,
                "skipped": self.skipped,
                "batches": [[r.to_json() for r in batch] for batch in self.batches]}


def prompt_tokens(server: LlamaClient, n: int, salt: int = 0) -> List[int]:
    """Exactly n token ids cut from the fixed text (salt rotates the start so parallel prompts differ)."""
    base = prompt_tokens.cache.get(server.url)  # type: ignore[attr-defined]
    if base is None:
        base = server.tokenize(PROMPT_TEXT)
        prompt_tokens.cache[server.url] = base  # type: ignore[attr-defined]
    start = (salt * 7) % len(base)
    ids = base[start:] + base[:start]
    return (ids * (n // len(ids) + 1))[:n]


prompt_tokens.cache = {}  # type: ignore[attr-defined]


def run_workload(server: LlamaClient, workload: Workload, slot_ctx: Optional[int], slots: Optional[int],
                 on_progress: Callable[[str], None] = lambda text: None,
                 stop: Callable[[], bool] = lambda: False) -> List[CaseRun]:
    """Measure every case of the workload. Cases that do not fit the server's slots are skipped with the reason."""
    runs: List[CaseRun] = []
    for case in workload.cases():
        run = CaseRun(case)
        runs.append(run)
        need = workload.needed_ctx(case)
        if slot_ctx and need > slot_ctx:
            run.skipped = f"needs {need} tokens of context per slot, the server has {slot_ctx} (raise -c)"
            continue
        if slots and case.concurrency > slots:
            run.skipped = f"needs {case.concurrency} parallel slots, the server has {slots} (raise --parallel)"
            continue
        prompts = [prompt_tokens(server, case.prompt_tokens, salt=i) for i in range(case.concurrency)]
        total = workload.warmup + workload.repetitions
        for rep in range(total):
            if stop():
                run.skipped = "interrupted"
                break
            warm = rep < workload.warmup
            on_progress(f"{case.name}: {'warm-up' if warm else 'run'} {rep + 1}/{total}")
            if not warm and run.started is None:
                run.started = time.time()
            batch = timed_completions(server, prompts, workload.gen_tokens, temperature=workload.temperature,
                                      seed=workload.seed)
            if not warm:
                run.batches.append(batch)
                run.ended = time.time()
    return runs


def side_by_side(server: LlamaClient, transport, server_proc, workload: Workload,
                 on_progress: Callable[[str], None] = lambda text: None,
                 cpus: Optional[List[int]] = None) -> Dict[str, Any]:
    """Served vs llama-bench, interleaved: each round runs llama-bench (pp N, tg M, one repetition each) and then
    the same two measurements through the server (an N-token prompt generating 1 token; a 1-token prompt
    generating M tokens), so both see the same machine state (other load, clocks, heat).

    The server's settings are read from the device first (its env/flags, the threads it logged, its CPU affinity)
    and recorded; llama-bench is given the same threads and batch sizes, and records its own (its JSON)."""
    pp, tg = workload.llama_bench_pp, workload.gen_tokens
    runtime = lb.read_runtime(transport, server_proc)
    recorded = lb.recorded_settings(server_proc, runtime)
    if server_proc.threads is None and recorded["threads"]:       # llama-bench runs with what the server uses
        server_proc = replace(server_proc, threads=recorded["threads"])
    rounds: List[Dict[str, Any]] = []
    started = time.time()
    for i in range(workload.llama_bench_reps):
        on_progress(f"llama-bench side by side: round {i + 1}/{workload.llama_bench_reps}")
        bench = lb.run(transport, server_proc, pp, tg, 1, cpus=cpus)
        served_pp = timed_completion(server, prompt_tokens(server, pp), 1, workload.temperature, workload.seed)
        served_tg = timed_completion(server, prompt_tokens(server, 1), tg, workload.temperature, workload.seed)
        rounds.append({"llama_bench": bench["results"], "command": bench["command"],
                       "served_pp": served_pp.to_json(), "served_tg": served_tg.to_json()})
    return {"rounds": rounds, "pp": pp, "tg": tg, "started": started, "ended": time.time(),
            "server_settings": recorded, "llama_bench_cpus": ",".join(map(str, cpus)) if cpus else None,
            "command": rounds[0]["command"] if rounds else None,
            "results": {k: v for k, v in (rounds[0]["llama_bench"] if rounds else {}).items()}}


# -- the whole bench ------------------------------------------------------------------------------------------
@dataclass
class BenchSettings:
    url: str
    api_key: Optional[str] = None
    api_key_file: Optional[str] = None       # where the key was read (named in a wrong-key error)
    workload: Workload = field(default_factory=Workload)
    llama_bench: bool = False
    bandwidth_gbs: Optional[float] = None
    out_dir: Optional[str] = None
    telemetry_interval_ms: int = 500
    ready_timeout: float = 600.0
    server_cpus: Optional[List[int]] = None  # pin the service and llama-bench to these device CPUs for the run
    client_cpus: Optional[List[int]] = None  # and this process (the client) to these controller CPUs


def reach_server(settings: BenchSettings, transport, port: int = 8080) -> None:
    """Fill in where the device's llama-server answers and its key, unless given: where `edgekit provision` said it
    serves (the controller's state), else the device's address and `port`; the key kept on the controller, else
    the device's (a root-only file, read with the transport's sudo)."""
    saved = controller_state.load(transport.name) or {}
    if not settings.url:
        settings.url = saved.get("url") or f"http://{transport.address}:{port}"
    if settings.api_key is None:
        settings.api_key = controller_state.read_api_key(transport.name)
        if settings.api_key is not None:
            settings.api_key_file = str(controller_state.api_key_path(transport.name))
    if settings.api_key is None:
        settings.api_key = _device_api_key(transport)


def _device_api_key(t) -> Optional[str]:
    """The service's API key from the device; None without one."""
    path = q(API_KEY_PATH)
    if not t.run(f"test -e {path}", check=False).ok:
        return None
    try:
        key = t.sudo(f"cat {path}", check=False)
    except ConnectError as e:
        raise ConnectError(f"cannot read the API key ({API_KEY_PATH}) on {t.name}: {e.message}",
                           hint=f"{e.hint}; or give the key with --api-key") from None   # sudo's errors have hints
    return (key.stdout.strip() or None) if key.ok else None


def describe_workload(settings: BenchSettings) -> str:
    """The workload as a plan line names it."""
    w = settings.workload
    return (f"workload v{w.version}{', quick' if w.quick else ''} ({len(w.cases())} cases) against {settings.url}"
            + (", then llama-bench on the device" if settings.llama_bench else ""))


def bench_plan(settings: BenchSettings) -> list:
    """Pure: what a bench runs on the device, in order (--dry-run prints it): the service pinned to server_cpus
    and back, around the measurement (HTTP from this machine; device reads only)."""
    pins = settings.server_cpus
    return [*(pinning.pin_ops(pins) if pins else []), Check(f"measure: {describe_workload(settings)}"),
            *(pinning.unpin_ops() if pins else [])]


def run_bench(settings: BenchSettings, transport=None,
              on_progress: Callable[[str], None] = lambda text: None, telemetry: bool = True,
              lock=device_lock) -> Dict[str, Any]:
    """Run the bench and return the result dict (see report.py). With a transport: device facts, build stamp,
    telemetry during the run and llama-bench. Always returns what was measured; `complete` says if all ran
    and `errors` says what went wrong. With `server_cpus` the service runs pinned during the bench (restarted into
    it, and out of it afterwards, also on errors), holding the device's edgekit lock (bench_plan: what runs)."""
    if settings.server_cpus and transport is None:
        raise UsageError("pinning the server's CPUs needs a TARGET (it changes the service over SSH)",
                         hint="name the device: edgekit bench TARGET")
    with ExitStack() as pins:
        if settings.server_cpus:
            pins.enter_context(lock(transport, "bench --server-cpus"))
            on_progress(f"restarting {UNIT_NAME} on CPUs {pinning.cpu_list(settings.server_cpus)}")
            pins.enter_context(pinning.server_pinned(transport, settings.server_cpus))
        pins.enter_context(pinning.client_pinned(settings.client_cpus))
        return measure(settings, transport, on_progress, telemetry)


def measure(settings: BenchSettings, transport, on_progress: Callable[[str], None],
            telemetry: bool) -> Dict[str, Any]:
    """One measurement of the server as it runs now (no pinning: the caller's; `edgekit bench --sweep` calls this
    once per value): the result dict, saved when settings.out_dir is set."""
    endpoint = Endpoint(url=settings.url, api_key=settings.api_key, api_key_file=settings.api_key_file,
                        target=getattr(transport, "name", None))
    server = LlamaClient(endpoint, timeout=600.0)
    server.wait_ready(settings.ready_timeout, on_wait=lambda waited, said: on_progress(f"{said} ({waited:.0f}s)"),
                      interval=1.0, connect_grace=10.0)
    props = server.props()   # also checks the API key
    model = server.model_info()
    result: Dict[str, Any] = {
        "schema": report.RESULT_SCHEMA, "started": time.time(),
        "started_iso": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "url": server.url, "target": getattr(transport, "name", None), "workload": settings.workload.to_json(),
        "server": {"build_info": props.get("build_info"), "total_slots": props.get("total_slots"),
                   "slot_n_ctx": (props.get("default_generation_settings") or {}).get("n_ctx"),
                   "model_path": props.get("model_path")},
        "model": {"name": os.path.basename(props.get("model_path") or "") or model.get("id"),
                  "size_bytes": model.get("size"), "n_params": model.get("n_params")},
        "facts": None, "build_stamp": None, "server_process": None, "llama_bench": None, "ceiling": None,
        "telemetry": None, "cases": [], "errors": [], "notes": [], "complete": False,
        "pinning": {"server_cpus": settings.server_cpus, "client_cpus": settings.client_cpus},
    }
    recorder = None
    server_proc, why_not = None, "no TARGET to look at"
    if transport is not None:
        on_progress("reading device facts")
        facts = device_facts.read_facts(transport)
        result["facts"] = facts.to_json()
        service, server_proc, why_not = _edgekit_server(transport, server, props.get("model_path"),
                                                        settings.llama_bench)
        if service is not None:
            result["server_process"] = {"pid": service.pid, "exe": service.exe, "args": service.args}
            stamp = transport.run(f"cat {q(service.stamp_path)}", check=False)
            result["build_stamp"] = _json_or_none(stamp.stdout) if stamp.ok else None
        else:
            result["notes"].append(f"no build stamp or server settings: {why_not}")
        if telemetry:
            recorder = Recorder(transport, settings.telemetry_interval_ms)
            on_progress("starting telemetry on the device")
            recorder.start()
    try:
        runs = run_workload(server, settings.workload, result["server"]["slot_n_ctx"],
                            result["server"]["total_slots"], on_progress)
        result["cases"] = [r.to_json() for r in runs]
        if settings.llama_bench:
            if transport is None:
                result["errors"].append("--llama-bench needs a TARGET (it runs on the device over SSH)")
            elif server_proc is None:
                result["errors"].append(f"--llama-bench skipped: {why_not}")
            else:
                result["llama_bench"] = side_by_side(server, transport, server_proc, settings.workload, on_progress,
                                                     settings.server_cpus)
        result["complete"] = not any(r.skipped == "interrupted" for r in runs)
    except BaseException as e:
        result["errors"].append(f"{type(e).__name__}: {getattr(e, 'message', e)}")
        raise
    finally:
        if recorder is not None:
            try:
                stream = recorder.stop()
            except Exception as e:  # the device went away: keep the served numbers
                result["errors"].append(f"telemetry: {getattr(e, 'message', e)}")
                stream = Stream()
            result["telemetry"] = {
                "source": stream.source.source if stream.source else None,
                "why": stream.source.why if stream.source else [],
                "device_python": stream.source.python if stream.source else None,
                "clock_offset_s": recorder.offset, "errors": stream.errors,
                "interval_ms": settings.telemetry_interval_ms,
                "samples": [s.to_json() for s in stream.samples]}
        size = result["model"]["size_bytes"] or ((result["llama_bench"] or {}).get("results") or {}).get(
            f"tg{settings.workload.gen_tokens}", {}).get("model_size")
        facts = result["facts"] or {}
        jetson = facts.get("jetson")
        if jetson and facts.get("arch") not in (None, "aarch64"):
            result["notes"].append(f"device says Jetson but runs {facts.get('arch')} (a stand-in?): "
                                    "its module bandwidth is not used for the ceiling")
            jetson = None
        result["ceiling"] = limits.ceiling_for(size, jetson, settings.bandwidth_gbs).to_json()
        result["ended"] = time.time()
        _finish(result, settings)
    return result


def _edgekit_server(transport, server: LlamaClient, model_path: Optional[str], settings_too: bool):
    """(process, process with its running settings, why not) for edgekit's service on this device, when it is the
    server at the URL; the running settings (for llama-bench) only when `settings_too`. Never raises: what could
    not be found is said in `why not`."""
    def reason(e: Exception) -> str:
        message, hint = getattr(e, "message", str(e)), getattr(e, "hint", None)
        return f"{message} ({hint})" if hint else message

    try:
        proc = lb.find_server(transport)
    except Exception as e:  # not fatal for the served numbers
        return None, None, reason(e)
    why_not = lb.not_served_by(proc, server.port, model_path)
    if why_not is not None:
        return None, None, f"{server.url} is not edgekit's service on {transport.name}: {why_not}"
    if not settings_too:
        return proc, None, "not asked for"
    try:
        running = lb.read_settings(transport, proc)
    except Exception as e:
        return proc, None, reason(e)
    why_not = lb.not_served_by(running, server.port, model_path)
    if why_not is not None:
        return None, None, f"{server.url} is not edgekit's service on {transport.name}: {why_not}"
    return proc, running, None


def _finish(result: Dict[str, Any], settings: BenchSettings) -> None:
    """Redact secrets, summarize and save (also for partial runs); paths go into result['files']."""
    redacted = redact(result, [settings.api_key])
    result.clear()
    result.update(redacted)
    result["summary"] = report.summarize(result)
    save(result, settings.out_dir, "bench", report.plot)


def save(result: Dict[str, Any], out_dir: Optional[str], prefix: str,
         plot: Callable[[Dict[str, Any], Path], Optional[Path]]) -> None:
    """Write a (redacted) result as OUT_DIR/PREFIX-HOST-STAMP.json, then its plot(result, path) .png; the paths go
    into result['files'] (and into the JSON, written again). Nothing without an out_dir."""
    if out_dir is None:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(result["started"]))
    host = (result.get("target") or result["url"].split("://")[-1]).replace(":", "_").replace("/", "_")
    base = Path(out_dir) / f"{prefix}-{host}-{stamp}"
    result["files"] = {"json": str(base.with_suffix(".json")), "png": None}
    report.write_json(result, base.with_suffix(".json"))   # first, so a failing plot loses nothing
    try:
        png = plot(result, base.with_suffix(".png"))
    except Exception as e:  # a plotting bug must not cost the measurements
        result["errors"].append(f"plot: {type(e).__name__}: {e}")
        png = None
    result["files"]["png"] = str(png) if png else "not written: pip install 'edgekit[plots]' (matplotlib)"
    report.write_json(result, base.with_suffix(".json"))


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


# -- a sweep: the workload once per value of one setting (edgekit.bench.sweep), the setting restored after --------
def run_sweep(settings: BenchSettings, spec: sw.SweepSpec, transport,
              on_progress: Callable[[str], None] = lambda text: None, telemetry: bool = True,
              result: Optional[Dict[str, Any]] = None, *, measure: Callable = measure, poll=None,
              sleep: Callable[[float], None] = time.sleep, lock=device_lock, dry_run: bool = False) -> Dict[str, Any]:
    """Measure the workload once per value of `spec` (holding the device's edgekit lock), restore the setting in a
    `finally` (Ctrl-C and errors too), save under settings.out_dir. `result` is filled as the sweep goes, so a
    caller still has it (and its saved file) after Ctrl-C. Raises when the restore failed, saying how to do it.
    `dry_run`: every check, then the plan (sweep.plan) in result['sweep']['plan']; nothing changed or saved."""
    if transport is None:
        raise UsageError("--sweep changes the device and needs a TARGET", hint=sw.HINT)
    result = result if result is not None else {}
    result.update(sw.result_skeleton(settings, spec), target=transport.name)
    if dry_run:
        dev = sw.prepare(transport, spec, _port(settings.url))
        result["sweep"]["original"] = {k: v for k, v in dev.original.items() if k != "status"}
        result["sweep"]["rows"] = [sw.row_for(p, None) for p in dev.points]
        result["sweep"]["plan"] = [str(op) for op in sw.plan(dev, settings.server_cpus, describe_workload(settings))]
        result["dry_run"] = True
        return result
    with lock(transport, f"bench sweep over {spec.setting}"):
        on_progress("reading the device's settings")
        dev = sw.prepare(transport, spec, _port(settings.url))       # every check; nothing changed yet
        result["sweep"]["original"] = {k: v for k, v in dev.original.items() if k != "status"}
        if poll is None and telemetry and spec.setting == "power-mode":
            poll = lambda: telemetry_stream(transport, lambda item: None, interval_ms=500, count=4).samples  # noqa
        with ExitStack() as pins:
            if settings.server_cpus:
                on_progress(f"restarting {UNIT_NAME} on CPUs {pinning.cpu_list(settings.server_cpus)}")
                pins.enter_context(pinning.server_pinned(transport, settings.server_cpus))
            pins.enter_context(pinning.client_pinned(settings.client_cpus))
            try:
                with sw.ctrl_c_sticks() as check:      # checked at every progress step of the sweep and after it
                    _each_value(dev, settings, result, lambda text: (check(), on_progress(text)), telemetry, measure,
                                poll, sleep)
                    check()
            except BaseException as e:
                result["errors"].append("interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt)
                                        else f"{type(e).__name__}: {getattr(e, 'message', e)}")
                raise
            finally:
                with sw.second_ctrl_c_waits():
                    on_progress("restoring the original settings")
                    result["sweep"].update(sw.restore(dev))
                    result.update(ended=time.time(), complete=not result["errors"] and all(
                        r["complete"] or (r["skipped"] and not r["error"]) for r in result["sweep"]["rows"]))
                    _save_sweep(result, settings)
    if not result["sweep"]["restored"]:
        raise EdgekitError(f"the sweep could not restore {spec.setting} on {transport.name}: "
                           f"{result['sweep']['restore_error']}", hint=sw.by_hand(dev))
    return result


def _port(url: str) -> Optional[int]:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _each_value(dev: sw.Sweep, settings: BenchSettings, result, on_progress, telemetry, measure, poll,
                sleep) -> None:
    rows, n = result["sweep"]["rows"], len(dev.points)
    for i, point in enumerate(dev.points, 1):
        say = lambda text: on_progress(f"[{i}/{n}] {dev.spec.setting} {point.value}: {text}")  # noqa: E731
        if point.skipped is None and point.mode is not None:
            say(nvpmodel_set(point.mode.id))
            point.skipped = sw.switch(dev, point.mode)
        elif point.skipped is None:
            say(f"restarting {UNIT_NAME} with {' '.join(f'{k}={v}' for k, v in point.env.items())}")
            sw.apply_env(dev, point.env)
        if point.skipped is not None:
            rows.append(sw.row_for(point, None))
            continue
        settled = sw.settle(poll, sleep, sw.SETTLE_WAIT_S, sw.SETTLE_TIMEOUT_S) if point.mode else None
        try:
            run = measure(replace(settings, out_dir=None), dev.transport, say, telemetry)
        except EdgekitError as e:   # one value failing (the server did not come back) leaves the others to run
            rows.append({**sw.row_for(point, None), "error": f"{type(e).__name__}: {e.message}", "settle": settled})
            continue
        result["runs"].append(run)
        result["model"], result["server"] = result["model"] or run.get("model"), result["server"] or run.get("server")
        row = sw.row_for(point, run)
        row.update(settle=settled, run=len(result["runs"]) - 1)
        if point.mode is None:
            row["applied"] = sw.applied(dev.spec.setting, point.value, run.get("server") or {})
            if row["applied"] is False:
                row["error"] = (f"the server's /props do not show {dev.spec.setting} {point.value}: is {settings.url} "
                                f"{UNIT_NAME}?")
        rows.append(row)


def _save_sweep(result: Dict[str, Any], settings: BenchSettings) -> None:
    """Redacted, saved as JSON and PNG; a failure goes into the errors, never raised (this runs in a `finally`)."""
    redacted = redact(result, [settings.api_key])
    result.clear()
    result.update(redacted)
    try:
        save(result, settings.out_dir, f"bench-sweep-{result['sweep']['setting']}", report.plot_sweep)
    except Exception as e:
        result["errors"].append(f"saving: {type(e).__name__}: {e}")
