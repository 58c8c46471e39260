"""Turn a bench run into numbers people can trust: medians and spread per case, telemetry per phase,
served vs llama-bench, share of the bandwidth ceiling; the JSON result file, PNG plots, and `compare`."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgekit.redact import redact
from edgekit.errors import UsageError
from edgekit.telemetry.sample import Sample

RESULT_SCHEMA = 1


# -- statistics ---------------------------------------------------------------------------------------------
def stats(values: Sequence[Optional[float]]) -> Optional[Dict[str, float]]:
    """Median and spread (min, max, relative spread = (max-min)/median) of the known values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    med = statistics.median(vals)
    return {"median": med, "min": min(vals), "max": max(vals), "n": len(vals),
            "spread_pct": 100.0 * (max(vals) - min(vals)) / med if med else 0.0}


def case_summary(case: Dict[str, Any]) -> Dict[str, Any]:
    """Per case: server-timed pp/tg tok/s per request, wall-clock tg, TTFT, aggregate generation throughput."""
    results = [r for batch in case["batches"] for r in batch if r["ok"]]
    failed = [r for batch in case["batches"] for r in batch if not r["ok"]]
    aggregate = []
    for batch in case["batches"]:
        ok = [r for r in batch if r["ok"]]
        if ok and len(ok) == len(batch):
            span = max(r["started"] + r["wall_s"] for r in ok) - min(r["started"] for r in ok)
            aggregate.append(sum(r["predicted_n"] or 0 for r in ok) / span if span > 0 else None)
    return {
        "name": case["name"], "sweep": case["sweep"], "prompt_tokens": case["prompt_tokens"],
        "concurrency": case["concurrency"], "skipped": case.get("skipped"),
        "requests": len(results), "failed": len(failed), "errors": sorted({r["error"] for r in failed})[:3],
        "pp_tps": stats([r["prompt_per_second"] for r in results]),
        "tg_tps": stats([r["predicted_per_second"] for r in results]),
        "tg_wall_tps": stats([r["wall_gen_per_second"] for r in results]),
        "ttft_s": stats([r["ttft_s"] for r in results]),
        "aggregate_tg_tps": stats(aggregate),
        "generated_tokens": sum(r["predicted_n"] or 0 for r in results),
        **acceptance(results),
    }


def acceptance(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Speculative decoding: tokens drafted, accepted, and the share accepted (None: nothing was drafted)."""
    drafted = sum(r.get("draft_n") or 0 for r in results)
    accepted = sum(r.get("draft_n_accepted") or 0 for r in results)
    return {"draft_tokens": drafted, "draft_accepted": accepted,
            "acceptance": accepted / drafted if drafted else None}


def phase_telemetry(samples: List[Sample], start: Optional[float], end: Optional[float],
                    generated_tokens: int, interval_s: float = 0.0) -> Optional[Dict[str, Any]]:
    """Telemetry of a phase: mean/peak GPU load, peak RAM, mean power, J/token, max temperature.

    A sample stamped t describes (t - interval, t] (loads are averaged over the interval), so it belongs to
    a phase when that span overlaps [start, end]; a phase shorter than the interval still gets its sample."""
    if start is None or end is None:
        return None
    inside = [s for s in samples if s.time is not None and start < s.time + 1e-9 and s.time - interval_s <= end]
    if not inside:
        return {"samples": 0}

    def known(attr):
        return [getattr(s, attr) for s in inside if getattr(s, attr) is not None]

    gpu, ram, power, rss = known("gpu_load_pct"), known("ram_used_mb"), known("power_total_mw"), known("server_rss_mb")
    cpu = [s.cpu_load_mean_pct for s in inside if s.cpu_load_mean_pct is not None]
    temps = [s.temp_max_c for s in inside if s.temp_max_c is not None]
    mean_w = statistics.fmean(power) / 1000 if power else None
    seconds = end - start
    return {
        "samples": len(inside), "seconds": seconds,
        "gpu_load_mean_pct": statistics.fmean(gpu) if gpu else None, "gpu_load_peak_pct": max(gpu) if gpu else None,
        "cpu_load_mean_pct": statistics.fmean(cpu) if cpu else None,
        "ram_peak_mb": max(ram) if ram else None, "server_rss_peak_mb": max(rss) if rss else None,
        "power_mean_w": mean_w,
        # whole-phase energy (prompt processing included) over the tokens generated in the phase
        "j_per_token": mean_w * seconds / generated_tokens if mean_w is not None and generated_tokens else None,
        "temp_max_c": max(temps) if temps else None,
    }


def agreement(llama_bench: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Served vs llama-bench from the interleaved rounds: medians of each side, difference in %."""
    if not llama_bench or not llama_bench.get("rounds"):
        return []
    pp, tg = llama_bench["pp"], llama_bench["tg"]
    rows = []
    for test, served_key, field, what in (
            (f"pp{pp}", "served_pp", "prompt_per_second", f"{pp}-token prompt, 1 token generated"),
            (f"tg{tg}", "served_tg", "predicted_per_second", f"1-token prompt, {tg} tokens generated")):
        ref = stats([r["llama_bench"].get(test, {}).get("avg_ts") for r in llama_bench["rounds"]])
        served = stats([r[served_key].get(field) for r in llama_bench["rounds"] if r[served_key].get("ok")])
        value, base = _median(served), _median(ref)
        diff = 100.0 * (value - base) / base if value is not None and base else None
        # the noise: half of each side's spread (max-min over median) added; a difference inside it is no ratio
        noise = ((ref or {}).get("spread_pct", 0) + (served or {}).get("spread_pct", 0)) / 2 if ref and served else None
        rows.append({"test": test, "llama_bench_tps": base, "llama_bench_spread_pct": (ref or {}).get("spread_pct"),
                     "served_tps": value, "served_spread_pct": (served or {}).get("spread_pct"),
                     "rounds": len(llama_bench["rounds"]), "served": f"server timings, {what}",
                     "diff_pct": diff, "noise_pct": noise,
                     "within_noise": diff is not None and noise is not None and abs(diff) <= noise})
    return rows


MIN_ROUNDS = 5      # fewer interleaved rounds than this give no spread worth quoting


def agreement_caption(llama_bench: Optional[Dict[str, Any]]) -> Optional[str]:
    """Pure: the side-by-side table's caption, built from what the run recorded: the rounds, the server's
    settings as read from the device, llama-bench's own (its JSON). What was not recorded is said so."""
    if not llama_bench or not llama_bench.get("rounds"):
        return None
    rounds = len(llama_bench["rounds"])
    server = llama_bench.get("server_settings") or {}
    first = next(iter((llama_bench["rounds"][0].get("llama_bench") or {}).values()), {})

    def batch(b, ub) -> str:
        return f"batch {b}/{ub}" if b and ub else "batch not set (llama.cpp's default)" if (b, ub) == (None, None) \
            else f"batch {b or '?'}/{ub or '?'}"

    threads = server.get("threads")
    source = {"log": " (from its log)", "default": " (llama.cpp's default: one per physical core)"}
    served = [f"{threads} threads" + source.get(server.get("threads_from"), "") if threads else "threads not recorded",
              batch(server.get("batch"), server.get("ubatch")),
              f"CPUs {server['cpus']}" if server.get("cpus") else "CPUs not recorded"]
    bench_cpus = llama_bench.get("llama_bench_cpus")
    bench = [f"{first['n_threads']} threads" if first.get("n_threads") else "threads not recorded",
             batch(first.get("n_batch"), first.get("n_ubatch")),
             f"CPUs {bench_cpus}" if bench_cpus else "CPUs not pinned"]
    differ = [name for name, a, b in (("threads", threads, first.get("n_threads")),
                                      ("batch", server.get("batch"), first.get("n_batch")),
                                      ("ubatch", server.get("ubatch"), first.get("n_ubatch")),
                                      ("CPUs", server.get("cpus"), bench_cpus))
              if a is not None and b is not None and str(a) != str(b)]
    head = (f"served vs llama-bench, median of {rounds} interleaved rounds" if rounds >= MIN_ROUNDS else
            f"served vs llama-bench, {rounds} round{'s' if rounds != 1 else ''} (under {MIN_ROUNDS}: no spread "
            "worth quoting)")
    tail = f"; they differ in {', '.join(differ)}" if differ else ""
    return f"{head}; server: {', '.join(served)}; llama-bench: {', '.join(bench)}{tail}"


def summarize(result: Dict[str, Any]) -> Dict[str, Any]:
    """Add the summary section (cases, phases, llama-bench agreement, ceiling share) to a raw result."""
    samples = [Sample.from_json(s) for s in (result.get("telemetry") or {}).get("samples", [])]
    interval_s = ((result.get("telemetry") or {}).get("interval_ms") or 0) / 1000
    cases = []
    for case in result["cases"]:
        summary = case_summary(case)
        summary["telemetry"] = phase_telemetry(samples, case.get("started"), case.get("ended"),
                                               summary["generated_tokens"], interval_s)
        cases.append(summary)
    ceiling = result.get("ceiling") or {}
    lb = result.get("llama_bench") or {}
    c1 = [c for c in cases if c["concurrency"] == 1 and c["tg_tps"]]
    best_tg = max((c["tg_tps"]["median"] for c in c1), default=None)
    return {
        "cases": cases,
        "llama_bench_agreement": agreement(result.get("llama_bench")),
        "llama_bench_caption": agreement_caption(result.get("llama_bench")),
        "llama_bench_telemetry": phase_telemetry(samples, lb.get("started"), lb.get("ended"), 0,
                                                                interval_s) if lb else None,
        "decode_best_c1_tps": best_tg,
        "decode_ceiling_tps": ceiling.get("decode_tps"),
        "decode_share_of_ceiling_pct": 100.0 * best_tg / ceiling["decode_tps"]
        if best_tg and ceiling.get("decode_tps") else None,
    }


# -- files ----------------------------------------------------------------------------------------------------
def write_json(result: Dict[str, Any], path: Path) -> Path:
    """Write atomically (temp file in the same folder, then rename), secrets redacted."""
    result = redact(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)          # a results file, readable like any other the user writes
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def load(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such result file: {path}", hint="pass a JSON file written by `edgekit bench`") from None
    except (ValueError, RecursionError) as e:
        raise UsageError(f"{path} is not JSON: {e}", hint="pass a JSON file written by `edgekit bench`") from None
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA or not ("cases" in data or is_sweep(data)):
        raise UsageError(f"{path} is not an edgekit bench result (schema {RESULT_SCHEMA})",
                         hint="pass a JSON file written by `edgekit bench`")
    data = redact(data)         # files written before secrets were redacted are shown without them too
    if "summary" not in data and not is_sweep(data):
        data["summary"] = summarize(data)
    return data


def is_sweep(result: Dict[str, Any]) -> bool:
    """Whether a result is `edgekit bench --sweep`'s (one row per value) rather than a single run."""
    return isinstance(result.get("sweep"), dict) and isinstance(result["sweep"].get("rows"), list)


def plot(result: Dict[str, Any], path: Path) -> Optional[Path]:
    """PNG: tok/s vs prompt length, tok/s vs concurrency, telemetry over time. None when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return None
    summary = result["summary"]
    cases = [c for c in summary["cases"] if c["tg_tps"]]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    title = (f"{(result.get('model') or {}).get('name') or '?'} on {result.get('target') or result.get('url')}"
             f" - workload v{result['workload']['version']}{' (quick)' if result['workload'].get('quick') else ''}")
    fig.suptitle(title)

    ctx = sorted((c for c in cases if c["sweep"] == "context"), key=lambda c: c["prompt_tokens"])
    ax = axes[0]
    if ctx:
        xs = [c["prompt_tokens"] for c in ctx]
        _errline(ax, xs, [c["pp_tps"] for c in ctx], "prompt processing (server)", "o-")
        ax2 = ax.twinx()
        _errline(ax2, xs, [c["tg_tps"] for c in ctx], "generation (server)", "s--", color="tab:orange")
        ax2.set_ylabel("generation tok/s", color="tab:orange")
        ax2.set_ylim(bottom=0)
        for row in summary.get("llama_bench_agreement", []):
            if row["llama_bench_tps"] and row["test"].startswith("pp"):
                ax.axhline(row["llama_bench_tps"], color="tab:blue", lw=0.8, ls=":", label=f"llama-bench {row['test']}")
            elif row["llama_bench_tps"]:
                ax2.axhline(row["llama_bench_tps"], color="tab:orange", lw=0.8, ls=":",
                            label=f"llama-bench {row['test']}")
        for axis in (ax, ax2):   # axhline does not widen the axis: keep the reference lines in view
            refs = [ln.get_ydata()[0] for ln in axis.get_lines() if ln.get_label().startswith("llama-bench")]
            if refs:
                axis.set_ylim(0, max(axis.get_ylim()[1], max(refs) * 1.08))
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower left")
    ax.set_title("tok/s vs prompt length (concurrency 1)")
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("prompt tok/s")
    ax.set_ylim(bottom=0)

    conc = sorted((c for c in cases if c["prompt_tokens"] == result["workload"]["concurrency_prompt_tokens"]),
                  key=lambda c: c["concurrency"])
    ax = axes[1]
    if conc:
        xs = [c["concurrency"] for c in conc]
        _errline(ax, xs, [c["aggregate_tg_tps"] for c in conc], "aggregate generation (wall clock)", "o-")
        _errline(ax, xs, [c["tg_tps"] for c in conc], "per request generation (server)", "s--")
        ceiling = summary.get("decode_ceiling_tps")
        if ceiling:
            ax.axhline(ceiling, color="red", lw=0.8, ls=":", label=f"bandwidth ceiling {ceiling:.0f} tok/s")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.legend(fontsize=8)
    ax.set_title(f"tok/s vs concurrency (prompt {result['workload']['concurrency_prompt_tokens']})")
    ax.set_xlabel("parallel requests")
    ax.set_ylabel("generated tok/s")
    ax.set_ylim(bottom=0)

    ax = axes[2]
    samples = [Sample.from_json(s) for s in (result.get("telemetry") or {}).get("samples", [])]
    samples = [s for s in samples if s.time is not None]
    if samples:
        t0 = min(s.time for s in samples)
        ts = [s.time - t0 for s in samples]
        ax.plot(ts, [s.cpu_load_mean_pct for s in samples], label="CPU load % (mean)", lw=1)
        if any(s.gpu_load_pct is not None for s in samples):
            ax.plot(ts, [s.gpu_load_pct for s in samples], label="GPU load %", lw=1)
        ax.set_ylim(0, 105)
        ax.set_ylabel("%")
        ax3 = ax.twinx()
        ax3.plot(ts, [s.ram_used_mb for s in samples], color="tab:green", lw=1, label="RAM used MiB (device)")
        if any(s.server_rss_mb is not None for s in samples):
            ax3.plot(ts, [s.server_rss_mb for s in samples], color="tab:purple", lw=1, label="llama-server RSS MiB")
        ax3.set_ylabel("MiB" + (" / mW" if any(s.power_total_mw is not None for s in samples) else ""))
        if any(s.power_total_mw is not None for s in samples):
            ax3.plot(ts, [s.power_total_mw for s in samples], color="tab:red", lw=1, label="power mW")
        ax3.set_ylim(bottom=0)
        for case in result["cases"]:
            if case.get("started") and case.get("ended"):
                ax.axvspan(case["started"] - t0, case["ended"] - t0, color="grey", alpha=0.12)
                ax.text(case["started"] - t0, 101, case["name"], fontsize=6, rotation=90, va="top")
        lb = result.get("llama_bench") or {}
        if lb.get("started") and lb.get("ended"):
            ax.axvspan(lb["started"] - t0, lb["ended"] - t0, color="tab:orange", alpha=0.12)
            ax.text(lb["started"] - t0, 101, "side by side", fontsize=6, rotation=90, va="top")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax3.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower right")
    source = (result.get("telemetry") or {}).get("source") or "none"
    ax.set_title(f"telemetry over time (source: {source})")
    ax.set_xlabel("seconds")
    return _png(plt, fig, path)


def plot_sweep(result: Dict[str, Any], path: Path) -> Optional[Path]:
    """PNG of a sweep: pp and tg tok/s per value (tg labelled with its share of the ceiling), J/token per value.
    None when matplotlib is missing."""
    plt = _pyplot()
    if plt is None:
        return None
    sweep, rows, w = result["sweep"], result["sweep"]["rows"], result["workload"]
    xs, labels = list(range(len(rows))), [r["value"] + (" (skipped)" if r["skipped"] else "") for r in rows]
    ys = lambda key: [float("nan") if r.get(key) is None else r[key] for r in rows]  # noqa: E731
    fig, (ax, ax_j) = plt.subplots(1, 2, figsize=(13, 4.8))
    fig.suptitle(f"{(result.get('model') or {}).get('name') or '?'} on {result.get('target') or result.get('url')} - "
                 f"sweep over {sweep['setting']}, workload v{w['version']}{' (quick)' if w.get('quick') else ''}")
    ax.plot(xs, ys("pp_tps"), "o-", label="prompt tok/s (longest prompt, concurrency 1)")
    ax.set(ylabel="prompt tok/s", title="tok/s per value", ylim=(0, None))
    ax2 = ax.twinx()
    ax2.plot(xs, ys("tg_tps"), "s--", color="tab:orange", label="generation tok/s (best at concurrency 1)")
    for x, r in zip(xs, rows):
        if r.get("tg_tps") is not None and r.get("ceiling_share_pct") is not None:
            ax2.annotate(f"{r['ceiling_share_pct']:.0f}% of ceiling", (x, r["tg_tps"]), fontsize=7,
                         textcoords="offset points", xytext=(0, 6), ha="center")
    ax2.set(ylabel="generation tok/s", ylim=(0, None))
    (h1, l1), (h2, l2) = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    ax_j.bar(xs, [0 if v != v else v for v in ys("j_per_token")], color="tab:red")
    ax_j.set(ylabel="J/token (input rail)", title="energy per generated token")
    for axis in (ax, ax_j):
        axis.set_xticks(xs, labels)
    if all(r.get("j_per_token") is None for r in rows):
        ax_j.text(0.5, 0.5, "no input-rail power (VDD_IN) in the telemetry", ha="center", transform=ax_j.transAxes)
    return _png(plt, fig, path)


def _pyplot():
    """matplotlib's pyplot drawing to files, None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _png(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _errline(ax, xs, stats_list, label, style, color=None):
    ys = [s["median"] if s else None for s in stats_list]
    lo = [(s["median"] - s["min"]) if s else 0 for s in stats_list]
    hi = [(s["max"] - s["median"]) if s else 0 for s in stats_list]
    kwargs = {"color": color} if color else {}
    ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, capsize=3, label=label, **kwargs)


# -- compare --------------------------------------------------------------------------------------------------
def _row(metric: str, va: Optional[float], vb: Optional[float], **extra: Any) -> Dict[str, Any]:
    return {"metric": metric, "a": va, "b": vb,
            "change_pct": 100.0 * (vb - va) / va if va and vb is not None else None, **extra}


def compare(a: Dict[str, Any], b: Dict[str, Any], names: Sequence[str] = ("A", "B")) -> List[Dict[str, Any]]:
    """Rows of (metric, a, b, change %) for the cases both runs measured, plus headline figures; for two sweeps,
    per value side by side. A sweep and a single run are refused, saying which is which."""
    if is_sweep(a) != is_sweep(b):
        (sweep, swept), single = ((names[0], a), names[1]) if is_sweep(a) else ((names[1], b), names[0])
        raise UsageError(f"{sweep} is a sweep over {swept['sweep']['setting']} and {single} is a single run: "
                         "compare two sweeps, or two single runs",
                         hint="edgekit bench-compare A.json B.json with two files of `edgekit bench TARGET --sweep`")
    if is_sweep(a):
        return compare_sweeps(a, b, names)
    rows: List[Dict[str, Any]] = []

    def add(metric: str, va: Optional[float], vb: Optional[float]) -> None:
        rows.append(_row(metric, va, vb))

    sa = {c["name"]: c for c in a["summary"]["cases"]}
    sb = {c["name"]: c for c in b["summary"]["cases"]}
    for name in [n for n in sa if n in sb]:
        for key, label in (("pp_tps", "prompt tok/s"), ("tg_tps", "gen tok/s"), ("ttft_s", "TTFT s"),
                           ("aggregate_tg_tps", "aggregate gen tok/s")):
            add(f"{name} {label}", _median(sa[name].get(key)), _median(sb[name].get(key)))
        ta, tb = sa[name].get("telemetry") or {}, sb[name].get("telemetry") or {}
        for key, label in (("power_mean_w", "power W"), ("j_per_token", "J/token"), ("temp_max_c", "max temp C")):
            if ta.get(key) is not None or tb.get(key) is not None:
                add(f"{name} {label}", ta.get(key), tb.get(key))
    add("decode share of ceiling %", a["summary"].get("decode_share_of_ceiling_pct"),
        b["summary"].get("decode_share_of_ceiling_pct"))
    return rows


def _median(s: Optional[Dict[str, float]]) -> Optional[float]:
    return s["median"] if s else None


SWEEP_METRICS = (("pp_tps", "prompt tok/s"), ("tg_tps", "gen tok/s"), ("power_mean_w", "power W"),
                 ("power_peak_w", "peak power W"), ("j_per_token", "J/token"), ("temp_max_c", "max temp C"),
                 ("ceiling_share_pct", "% of ceiling"))


def compare_sweeps(a: Dict[str, Any], b: Dict[str, Any], names: Sequence[str] = ("A", "B")) -> List[Dict[str, Any]]:
    """Per value of two sweeps over the same setting, side by side (rows carry `value`)."""
    sa, sb = a["sweep"], b["sweep"]
    if sa["setting"] != sb["setting"]:
        raise UsageError(f"{names[0]} is a sweep over {sa['setting']} and {names[1]} over {sb['setting']}: "
                         "compare sweeps over the same setting", hint="edgekit bench-compare A.json B.json")
    ra, rb = {r["value"]: r for r in sa["rows"]}, {r["value"]: r for r in sb["rows"]}
    rows: List[Dict[str, Any]] = []
    for value in list(ra) + [v for v in rb if v not in ra]:
        if value not in ra or value not in rb:
            rows.append(_row(f"{value}: only in {names[0] if value in ra else names[1]}", None, None, value=value))
            continue
        pair = [(label, ra[value].get(key), rb[value].get(key)) for key, label in SWEEP_METRICS]
        rows += [_row(f"{value} {label}", va, vb, value=value) for label, va, vb in pair
                 if not (va is None and vb is None and ("power" in label or "J/" in label))]
    return rows


def describe(result: Dict[str, Any]) -> Dict[str, Optional[str]]:
    """One line per run for compare's header: model, device, power mode, build (and what a sweep swept)."""
    if is_sweep(result):
        sweep, first = result["sweep"], describe(result["runs"][0]) if result.get("runs") else {}
        return {"model": (result.get("model") or {}).get("name"), "target": result.get("target") or result.get("url"),
                "power_mode": "swept" if sweep["setting"] == "power-mode" else first.get("power_mode"),
                "build": (result.get("server") or {}).get("build_info"), "started": result.get("started_iso"),
                "sweep": f"{sweep['setting']}: {', '.join(r['value'] for r in sweep['rows'])}"}
    facts = result.get("facts") or {}
    jetson = facts.get("jetson") or {}
    samples = (result.get("telemetry") or {}).get("samples") or []
    mode = next((s.get("power_mode") for s in samples if s.get("power_mode")), jetson.get("power_mode"))
    return {"model": (result.get("model") or {}).get("name"), "target": result.get("target") or result.get("url"),
            "power_mode": mode, "build": (result.get("server") or {}).get("build_info"),
            "started": result.get("started_iso"), "sweep": None}
