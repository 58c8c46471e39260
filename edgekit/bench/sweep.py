"""`edgekit bench --sweep`: the workload once per value of one setting, then the setting put back as it was.

Settings: `power-mode` (every mode of the device's own /etc/nvpmodel.conf, or the names given; switched with
`nvpmodel -m ID`, the id looked up in the conf; modes that need a reboot are skipped, saying so), and the server's
`ctx`, `parallel` and `cache-type` (LLAMA_ARG_* for the service through a runtime drop-in under /run, the same
mechanism as pinning.py's CPU pinning, and a restart). After a power-mode switch the sweep waits a fixed time and
then until the telemetry's GPU and memory (EMC) clocks stop moving, bounded.

Everything is checked before the first change (modes resolved, reboot needs, the service and its settings); the
original mode, clocks and settings are restored in a `finally`, so also on Ctrl-C (a second Ctrl-C waits until the
restore is done) and on errors. Library code: no printing; the CLI renders the result (see `result_skeleton`).
"""

from __future__ import annotations

import datetime
import signal
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edgekit import layout as L
from edgekit.bench import limits, pinning, report
from edgekit.bench import llama_bench as lb
from edgekit.bench.redact import redact
from edgekit.errors import EdgekitError, RemoteCommandFailed, UnsuitableDevice, UsageError
from edgekit.facts import boards
from edgekit.facts import device as device_facts
from edgekit.facts.deployed import read
from edgekit.remote.command import Upload, run_op, sh
from edgekit.remote.lock import device_lock
from edgekit.service.settings import parse_env
from edgekit.settings import CACHE_TYPES, MAX_CTX
from edgekit.telemetry.remote import stream
from edgekit.telemetry.sample import Sample
from edgekit.tuning.facts import ClocksState, CurrentPowerMode, PowerModeTable
from edgekit.tuning.modes import Mode, ModeTable, reboot_expected, resolve
from edgekit.tuning.steps import nvpmodel_set

ENV_VARS = {"ctx": ("LLAMA_ARG_CTX_SIZE",), "parallel": ("LLAMA_ARG_N_PARALLEL",),
            "cache-type": ("LLAMA_ARG_CACHE_TYPE_K", "LLAMA_ARG_CACHE_TYPE_V")}
SETTINGS = ("power-mode",) + tuple(ENV_VARS)
SWEEP_DROPIN = f"{pinning.DROPIN_DIR}/60-edgekit-bench-sweep.conf"
SWEEP_ENV = "/run/edgekit-bench-sweep.env"       # under /run: a reboot drops it even if the sweep was killed
SETTLE_WAIT_S = 3.0            # after a mode switch, before looking at the clocks
SETTLE_TIMEOUT_S = 30.0        # the most the clocks are waited for (then measured anyway, said in the row)
STEADY_PCT = 2.0               # clocks are settled when the last 3 readings are within this of each other
ORIN_EMC_TOP_HZ = 3_199_000_000   # the LPDDR5 clock at an Orin module's top bandwidth (Super modes included)
HINT = "edgekit bench TARGET --sweep power-mode (or ctx=2048,4096, parallel=1,2, cache-type=f16,q8_0)"


@dataclass(frozen=True)
class SweepSpec:
    setting: str
    values: tuple = ()          # empty for power-mode: every mode of the device's conf


@dataclass
class Point:
    """One value to measure: a power mode, or LLAMA_ARG_* values; `skipped` says why it is not measured."""

    value: str
    mode: Optional[Mode] = None
    env: Dict[str, str] = field(default_factory=dict)
    skipped: Optional[str] = None
    how: str = ""


def parse_sweep(text: str) -> SweepSpec:
    """Pure: 'power-mode', 'power-mode=15W,max', 'ctx=512,1024', 'parallel=1,2', 'cache-type=f16,q8_0'."""
    setting, _, rest = text.strip().partition("=")
    setting = setting.strip().lower().replace("_", "-")
    values = tuple(dict.fromkeys(v.strip() for v in rest.split(",") if v.strip()))
    if setting not in SETTINGS:
        raise UsageError(f"--sweep {text!r}: no such setting; sweepable: {', '.join(SETTINGS)}", hint=HINT)
    if setting != "power-mode" and not values:
        raise UsageError(f"--sweep {setting} needs values, e.g. --sweep {setting}="
                         f"{ {'ctx': '2048,4096', 'parallel': '1,2', 'cache-type': 'f16,q8_0'}[setting] }", hint=HINT)
    for v in values:
        if setting == "ctx" and not (v.isdigit() and 64 <= int(v) <= MAX_CTX):
            raise UsageError(f"--sweep ctx: {v!r} is not a context size from 64 to {MAX_CTX}", hint=HINT)
        if setting == "parallel" and not (v.isdigit() and 1 <= int(v) <= 256):
            raise UsageError(f"--sweep parallel: {v!r} is not a number of slots from 1 to 256", hint=HINT)
        if setting == "cache-type" and v not in CACHE_TYPES:
            raise UsageError(f"--sweep cache-type: {v!r} is not one of {', '.join(CACHE_TYPES)}", hint=HINT)
    return SweepSpec(setting, values)


# -- pure: what each value means and does --------------------------------------------------------------------
def power_points(spec: SweepSpec, table: ModeTable, current_id: Optional[int], l4t: Optional[str] = None,
                 part: Optional[str] = None) -> List[Point]:
    """The modes to measure, in id order when none are named; a name the board lacks is refused (nothing changed
    yet); a mode whose GPU power-gating differs from the running one's is kept as a skipped row (needs a reboot)."""
    names = spec.values or tuple(m.name for m in sorted(table.modes, key=lambda m: m.id))
    running = table.by_id(current_id)
    points: List[Point] = []
    for name in names:
        mode, how = resolve(name, table, l4t, part)
        if any(p.mode and p.mode.id == mode.id for p in points):
            continue
        skipped = None
        if reboot_expected(running, mode):
            skipped = (f"needs a reboot: {mode.name} power-gates other parts of the GPU than {running.name} (applied "
                       "only at boot); not measured")
        points.append(Point(mode.name, mode=mode, skipped=skipped, how=how))
    return points


def env_points(spec: SweepSpec) -> List[Point]:
    return [Point(v, env={var: v for var in ENV_VARS[spec.setting]}) for v in spec.values]


def env_ops(env: Dict[str, str]) -> list:
    """Pure: what runs the service with `env` on top of its own env file (a later EnvironmentFile= wins over the
    unit's; Environment= would not), restarting it."""
    text = "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
    dropin = ("# edgekit bench --sweep: llama-server settings for one value of the sweep; removed when it ends\n"
              f"[Service]\nEnvironmentFile={SWEEP_ENV}\n")
    return [sh("mkdir", "-p", pinning.DROPIN_DIR), Upload(SWEEP_ENV, "# edgekit bench --sweep\n" + text),
            Upload(SWEEP_DROPIN, dropin), "systemctl daemon-reload", sh("systemctl", "restart", f"{L.UNIT_NAME}.service")]


def unenv_ops() -> list:
    """Pure: the service back on its own settings."""
    return [sh("rm", "-f", SWEEP_DROPIN, SWEEP_ENV), "systemctl daemon-reload",
            sh("systemctl", "restart", f"{L.UNIT_NAME}.service")]


def mode_bandwidth(part: Optional[str], mode: Mode, table: ModeTable) -> tuple:
    """Pure: (GB/s, how) of a power mode. The module's peak (its Super figure when the conf has Super modes), and
    on Orin modules the mode's memory clock cap scaled against the LPDDR5 top clock (Orin Nano 8GB: 15W caps the EMC
    at 2133 MHz = 68 GB/s, 25W and MAXN_SUPER run 3199 MHz = 102 GB/s). (None, why) for an unknown module."""
    try:
        module = boards.module(part or "")
    except KeyError:
        return None, "unknown Jetson module - pass --bandwidth GB/s"
    has_super = any("SUPER" in m.name.upper() for m in table.modes)
    peak = module.super_bandwidth_gbs if has_super and module.super_bandwidth_gbs else module.bandwidth_gbs
    top = module.super_bandwidth_gbs or module.bandwidth_gbs
    cap = mode.emc_max_hz
    if module.family == "orin" and cap:
        capped = top * cap / ORIN_EMC_TOP_HZ
        if capped < peak:
            return round(capped, 1), f"{module.name}, {mode.name} caps the memory clock at {cap / 1e6:.0f} MHz"
    return peak, f"{module.name}, power mode {mode.name}"


def clocks_steady(values: List[float]) -> bool:
    """Pure: the last 3 readings within STEADY_PCT of each other (fewer than 2 readings: nothing to judge)."""
    last = values[-3:]
    return len(last) < 2 or max(last) - min(last) <= STEADY_PCT / 100 * max(last)


def settle(poll: Optional[Callable[[], List[Sample]]], sleep: Callable[[float], None], wait_s: float,
           timeout_s: float, clock: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
    """A fixed wait, then telemetry polled until the GPU and EMC clocks are steady, at most `timeout_s` in all."""
    start = clock()
    sleep(wait_s)
    out: Dict[str, Any] = {"waited_s": None, "stable": None, "gpu_mhz": None, "emc_mhz": None, "why": None}
    while True:
        if poll is None:
            out["why"] = "no telemetry: fixed wait only"
            break
        samples = poll()
        gpu = [s.gpu_freq_mhz for s in samples if s.gpu_freq_mhz is not None]
        emc = [s.emc_freq_mhz for s in samples if s.emc_freq_mhz is not None]
        if not gpu and not emc:
            out["why"] = "the telemetry reads no GPU or EMC clock here: fixed wait only"
            break
        out["gpu_mhz"], out["emc_mhz"] = (gpu or [None])[-1], (emc or [None])[-1]
        if clocks_steady(gpu) and clocks_steady(emc):
            out["stable"] = True
            break
        if clock() - start >= timeout_s:
            out["stable"], out["why"] = False, f"GPU/EMC clocks still moving after {timeout_s:g}s: measured anyway"
            break
    out["waited_s"] = round(clock() - start, 2)
    return out


def _input_watts(samples: List[Sample], start: float, end: float, interval_s: float) -> List[float]:
    return [s.power_total_mw / 1000 for s in samples if s.time is not None and start < s.time + 1e-9
            and s.time - interval_s <= end and s.power_total_mw is not None and s.power_total_from != "sum of rails"]


def row_for(point: Point, run: Optional[Dict[str, Any]], ceiling: Optional[limits.Ceiling] = None) -> Dict[str, Any]:
    """Pure: one row from a bench result: pp tok/s (the longest prompt at concurrency 1), tg tok/s (best at
    concurrency 1), input-rail power mean/peak (VDD_IN, POM_5V_IN; never a sum of rails), J/token over the measured
    phases, max temperature, the ceiling and the share of it."""
    row: Dict[str, Any] = {"value": point.value, "mode_id": point.mode.id if point.mode else None,
                           "env": point.env or None, "how": point.how or None, "skipped": point.skipped,
                           "error": None, "complete": False, "failed_requests": 0, "pp_tps": None, "pp_case": None,
                           "tg_tps": None, "tg_case": None, "power_mean_w": None, "power_peak_w": None,
                           "j_per_token": None, "temp_max_c": None, "bandwidth_gbs": None, "bandwidth_from": None,
                           "decode_ceiling_tps": None, "ceiling_share_pct": None, "settle": None, "applied": None}
    if run is None:
        return row
    cases = [c for c in run["summary"]["cases"] if not c["skipped"]]
    c1 = [c for c in cases if c["concurrency"] == 1]
    pp = max((c for c in c1 if c["pp_tps"]), key=lambda c: c["prompt_tokens"], default=None)
    tg = max((c for c in c1 if c["tg_tps"]), key=lambda c: c["tg_tps"]["median"], default=None)
    row.update(complete=bool(run.get("complete")), failed_requests=sum(c["failed"] for c in cases),
               pp_tps=pp["pp_tps"]["median"] if pp else None, pp_case=pp["name"] if pp else None,
               tg_tps=tg["tg_tps"]["median"] if tg else None, tg_case=tg["name"] if tg else None)
    tel = run.get("telemetry") or {}
    samples = [Sample.from_json(s) for s in tel.get("samples") or []]
    interval_s = (tel.get("interval_ms") or 0) / 1000
    watts, temps, joules, tokens, unknown = [], [], 0.0, 0, False
    for raw, summary in zip(run["cases"], run["summary"]["cases"]):
        if raw.get("started") is None or raw.get("ended") is None:
            continue
        w = _input_watts(samples, raw["started"], raw["ended"], interval_s)
        watts += w
        temps += [s.temp_max_c for s in samples if s.time is not None and s.temp_max_c is not None
                  and raw["started"] < s.time + 1e-9 and s.time - interval_s <= raw["ended"]]
        unknown = unknown or not w
        joules += (sum(w) / len(w) if w else 0.0) * (raw["ended"] - raw["started"])
        tokens += summary["generated_tokens"]
    if watts:
        row.update(power_mean_w=sum(watts) / len(watts), power_peak_w=max(watts),
                   j_per_token=joules / tokens if tokens and not unknown else None)
    row["temp_max_c"] = max(temps) if temps else None
    ceiling = ceiling or limits.Ceiling(**run["ceiling"]) if (ceiling or run.get("ceiling")) else None
    if ceiling is not None:
        row.update(bandwidth_gbs=ceiling.bandwidth_gbs, bandwidth_from=ceiling.bandwidth_from,
                   decode_ceiling_tps=ceiling.decode_tps, ceiling_share_pct=ceiling.share(row["tg_tps"]))
    return row


def applied(setting: str, value: str, server: Dict[str, Any]) -> Optional[bool]:
    """Pure: whether the server's /props show the value (ctx: per slot or in all; parallel: the slots); None when
    /props does not tell (cache type, power mode)."""
    slots, per_slot = server.get("total_slots"), server.get("slot_n_ctx")
    if setting == "parallel" and slots:
        return slots == int(value)
    if setting == "ctx" and per_slot:
        return int(value) in (per_slot, per_slot * (slots or 1))
    return None


# -- on the device -------------------------------------------------------------------------------------------
@dataclass
class _Device:
    transport: Any
    spec: SweepSpec
    points: List[Point]
    original: Dict[str, Any]
    facts: Any = None
    table: Optional[ModeTable] = None
    changed: bool = False


def _prepare(transport, spec: SweepSpec, url_port: Optional[int]) -> _Device:
    """Every check, before any change: the conf and the running mode (power-mode), or the service and its env."""
    facts = device_facts.read_facts(transport)
    if spec.setting == "power-mode":
        table = read(transport, PowerModeTable())
        if table is None:
            raise UnsuitableDevice(f"{transport.name} has no {L.NVPMODEL_CONF}: nvpmodel power modes exist only on "
                                   "Jetson boards", hint="sweep a server setting instead: --sweep ctx=2048,4096")
        current = read(transport, CurrentPowerMode())
        if current["id"] is None:
            raise UnsuitableDevice(f"`nvpmodel -q` names no power mode on {transport.name}",
                                   hint="check nvpmodel on the board (`sudo nvpmodel -q`), then run again")
        jetson = facts.jetson or {}
        points = power_points(spec, table, current["id"], jetson.get("l4t"), jetson.get("part"))
        clocks = read(transport, ClocksState())
        original = {"id": current["id"], "name": current["name"] or getattr(table.by_id(current["id"]), "name", None),
                    "status": current["status"], "clocks_pinned": bool(clocks and clocks["pinned"])}
        return _Device(transport, spec, points, original, facts, table)
    env = transport.sudo(f"cat {L.ENV_PATH}", check=False)
    if not env.ok:
        raise UnsuitableDevice(f"no edgekit service on {transport.name} ({L.ENV_PATH} is missing): the sweep "
                               "changes its settings", hint=f"edgekit provision {transport.name}")
    values = parse_env(env.stdout)
    if "LLAMA_ARG_MODELS_PRESET" in values:
        raise UnsuitableDevice(f"{L.UNIT_NAME} on {transport.name} is a router (several models, each with its own "
                               f"settings in {L.PRESET_PATH}): --sweep {spec.setting} changes one server's setting",
                               hint="sweep the power mode instead: --sweep power-mode")
    proc = lb.find_server(transport)
    why = lb.not_served_by(proc, url_port, None) if url_port else None
    if why:
        raise UsageError(f"the URL is not edgekit's service on {transport.name}: {why}; the sweep changes that "
                         "service's settings", hint=f"leave out --url, or give {L.UNIT_NAME}'s own URL")
    original = {var: values.get(var) for var in ENV_VARS[spec.setting]}
    return _Device(transport, spec, env_points(spec), original, facts)


def _switch(dev: _Device, point: Point) -> Optional[str]:
    """Switch to the point's mode (and re-pin the clocks when they were pinned); the reason when nvpmodel wants a
    reboot after all (the prompt is declined: nothing changed)."""
    t, mode = dev.transport, point.mode
    res = t.sudo(nvpmodel_set(mode.id), check=False)
    out = (res.stdout or "") + (res.stderr or "")
    if "reboot required" in out.lower():
        return f"nvpmodel asks for a reboot to switch to {mode.name} (declined, nothing changed); not measured"
    dev.changed = True
    if not res.ok or "NVPM ERROR" in out:
        raise RemoteCommandFailed(nvpmodel_set(mode.id), res.exit_code or 1, out)
    now = read(t, CurrentPowerMode())
    if now["id"] != mode.id:
        raise RemoteCommandFailed(nvpmodel_set(mode.id), 0, f"nvpmodel -q still reports {now['name']} (id {now['id']})",
                                  message=f"nvpmodel did not switch {t.name} to {mode.name}")
    if dev.original["clocks_pinned"]:
        t.sudo("jetson_clocks")
    return None


def _restore(dev: _Device) -> Dict[str, Any]:
    """Put the original mode (status file and pinned clocks too) or the service's own settings back."""
    t, o = dev.transport, dev.original
    if not dev.changed:
        return {"restored": True, "restore_error": None, "restore_commands": []}
    ran: List[str] = []
    try:
        if dev.spec.setting != "power-mode":
            for op in unenv_ops():
                ran.append(str(op))
                run_op(t, op)
            return {"restored": True, "restore_error": None, "restore_commands": ran}
        ran.append(nvpmodel_set(o["id"]))
        res = t.sudo(nvpmodel_set(o["id"]), check=False)
        now = read(t, CurrentPowerMode())
        if now["id"] != o["id"]:
            raise RemoteCommandFailed(nvpmodel_set(o["id"]), res.exit_code or 1, (res.stdout or "") + (res.stderr or ""),
                                      message=f"could not switch {t.name} back to {o['name']} (id {o['id']})")
        if o["status"] is not None and now["status"] != o["status"]:   # a mode edgekit set for the next boot
            op = Upload(L.NVPMODEL_STATUS, o["status"], mode="0644")
            ran.append(str(op))
            run_op(t, op)
        if o["clocks_pinned"]:
            ran.append("jetson_clocks")
            t.sudo("jetson_clocks")
        return {"restored": True, "restore_error": None, "restore_commands": ran}
    except Exception as e:
        return {"restored": False, "restore_error": getattr(e, "message", str(e)), "restore_commands": ran}


@contextmanager
def _second_ctrl_c_waits():
    """A Ctrl-C inside the block is held until it ends (the restore finishes), then raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit: list = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: hit.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if hit:
        raise KeyboardInterrupt


def result_skeleton(settings, spec: SweepSpec) -> Dict[str, Any]:
    return {"schema": report.RESULT_SCHEMA, "kind": "sweep", "started": time.time(),
            "started_iso": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "url": settings.url, "target": None, "model": None, "server": None, "workload": settings.workload.to_json(),
            "sweep": {"setting": spec.setting, "asked": list(spec.values), "original": None, "restored": None,
                      "restore_error": None, "restore_commands": [],
                      "settle": {"wait_s": SETTLE_WAIT_S, "timeout_s": SETTLE_TIMEOUT_S, "steady_pct": STEADY_PCT},
                      "rows": []},
            "runs": [], "errors": [], "notes": [], "complete": False, "files": None}


def run_sweep(settings, spec: SweepSpec, transport, on_progress: Callable[[str], None] = lambda text: None,
              telemetry: bool = True, result: Optional[Dict[str, Any]] = None, *, measure=None, poll=None,
              sleep: Callable[[float], None] = time.sleep, lock=device_lock) -> Dict[str, Any]:
    """Measure the workload once per value of `spec` and restore the setting; returns (and fills `result` as it
    goes, so a caller sees the partial result after Ctrl-C) the sweep result, saved under settings.out_dir."""
    from edgekit.bench import runner

    if transport is None:
        raise UsageError("--sweep changes the device and needs a TARGET", hint=HINT)
    measure = measure or runner.measure
    result = result if result is not None else {}
    result.update(result_skeleton(settings, spec))
    result["target"] = transport.name
    port = settings.url.rsplit(":", 1)[-1].split("/")[0] if settings.url.count(":") >= 2 else None
    with lock(transport, f"bench sweep over {spec.setting}"):
        on_progress("reading the device's settings")
        dev = _prepare(transport, spec, int(port) if port and port.isdigit() else None)
        result["sweep"]["original"] = {k: v for k, v in dev.original.items() if k != "status"}
        if poll is None and telemetry and spec.setting == "power-mode":
            poll = lambda: stream(transport, lambda item: None, interval_ms=500, count=4).samples  # noqa: E731
        with ExitStack() as pins:
            if settings.server_cpus:
                on_progress(f"restarting {L.UNIT_NAME} on CPUs {pinning.cpu_list(settings.server_cpus)}")
                pins.enter_context(pinning.server_pinned(transport, settings.server_cpus))
            pins.enter_context(pinning.client_pinned(settings.client_cpus))
            try:
                _each(dev, settings, result, on_progress, telemetry, measure, poll, sleep)
            except BaseException as e:
                result["errors"].append("interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt)
                                        else f"{type(e).__name__}: {getattr(e, 'message', e)}")
                raise
            finally:
                with _second_ctrl_c_waits():
                    on_progress("restoring the original settings")
                    result["sweep"].update(_restore(dev))
                    result["ended"] = time.time()
                    result["complete"] = not result["errors"] and all(
                        r["complete"] or (r["skipped"] and not r["error"]) for r in result["sweep"]["rows"])
                    _save(result, settings)
    if not result["sweep"]["restored"]:
        raise EdgekitError(f"the sweep could not restore {spec.setting} on {transport.name}: "
                           f"{result['sweep']['restore_error']}", hint=_by_hand(dev))
    return result


def _each(dev: _Device, settings, result, on_progress, telemetry, measure, poll, sleep) -> None:
    rows, n = result["sweep"]["rows"], len(dev.points)
    for i, point in enumerate(dev.points, 1):
        say = lambda text: on_progress(f"[{i}/{n}] {dev.spec.setting} {point.value}: {text}")  # noqa: E731
        if point.skipped is None:
            if point.mode is not None:
                say(f"nvpmodel -m {point.mode.id}")
                point.skipped = _switch(dev, point)
            else:
                say(f"restarting {L.UNIT_NAME} with {' '.join(f'{k}={v}' for k, v in point.env.items())}")
                dev.changed = True
                for op in env_ops(point.env):
                    run_op(dev.transport, op)
        if point.skipped is not None:
            rows.append(row_for(point, None))
            continue
        settled = settle(poll, sleep, SETTLE_WAIT_S, SETTLE_TIMEOUT_S) if point.mode else None
        try:
            run = measure(replace(settings, out_dir=None), dev.transport, say, telemetry)
        except EdgekitError as e:   # one value failing (the server did not come back) leaves the others to run
            row = row_for(point, None)
            row["error"], row["settle"] = f"{type(e).__name__}: {e.message}", settled
            rows.append(row)
            continue
        result["runs"].append(run)
        for key in ("model", "server"):
            result[key] = result[key] or run.get(key)
        row = row_for(point, run, _mode_ceiling(dev, point, run, settings.bandwidth_gbs))
        row.update(settle=settled, run=len(result["runs"]) - 1)
        if not point.mode:
            row["applied"] = applied(dev.spec.setting, point.value, run.get("server") or {})
            if row["applied"] is False:
                row["error"] = (f"the server's /props do not show {dev.spec.setting} {point.value}: is {settings.url} "
                                f"{L.UNIT_NAME}?")
        rows.append(row)


def _mode_ceiling(dev: _Device, point: Point, run, override: Optional[float]) -> Optional[limits.Ceiling]:
    """The ceiling in this power mode (None for server settings: the run's own ceiling stands)."""
    if point.mode is None:
        return None
    size = (run.get("ceiling") or {}).get("model_bytes")
    jetson = (dev.facts.jetson if dev.facts else None) or None
    if jetson and dev.facts.arch not in (None, "aarch64"):
        jetson = None                     # a stand-in with Jetson identity: its module's bandwidth is not this one
    if jetson:
        bw, how = mode_bandwidth(jetson.get("part"), point.mode, dev.table)
        jetson = {**jetson, "memory_bandwidth_gbs": bw, "module": how, "power_mode": point.mode.name}
    return limits.ceiling_for(size, jetson, override)


def _by_hand(dev: _Device) -> str:
    if dev.spec.setting == "power-mode":
        return f"on the board: `sudo nvpmodel -m {dev.original['id']}` ({dev.original['name']})"
    return f"on the board: `sudo rm -f {SWEEP_DROPIN} {SWEEP_ENV} && sudo systemctl daemon-reload && " \
           f"sudo systemctl restart {L.UNIT_NAME}`"


def _save(result: Dict[str, Any], settings) -> None:
    """Redact, write the JSON (first) and the plot; paths go into result['files']. Never raises."""
    redacted = redact(result, [settings.api_key])
    result.clear()
    result.update(redacted)
    if settings.out_dir is None:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(result["started"]))
    host = (result.get("target") or "device").replace(":", "_").replace("/", "_")
    base = Path(settings.out_dir) / f"bench-sweep-{result['sweep']['setting']}-{host}-{stamp}"
    result["files"] = {"json": str(base.with_suffix(".json")), "png": None}
    try:
        report.write_json(result, base.with_suffix(".json"))
        png = report.plot_sweep(result, base.with_suffix(".png"))
    except Exception as e:
        result["errors"].append(f"saving: {type(e).__name__}: {e}")
        return
    result["files"]["png"] = str(png) if png else "not written: pip install 'edgekit[plots]' (matplotlib)"
