"""`edgekit bench --sweep`: what each value of one setting means on the device, how it is applied and restored,
and one row of numbers per value (runner.run_sweep runs the workload once per value, restoring in a `finally`).

Settings: `power-mode` (every mode of the device's own /etc/nvpmodel.conf, or the names given, each switched by
tuning.steps.switch_power_mode; a mode that needs a reboot is skipped, saying so; a Super mode before JetPack 6.2
too), and the server's `ctx`, `parallel`, `cache-type` (LLAMA_ARG_* through a runtime drop-in under /run, as pinning.py pins CPUs, and a restart). After a
mode switch: a fixed wait, then the telemetry's GPU and memory (EMC) clocks until steady, bounded.

`prepare` runs every check before the first change; `restore` puts back the original mode (its status file, pinned
clocks) or the service's own settings. Library code: nothing printed; the CLI renders the result
(`result_skeleton` has its shape).
"""

from __future__ import annotations

import datetime
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from edgekit import layout as L
from edgekit.bench import limits, pinning, report
from edgekit.bench import llama_bench as lb
from edgekit.errors import RemoteCommandFailed, UnsuitableDevice, UsageError
from edgekit.facts import device as device_facts
from edgekit.facts.deployed import FileText, read
from edgekit.remote.command import Check, Upload, run_op
from edgekit.remote.plan import Context
from edgekit.service.settings import parse_env
from edgekit.settings import CACHE_TYPES, MAX_CTX, SPEC_TYPES
from edgekit.telemetry.sample import Sample
from edgekit.tuning.facts import ClocksState, CurrentPowerMode, PowerModeTable
from edgekit.facts.power_modes import Mode, ModeTable, reboot_expected, resolve, too_new
from edgekit.tuning.steps import nvpmodel_set, switch_by_hand, switch_power_mode

ENV_VARS = {"ctx": ("LLAMA_ARG_CTX_SIZE",), "parallel": ("LLAMA_ARG_N_PARALLEL",),
            "cache-type": ("LLAMA_ARG_CACHE_TYPE_K", "LLAMA_ARG_CACHE_TYPE_V"),
            "spec": ("LLAMA_ARG_SPEC_DRAFT_MODEL", "LLAMA_ARG_SPEC_TYPE")}
EXAMPLES = {"ctx": "2048,4096", "parallel": "1,2", "cache-type": "f16,q8_0", "spec": "off,draft,ngram"}
# speculative decoding: off, the draft the service was provisioned with (--draft), or draft-free ngram-* ("ngram":
# ngram-mod)
SPEC_VALUES = ("off", "draft", "ngram", *SPEC_TYPES)
SETTINGS = ("power-mode",) + tuple(ENV_VARS)
SWEEP_DROPIN = f"{pinning.DROPIN_DIR}/60-edgekit-bench-sweep.conf"
SWEEP_ENV = "/run/edgekit-bench-sweep.env"       # under /run: a reboot drops it even if the sweep was killed
SETTLE_WAIT_S = 3.0            # after a mode switch, before looking at the clocks
SETTLE_TIMEOUT_S = 30.0        # the most the clocks are waited for (then measured anyway, said in the row)
STEADY_PCT = 2.0               # clocks are settled when the last 3 readings are within this of each other
HINT = ("edgekit bench TARGET --sweep power-mode (or ctx=2048,4096, parallel=1,2, cache-type=f16,q8_0, "
        "spec=off,draft,ngram)")


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
        raise UsageError(f"--sweep {setting} needs values, e.g. --sweep {setting}={EXAMPLES[setting]}", hint=HINT)
    for v in values:
        bad = {"ctx": not (v.isdecimal() and 64 <= int(v) <= MAX_CTX) and f"a context size from 64 to {MAX_CTX}",
               "parallel": not (v.isdecimal() and 1 <= int(v) <= 256) and "a number of slots from 1 to 256",
               "cache-type": v not in CACHE_TYPES and f"one of {', '.join(CACHE_TYPES)}",
               "spec": v not in SPEC_VALUES and f"one of {', '.join(SPEC_VALUES)}"}.get(setting)
        if bad:
            raise UsageError(f"--sweep {setting}: {v!r} is not {bad}", hint=HINT)
    return SweepSpec(setting, values)


# -- pure: what each value means and does --------------------------------------------------------------------
def power_points(spec: SweepSpec, table: ModeTable, current_id: Optional[int], l4t: Optional[str] = None,
                 part: Optional[str] = None) -> List[Point]:
    """The modes to measure (id order when none are named). A name the board lacks is refused (before any change);
    a mode whose GPU power-gating differs from the running one's stays as a skipped row: it needs a reboot."""
    running = table.by_id(current_id)
    points: List[Point] = []
    for name in spec.values or tuple(m.name for m in sorted(table.modes, key=lambda m: m.id)):
        mode, how = (table.by_name(name), "") if not spec.values else resolve(name, table, l4t, part)
        if any(p.mode.id == mode.id for p in points):
            continue
        skipped = (f"needs a reboot: {mode.name} power-gates other parts of the GPU than {running.name} (applied only "
                   "at boot); not measured") if reboot_expected(running, mode) else None
        if not spec.values and too_new(mode, l4t):
            skipped = f"refused here: {too_new(mode, l4t)}; not measured"
        points.append(Point(mode.name, mode=mode, skipped=skipped, how=how))
    return points


def env_ops(env: Dict[str, str]) -> list:
    """Pure: the service restarted with `env` over its own env file (a later EnvironmentFile= wins over the unit's;
    Environment= would not)."""
    dropin = ("# edgekit bench --sweep: llama-server settings for one value of the sweep; removed when it ends\n"
              f"[Service]\nEnvironmentFile={SWEEP_ENV}\n")
    settings = Upload(SWEEP_ENV, "# edgekit bench --sweep\n" + "".join(f"{k}={v}\n" for k, v in sorted(env.items())))
    return pinning.dropin_ops(SWEEP_DROPIN, dropin, before=[settings])


def unenv_ops() -> list:
    """Pure: the service back on its own settings."""
    return pinning.dropout_ops(SWEEP_DROPIN, SWEEP_ENV)


def switch_ops(dev: "Sweep", mode: Mode) -> list:
    """Pure: a switch to `mode` as it runs (switch): nvpmodel, its answer checked, clocks pinned again if they were."""
    return [nvpmodel_set(mode.id), Check(f"nvpmodel -q reports {mode.name} (id {mode.id})"),
            *(["jetson_clocks"] if dev.original["clocks_pinned"] else [])]


def restore_ops(dev: "Sweep") -> list:
    """Pure: the restore as it runs (restore): the original mode (its status file as it was; rewritten only if the
    switch back left it otherwise) and pinned clocks, or the service back on its own settings."""
    if dev.spec.setting != "power-mode":
        return unenv_ops()
    o = dev.original
    return [nvpmodel_set(o["id"]), Check(f"nvpmodel -q reports {o['name']} (id {o['id']}), and its status file is "
                                         "as it was (else it is written back)"),
            *(["jetson_clocks"] if o["clocks_pinned"] else [])]


def plan(dev: "Sweep", server_cpus: Optional[List[int]] = None, workload: str = "the workload") -> list:
    """Pure: every operation the sweep runs, in order, from its prepared values (what --dry-run prints; the run
    executes the same through switch, apply_env, restore and pinning.server_pinned). A value skipped before the
    run (a reboot, a Super mode too new) has none."""
    ops: list = list(pinning.pin_ops(server_cpus)) if server_cpus else []
    current, changed = dev.current, False
    for point in dev.points:
        if point.skipped is not None:
            continue
        if point.mode is not None:
            if point.mode.id != current:
                ops += switch_ops(dev, point.mode)
                current, changed = point.mode.id, True
            ops.append(Check(f"wait {SETTLE_WAIT_S:g} s, then read the GPU and memory clocks until steady (at most "
                             f"{SETTLE_TIMEOUT_S:g} s)"))
        else:
            ops += env_ops(point.env)
            changed = True
        ops.append(Check(f"measure {dev.spec.setting} {point.value}: {workload}"))
    if changed:
        ops += restore_ops(dev)
    if server_cpus:
        ops += pinning.unpin_ops()
    return ops


def clocks_steady(values: List[float]) -> bool:
    """Pure: the last 3 readings within STEADY_PCT of each other (fewer than 2 readings: nothing to judge)."""
    last = values[-3:]
    return len(last) < 2 or max(last) - min(last) <= STEADY_PCT / 100 * max(last)


def settle(poll: Optional[Callable[[], List[Sample]]], sleep: Callable[[float], None], wait_s: float,
           timeout_s: float, clock: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
    """A fixed wait, then telemetry polled until the GPU and EMC clocks are steady, at most `timeout_s` in all."""
    start = clock()
    sleep(wait_s)
    out: Dict[str, Any] = {"waited_s": None, "stable": None, "gpu_mhz": None, "emc_mhz": None,
                           "why": "no telemetry: fixed wait only" if poll is None else None}
    while poll is not None:
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


def row_for(point: Point, run: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Pure: one row from a bench result: pp tok/s (the longest prompt at concurrency 1), tg tok/s (the best at
    concurrency 1), input-rail power mean/peak (VDD_IN, POM_5V_IN; never a sum of rails), J/token over the measured
    phases, max temperature, the run's decode ceiling and the share of it. The run read the device's facts in the
    value's power mode, so its ceiling is that mode's (facts.boards: Module.bandwidth_in)."""
    row: Dict[str, Any] = {"value": point.value, "mode_id": point.mode.id if point.mode else None,
                           "env": point.env or None, "how": point.how or None, "skipped": point.skipped,
                           "error": None, "complete": False, "failed_requests": 0, "pp_tps": None, "pp_case": None,
                           "tg_tps": None, "tg_case": None, "power_mean_w": None, "power_peak_w": None,
                           "j_per_token": None, "temp_max_c": None, "bandwidth_gbs": None, "bandwidth_from": None,
                           "decode_ceiling_tps": None, "ceiling_share_pct": None, "settle": None, "applied": None,
                           "ttft_s": None, "draft_tokens": 0, "draft_accepted": 0, "acceptance": None}
    if run is None:
        return row
    cases = [c for c in run["summary"]["cases"] if not c["skipped"]]
    c1 = [c for c in cases if c["concurrency"] == 1]
    pp = max((c for c in c1 if c["pp_tps"]), key=lambda c: c["prompt_tokens"], default=None)
    tg = max((c for c in c1 if c["tg_tps"]), key=lambda c: c["tg_tps"]["median"], default=None)
    row.update(complete=bool(run.get("complete")), failed_requests=sum(c["failed"] for c in cases),
               pp_tps=pp and pp["pp_tps"]["median"], pp_case=pp and pp["name"],
               tg_tps=tg and tg["tg_tps"]["median"], tg_case=tg and tg["name"],
               ttft_s=tg and tg["ttft_s"] and tg["ttft_s"]["median"],
               **report.acceptance([r for raw in run["cases"] for batch in raw["batches"] for r in batch if r["ok"]]))
    tel = run.get("telemetry") or {}
    samples = [Sample.from_json(s) for s in tel.get("samples") or [] if s.get("time") is not None]
    slack = (tel.get("interval_ms") or 0) / 1000      # a sample stamped t covers (t - interval, t]
    watts, temps, joules, tokens, unknown = [], [], 0.0, 0, False
    for raw, summary in zip(run["cases"], run["summary"]["cases"]):
        if raw.get("started") is None or raw.get("ended") is None:
            continue
        inside = [s for s in samples if raw["started"] < s.time + 1e-9 and s.time - slack <= raw["ended"]]
        w = [s.power_total_mw / 1000 for s in inside
             if s.power_total_mw is not None and s.power_total_from != "sum of rails"]
        watts, unknown = watts + w, unknown or not w
        temps += [s.temp_max_c for s in inside if s.temp_max_c is not None]
        joules += (sum(w) / len(w) if w else 0.0) * (raw["ended"] - raw["started"])
        tokens += summary["generated_tokens"]
    if watts:
        row.update(power_mean_w=sum(watts) / len(watts), power_peak_w=max(watts),
                   j_per_token=joules / tokens if tokens and not unknown else None)
    row["temp_max_c"] = max(temps) if temps else None
    if run.get("ceiling"):
        ceiling = limits.Ceiling(**run["ceiling"])
        row.update(bandwidth_gbs=ceiling.bandwidth_gbs, bandwidth_from=ceiling.bandwidth_from,
                   decode_ceiling_tps=ceiling.decode_tps, ceiling_share_pct=ceiling.share(row["tg_tps"]))
    return row


def applied(setting: str, value: str, server: Dict[str, Any]) -> Optional[bool]:
    """Pure: whether the server's /props show the value (ctx: per slot or in all; parallel: the slots); None when
    /props do not tell (cache type)."""
    slots, per_slot = server.get("total_slots"), server.get("slot_n_ctx")
    if setting == "parallel" and slots:
        return slots == int(value)
    if setting == "ctx" and per_slot:
        return int(value) in (per_slot, per_slot * (slots or 1))
    return None


# -- on the device -------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """A prepared sweep: the device, its values, and what to restore (`changed` once anything was)."""

    transport: Any
    spec: SweepSpec
    points: List[Point]
    original: Dict[str, Any]
    table: Optional[ModeTable] = None
    changed: bool = False
    current: Optional[int] = None      # the power mode the device runs now


def prepare(t, spec: SweepSpec, url_port: Optional[int]) -> Sweep:
    """Every check, before any change: the conf and the running mode (power-mode), or the service and its env."""
    if spec.setting == "power-mode":
        facts, table = device_facts.read_facts(t), read(t, PowerModeTable())
        if table is None:
            raise UnsuitableDevice(f"{t.name} has no {L.NVPMODEL_CONF}: nvpmodel power modes exist only on Jetson "
                                   "boards", hint="sweep a server setting instead: --sweep ctx=2048,4096")
        current = read(t, CurrentPowerMode())
        if current["id"] is None:
            raise UnsuitableDevice(f"`nvpmodel -q` names no power mode on {t.name}",
                                   hint="check nvpmodel on the board (`sudo nvpmodel -q`), then run again")
        jetson = facts.jetson or {}
        points = power_points(spec, table, current["id"], jetson.get("l4t"), jetson.get("part"))
        clocks = read(t, ClocksState())
        original = {"id": current["id"], "name": current["name"] or getattr(table.by_id(current["id"]), "name", None),
                    "status": current["status"], "clocks_pinned": bool(clocks and clocks["pinned"])}
        return Sweep(t, spec, points, original, table, current=current["id"])
    env = read(t, FileText(L.ENV_PATH))
    if env is None:
        raise UnsuitableDevice(f"no edgekit service on {t.name} ({L.ENV_PATH} is missing): the sweep changes its "
                               "settings", hint=f"edgekit provision {t.name}")
    values = parse_env(env)
    if "LLAMA_ARG_MODELS_PRESET" in values:
        raise UnsuitableDevice(f"{L.UNIT_NAME} on {t.name} is a router (several models, each with its own settings in "
                               f"{L.PRESET_PATH}): --sweep {spec.setting} changes one server's setting",
                               hint="sweep the power mode instead: --sweep power-mode")
    own = int(values.get("LLAMA_ARG_PORT") or lb.DEFAULT_PORT)
    if url_port and url_port != own:
        raise UsageError(f"the URL's port is {url_port}, {L.UNIT_NAME} on {t.name} listens on {own}: the sweep "
                         "changes that service's settings", hint=f"leave out --url, or give --url with port {own}")
    points = [spec_point(v, values) if spec.setting == "spec" else Point(v, env={var: v for var in
                                                                                  ENV_VARS[spec.setting]})
              for v in spec.values]
    return Sweep(t, spec, points, {var: values.get(var) for var in ENV_VARS[spec.setting]})


def spec_point(value: str, own: Dict[str, str]) -> Point:
    """Pure: one speculation setting over the service's own env: off (no draft, no speculation), draft (the draft
    it was provisioned with; skipped without one) or an ngram type (the draft left out)."""
    draft = own.get("LLAMA_ARG_SPEC_DRAFT_MODEL")
    if value == "off":
        return Point(value, env={"LLAMA_ARG_SPEC_DRAFT_MODEL": "", "LLAMA_ARG_SPEC_TYPE": "none"})
    if value == "draft":
        if not draft:
            return Point(value, skipped="no draft model: provision with --draft NAME first; not measured")
        return Point(value, env={"LLAMA_ARG_SPEC_DRAFT_MODEL": draft, "LLAMA_ARG_SPEC_TYPE": "draft-simple"},
                     how=draft.rsplit("/", 1)[-1])
    kind = "ngram-mod" if value == "ngram" else value
    return Point(value, env={"LLAMA_ARG_SPEC_DRAFT_MODEL": "", "LLAMA_ARG_SPEC_TYPE": kind},
                 how=kind if kind != value else "")


def switch(dev: Sweep, mode: Mode) -> Optional[str]:
    """Switch to `mode` (re-pinning clocks that were pinned); the reason when nvpmodel wants a reboot after all (its
    prompt is declined: nothing changed)."""
    t = dev.transport
    if mode.id == dev.current:
        return None
    declined = None
    try:
        declined = switch_power_mode(Context(t), mode)
    finally:
        dev.changed = dev.changed or not declined      # a failure may have changed the mode: the restore runs
    if declined:
        return f"{declined}; not measured"
    dev.current = mode.id
    for op in switch_ops(dev, mode)[2:]:          # after the switch and its check: the clocks pinned again
        run_op(t, op)
    return None


def restore(dev: Sweep) -> Dict[str, Any]:
    """The original mode (its status file, pinned clocks) or the service's own settings back; never raises."""
    t, o, ran = dev.transport, dev.original, []
    try:
        if dev.changed and dev.spec.setting != "power-mode":
            for op in unenv_ops():
                ran.append(str(op))
                run_op(t, op)
        elif dev.changed:
            switch, _, *after = restore_ops(dev)       # the switch, its check (here), the clocks pinned again
            ran.append(switch)
            res = run_op(t, switch, check=False)
            now = read(t, CurrentPowerMode())
            dev.current = now["id"]
            if now["id"] != o["id"]:
                raise RemoteCommandFailed(ran[0], res.exit_code or 1, (res.stdout or "") + (res.stderr or ""),
                                          message=f"could not switch {t.name} back to {o['name']} (id {o['id']})")
            if o["status"] is not None and now["status"] != o["status"]:   # a mode set for the next boot
                ran.append(str(Upload(L.NVPMODEL_STATUS, o["status"])))
                run_op(t, Upload(L.NVPMODEL_STATUS, o["status"]))
            for op in after:
                ran.append(str(op))
                run_op(t, op)
    except Exception as e:
        return {"restored": False, "restore_error": getattr(e, "message", str(e)), "restore_commands": ran}
    return {"restored": True, "restore_error": None, "restore_commands": ran}


@contextmanager
def ctrl_c_sticks():
    """Ctrl-C raises KeyboardInterrupt as usual and is remembered: where a library swallows it (invoke sends the
    remote command a ^C and waits on), the `check()` this yields raises it again at the caller's next step."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    hit: list = []

    def interrupted(signum, frame):
        hit.append(signum)
        raise KeyboardInterrupt

    def check() -> None:
        if hit:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, interrupted)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, old)


@contextmanager
def second_ctrl_c_waits():
    """A Ctrl-C inside the block is held until the block ends (the restore is done), then raised."""
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
    """The sweep result: one row per value in sweep.rows (row_for), each measured run in runs (run_bench's shape)."""
    return {"schema": report.RESULT_SCHEMA, "kind": "sweep", "started": time.time(),
            "started_iso": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "url": settings.url, "target": None, "model": None, "server": None, "workload": settings.workload.to_json(),
            "sweep": {"setting": spec.setting, "asked": list(spec.values), "original": None, "restored": None,
                      "restore_error": None, "restore_commands": [],
                      "settle": {"wait_s": SETTLE_WAIT_S, "timeout_s": SETTLE_TIMEOUT_S, "steady_pct": STEADY_PCT},
                      "rows": []},
            "runs": [], "errors": [], "notes": [], "complete": False, "files": None}


def apply_env(dev: Sweep, env: Dict[str, str]) -> None:
    dev.changed = True
    for op in env_ops(env):
        run_op(dev.transport, op)


def by_hand(dev: Sweep) -> str:
    """How to restore on the board when the sweep could not."""
    if dev.table is not None:
        return f"on the board: {switch_by_hand(dev.original['id'])} ({dev.original['name']})"
    return (f"on the board: `sudo rm -f {SWEEP_DROPIN} {SWEEP_ENV}`, then `sudo systemctl daemon-reload` and "
            f"`sudo systemctl restart {L.UNIT_NAME}`")
