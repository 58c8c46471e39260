"""`edgekit bench`: measure a llama-server (tok/s, TTFT, telemetry, llama-bench, bandwidth ceiling);
`edgekit bench-compare`: two runs side by side (its own command, so that any host name is a TARGET)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.status import Status

from edgekit.bench import report
from edgekit.bench.pinning import parse_cpu_list
from edgekit.redact import redact
from edgekit.bench.runner import BenchSettings, bench_plan, reach_server, run_bench, run_sweep
from edgekit.bench.sweep import SweepSpec, parse_sweep
from edgekit.bench.workload import DEFAULT, QUICK
from edgekit.cli.app import app
from edgekit.cli.common import AcceptNewHostKey, AskBecomePass, Identity, Verbose, open_transport
from edgekit.cli.options import DryRun
from edgekit.console import DataTable, Tracer, emit_json, err, note, plain, say, warning
from edgekit.errors import PartialFailure, UsageError
from edgekit.layout import API_KEY_PATH


@app.command()
def bench(
    target: Optional[str] = typer.Argument(None, help="Device running llama-server ([user@]host, alias, `local`)."),
    url: Optional[str] = typer.Option(None, "--url", help="llama-server URL (default: http://TARGET:PORT)."),
    port: int = typer.Option(8080, "--port", help="llama-server port when --url is not given."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="EDGEKIT_API_KEY",
                                          help=f"Bearer key (default: read {API_KEY_PATH} on the device)."),
    llama_bench: bool = typer.Option(False, "--llama-bench", help="Also run llama-bench on the device, same settings."),
    quick: bool = typer.Option(False, "--quick", help="A short smoke run (not for comparisons)."),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Folder for the JSON result and PNG plots."),
    bandwidth: Optional[float] = typer.Option(None, "--bandwidth", min=0.1,
                                              help="Memory bandwidth in GB/s (for boards edgekit does not know)."),
    no_telemetry: bool = typer.Option(False, "--no-telemetry", help="Do not sample the device during the run."),
    server_cpus: Optional[str] = typer.Option(
        None, "--server-cpus", help="Pin llama-server (restarted) and llama-bench to these device CPUs for the run, "
                                    "e.g. 0,1; restored after."),
    client_cpus: Optional[str] = typer.Option(
        None, "--client-cpus", help="Run the bench client on these CPUs of this machine, e.g. 2,3 (on a stand-in: "
                                    "other cores than --server-cpus)."),
    sweep: Optional[str] = typer.Option(
        None, "--sweep", help="Measure once per value of a setting, then restore it: power-mode[=NAME,...] (the "
                              "device's nvpmodel modes), ctx=N,N, parallel=N,N, cache-type=T,T or spec=off,draft,"
                              "ngram (speculative decoding: the provisioned --draft, ngram-* draft-free)."),
    full: bool = typer.Option(False, "--full", help="With --sweep: the full workload per value (default: quick)."),
    dry_run: DryRun = False,
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    identity: Optional[Path] = Identity,
    accept_new_host_key: bool = AcceptNewHostKey,
    ask_become_pass: bool = AskBecomePass,
    verbose: bool = Verbose,
) -> None:
    """Benchmark a llama-server with a fixed workload; `edgekit bench-compare A.json B.json` compares two runs.

    With --sweep: the workload under each power mode (or server setting), one row per value, the original restored."""
    if target is None and url is None:
        raise UsageError("nothing to benchmark", hint="give a TARGET (device over SSH) or --url http://HOST:PORT")
    spec = parse_sweep(sweep) if sweep is not None else None
    if full and (spec is None or quick):
        raise UsageError("--full is for --sweep, without --quick (a single run uses the full workload unless --quick)",
                         hint="edgekit bench TARGET --sweep power-mode --full")
    if spec is not None and target is None:
        raise UsageError("--sweep changes the device and needs a TARGET", hint="edgekit bench HOST --sweep power-mode")
    settings = BenchSettings(url=url or "", api_key=api_key,
                             workload=(DEFAULT if full else QUICK) if spec else QUICK if quick else DEFAULT,
                             llama_bench=llama_bench, bandwidth_gbs=bandwidth, out_dir=str(out),
                             server_cpus=parse_cpu_list(server_cpus) if server_cpus else None,
                             client_cpus=parse_cpu_list(client_cpus) if client_cpus else None)
    if target is None:
        if llama_bench:
            raise UsageError("--llama-bench runs on the device and needs a TARGET", hint="edgekit bench HOST --url URL "
                             "--llama-bench")
        if server_cpus:
            raise UsageError("--server-cpus changes the service on the device and needs a TARGET",
                             hint="edgekit bench HOST --url URL --server-cpus 0,1")
        if dry_run:
            _render_plan(settings.url, {"commands": [str(op) for op in bench_plan(settings)]}, json_out)
            return
        result = _run(settings, None)
    else:
        tracer = Tracer() if verbose else None
        with open_transport(target, identity, accept_new_host_key, ask_become_pass, tracer) as t:
            reach_server(settings, t, port)
            if dry_run:
                _render_plan(t.name, run_sweep(settings, spec, t, dry_run=True) if spec is not None else
                             {"commands": [str(op) for op in bench_plan(settings)]}, json_out)
                return
            if spec is not None:
                result = _sweep(settings, spec, t, not no_telemetry)
            else:
                needs_device = llama_bench or server_cpus or not no_telemetry
                result = _run(settings, t if needs_device else None, telemetry=not no_telemetry)
        if tracer is not None:
            tracer.summary()
    if spec is not None:
        _render_sweep(redact(result, [settings.api_key]), json_out)
        failed = [r["value"] for r in result["sweep"]["rows"] if r["error"] or not (r["skipped"] or r["complete"])]
        if failed or not result["complete"]:
            saved = (result.get("files") or {}).get("json")
            raise PartialFailure(f"not measured in full: {', '.join(failed)}" if failed else
                                 "the sweep did not complete",
                                 hint=f"partial results saved in {saved}; see the errors above" if saved else None)
        return
    _render(redact(result, [settings.api_key]), json_out)
    failed = sum(c["failed"] for c in result["summary"]["cases"])
    if failed or not result["complete"]:
        saved = (result.get("files") or {}).get("json")
        raise PartialFailure(f"{failed} request(s) failed" if failed else "the run did not complete",
                             hint=f"partial results saved in {saved}; see the errors above" if saved else None)


def _render_plan(target: str, plan: dict, json_out: bool) -> None:
    """A bench's dry run: the commands it would run on the device, in order (a sweep's values and skips too)."""
    sweep = plan.get("sweep")
    commands = sweep["plan"] if sweep else plan["commands"]
    if json_out:
        emit_json({"target": target, "dry_run": True, "commands": commands,
                   **({"sweep": {k: sweep[k] for k in ("setting", "original", "rows")}} if sweep else {})})
    for row in (sweep or {}).get("rows") or []:
        if row["skipped"]:
            say((f"{row['value']}: {row['skipped']}", "dim"))
    changes = [c for c in commands if not c.startswith("check: ")]
    say(f"dry run: bench on {target} would run {len(changes)} command(s) that change the device; nothing was changed")
    for command in commands:
        say(("  $", "dim"), f" {command}")


def _run(settings: BenchSettings, transport, telemetry: bool = True) -> dict:
    status = Status(plain("starting"), console=err)
    status.start()
    try:
        return run_bench(settings, transport, on_progress=lambda text: status.update(plain(text)),
                         telemetry=telemetry)
    finally:
        status.stop()


def _sweep(settings: BenchSettings, spec: SweepSpec, t, telemetry: bool) -> dict:
    partial: dict = {}
    status = Status(plain("starting"), console=err)
    status.start()
    try:
        return run_sweep(settings, spec, t, on_progress=lambda text: status.update(plain(text)), telemetry=telemetry,
                         result=partial)
    except KeyboardInterrupt:
        status.stop()
        _said_restore(partial.get("sweep") or {})
        if (partial.get("files") or {}).get("json"):
            note(f"partial results saved in {partial['files']['json']}")
        raise
    finally:
        status.stop()


def _said_restore(sweep: dict) -> None:
    original = sweep.get("original") or {}
    what = (f"power mode {original.get('name')} (id {original.get('id')})" if sweep.get("setting") == "power-mode"
            else ", ".join(f"{k}={v if v is not None else '(unset)'}" for k, v in original.items()) or "settings")
    if sweep.get("restored"):
        say((f"restored the original {what}", "dim"))
    elif sweep.get("restored") is False:
        warning(f"could not restore the original {what}: {sweep.get('restore_error')}")


def _render_sweep(result: dict, json_out: bool) -> None:
    sweep, w = result["sweep"], result["workload"]
    if json_out:
        emit_json({k: result.get(k) for k in ("url", "target", "model", "workload", "sweep", "files", "errors",
                                               "notes", "complete")})
    table = DataTable(title=f"bench sweep over {sweep['setting']}: {(result.get('model') or {}).get('name') or '?'} at "
                            f"{result['url']} (workload v{w['version']}{', quick' if w['quick'] else ''}; medians)",
                      title_justify="left")
    spec = sweep["setting"] == "spec"
    for col in (sweep["setting"], "prompt t/s", "gen t/s", *(("TTFT s", "accepted") if spec else ()),
                "power W mean/peak", "J/token", "max C", "% of ceiling", "notes"):
        table.add_column(col, justify="left" if col in (sweep["setting"], "notes") else "right")
    for r in sweep["rows"]:
        settle = r.get("settle") or {}
        notes = plain(r["error"], "red") if r["error"] else plain(r["skipped"], "dim") if r["skipped"] else \
            plain("; ".join(x for x in (r.get("how"), settle.get("why") or (
                f"clocks steady after {settle['waited_s']:g}s" if settle.get("stable") else None)) if x), "dim")
        power = "-" if r["power_mean_w"] is None else f"{r['power_mean_w']:.1f}/{r['power_peak_w']:.1f}"
        table.add_row(r["value"] + (f" (id {r['mode_id']})" if r["mode_id"] is not None else ""), _f(r["pp_tps"]),
                      _f(r["tg_tps"]), *((_f(r.get("ttft_s"), 3), _accepted(r)) if spec else ()), power,
                      _f(r["j_per_token"], 3), _f(r["temp_max_c"], 1), _f(r["ceiling_share_pct"], 0, "%"), notes)
    err.print(table)
    froms = {r["bandwidth_from"] for r in sweep["rows"] if r.get("bandwidth_from")}
    if froms and not any(r.get("decode_ceiling_tps") for r in sweep["rows"]):
        say(f"decode ceiling: {'; '.join(sorted(froms))}")
    if all(r["power_mean_w"] is None for r in sweep["rows"] if not r["skipped"]):
        say(("power: no input-rail reading (VDD_IN) in the telemetry, so no J/token", "dim"))
    _said_restore(sweep)
    _said_notes_and_files(result)


def _said_notes_and_files(result: dict) -> None:
    for message in result.get("notes") or []:
        note(message)
    for message in result.get("errors") or []:
        warning(message)
    files = result.get("files") or {}
    if files:
        say(f"saved {files.get('json')}" + (f" and {files['png']}" if files.get("png") else ""))


def _f(value, digits: int = 1, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.{digits}f}{unit}"


def _accepted(row: dict) -> str:
    """The draft tokens the model kept, as a share and a count ("-" when nothing was drafted)."""
    return "-" if row.get("acceptance") is None else \
        f"{row['acceptance']:.0%} ({row['draft_accepted']}/{row['draft_tokens']})"


def _ms(stat) -> str:
    return "-" if not stat else f"{stat['median']:,.1f} ±{stat['spread_pct'] / 2:.0f}%"


def _render(result: dict, json_out: bool) -> None:
    summary = result["summary"]
    if json_out:
        emit_json({k: result.get(k) for k in ("url", "target", "model", "server", "ceiling", "files", "errors",
                                               "notes", "complete")} | {"summary": summary})
    w = result["workload"]
    table = DataTable(title=f"bench: {result['model'].get('name')} at {result['url']} (workload v{w['version']}"
                        f"{', quick' if w['quick'] else ''}; median ±half-spread over {w['repetitions']} runs)",
                  title_justify="left")
    drafted = any(c.get("draft_tokens") for c in summary["cases"])      # speculative decoding: the share accepted
    for col in ("case", "prompt t/s", "gen t/s", "gen t/s wall", "TTFT s", "all slots t/s",
                *(("draft accepted",) if drafted else ())):
        table.add_column(col, justify="left" if col == "case" else "right")
    phases = DataTable(title="telemetry per phase", title_justify="left")
    for col in ("case", "CPU %", "GPU % mean/peak", "RAM peak MiB", "server RSS MiB", "power W", "J/token",
                "max C"):
        phases.add_column(col, justify="left" if col == "case" else "right")
    for c in summary["cases"]:
        if c["skipped"]:
            table.add_row(c["name"], plain(f"skipped: {c['skipped']}", "dim"))
            continue
        t = c.get("telemetry") or {}
        ttft = c["ttft_s"]
        table.add_row(c["name"], _ms(c["pp_tps"]), _ms(c["tg_tps"]), _ms(c["tg_wall_tps"]),
                      "-" if not ttft else f"{ttft['median']:.3f}", _ms(c["aggregate_tg_tps"]),
                      *((_accepted(c),) if drafted else ()))
        if c["failed"]:
            table.add_row("", plain(f"{c['failed']} failed: {'; '.join(c['errors'])}", "red"))
        if t:
            phases.add_row(c["name"], _f(t.get("cpu_load_mean_pct"), 0),
                           "-" if t.get("gpu_load_mean_pct") is None else
                           f"{t['gpu_load_mean_pct']:.0f}/{t['gpu_load_peak_pct']:.0f}",
                           _f(t.get("ram_peak_mb"), 0), _f(t.get("server_rss_peak_mb"), 0),
                           _f(t.get("power_mean_w"), 1), _f(t.get("j_per_token"), 3), _f(t.get("temp_max_c"), 1))
    err.print(table)
    if phases.row_count:
        err.print(phases)
    if summary["llama_bench_agreement"]:
        rows = summary["llama_bench_agreement"]
        lb = DataTable(title=summary.get("llama_bench_caption") or "served vs llama-bench", title_justify="left")
        for col in ("test", "llama-bench t/s", "served t/s", "difference", "served measurement"):
            lb.add_column(col)
        for row in rows:
            noise = row.get("noise_pct")
            diff = _f(row["diff_pct"], 1, "%") + ("" if noise is None else
                                                  f" ({'within noise ' if row.get('within_noise') else 'noise '}"
                                                  f"±{noise:.1f}%)")
            lb.add_row(row["test"], f"{_f(row['llama_bench_tps'])} ±{_f((row['llama_bench_spread_pct'] or 0) / 2, 0)}%",
                       f"{_f(row['served_tps'])} ±{_f((row['served_spread_pct'] or 0) / 2, 0)}%", diff, row["served"])
        err.print(lb)
        t = summary.get("llama_bench_telemetry") or {}
        if t.get("cpu_load_mean_pct") is not None:
            say((f"during the side-by-side rounds: CPU {t['cpu_load_mean_pct']:.0f}% (all processes on the "
                 f"device), GPU {_f(t.get('gpu_load_mean_pct'), 0)}%", "dim"))
    ceiling = result.get("ceiling") or {}
    if ceiling.get("decode_tps"):
        say(f"decode ceiling: {ceiling['bandwidth_gbs']:g} GB/s / {ceiling['model_bytes'] / 1e6:,.0f} MB = "
            f"{ceiling['decode_tps']:,.0f} tok/s ({ceiling['bandwidth_from']}); best measured "
            f"{_f(summary['decode_best_c1_tps'])} tok/s = {_f(summary['decode_share_of_ceiling_pct'])}%")
    else:
        say(f"decode ceiling: {ceiling.get('bandwidth_from') or 'unknown'}")
    tel = result.get("telemetry")
    if tel:
        why = f" ({'; '.join(tel['why'])})" if tel.get("why") else ""
        say(f"telemetry: {len(tel['samples'])} samples from {tel['source']}{why}")
    _said_notes_and_files(result)


@app.command("bench-compare")
def bench_compare(
    a_path: Path = typer.Argument(..., metavar="A.json", help="A result file of `edgekit bench` (the baseline)."),
    b_path: Path = typer.Argument(..., metavar="B.json", help="Another result file, compared with A."),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON on stdout."),
) -> None:
    """Two `edgekit bench` result files side by side: each metric of B against A."""
    _compare(str(a_path), str(b_path), json_out)


def _compare(a_path: str, b_path: str, json_out: bool) -> None:
    a, b = report.load(Path(a_path)), report.load(Path(b_path))
    rows = report.compare(a, b, (f"A ({os.path.basename(a_path)})", f"B ({os.path.basename(b_path)})"))
    if json_out:
        emit_json({"a": report.describe(a), "b": report.describe(b), "rows": rows})
        return
    da, db = report.describe(a), report.describe(b)
    table = DataTable(title="bench-compare", title_justify="left")
    table.add_column("")
    table.add_column(f"A: {os.path.basename(a_path)}", justify="right")
    table.add_column(f"B: {os.path.basename(b_path)}", justify="right")
    table.add_column("B vs A", justify="right")
    for key in ("model", "target", "power_mode", "build", "started") + (("sweep",) if da["sweep"] else ()):
        table.add_row(key, str(da[key] or "-"), str(db[key] or "-"), "")
    for row in rows:
        change = row["change_pct"]
        lower_is_better = any(w in row["metric"] for w in ("TTFT", "power", "J/token", "temp"))
        style = "" if change is None else ("green" if (change > 0) != lower_is_better else "red")
        table.add_row(row["metric"], _f(row["a"], 2), _f(row["b"], 2),
                      "-" if change is None else plain(f"{change:+.1f}%", style))
    err.print(table)
