"""`edgekit models`: list the catalog, show an entry, check the fit on a device or board, pull to a device."""

from __future__ import annotations

import sys
from typing import Optional

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console

from edgekit.cli.app import app
from edgekit.cli.common import Json, Login, logs_in
from edgekit.cli.options import AllowUnpinned, Ctx, DeviceOption, DryRun, FetchOn, Force, Target
from edgekit.console import DataTable, StepPrinter, emit_json, err, say
from edgekit import state as controller_state
from edgekit.errors import UsageError
from edgekit.facts.device import read_facts
from edgekit.models import catalog, fit
from edgekit.models.drafts import check_catalog_pair
from edgekit.models.router import DefaultModel
from edgekit.models.steps import ModelRequest, model_steps
from edgekit.remote.lock import device_lock
from edgekit.remote.plan import Context, run_steps

models_app = typer.Typer(help="The model catalog: list, show, fit, pull; use (router mode).", no_args_is_help=True,
                         pretty_exceptions_show_locals=False, rich_markup_mode=None)
app.add_typer(models_app, name="models")


def _size(q) -> str:
    if q.size:
        return f"{q.size / 1e9:.2f} GB"
    return f"~{q.size_approx / 1e9:.2f} GB" if q.size_approx else "?"


@models_app.command("list")
def list_models(all_: bool = typer.Option(False, "--all", help="Include the test models."), json_out: bool = Json):
    """List the models edgekit knows.

    On a terminal: a table. Piped or redirected: one line per model and quant, tab-separated: name, quant,
    default or -, size, family, chat or base, recommended context.
    """
    entries = catalog.entries(include_test=all_)
    if json_out:
        emit_json([e.to_json() for e in entries])
    elif sys.stdout.isatty():
        _print_table(entries, Console(highlight=False))
    else:
        sys.stdout.write("".join("\t".join(row) + "\n" for row in model_rows(entries)))


def model_rows(entries) -> list[tuple[str, ...]]:
    """One row per model and quant, every field whole and without spaces (for grep, cut, awk)."""
    return [(e.name, q.name, "default" if q.name == e.default_quant else "-", _size(q).replace(" ", ""), e.family,
             "chat" if e.chat else "base", str(e.recommended_ctx)) for e in entries for q in e.quants.values()]


def _print_table(entries, console) -> None:
    """The widest table that fits the terminal whole (names and sizes are never cut), else the plain rows."""
    for with_note in (True, False):
        table = models_table(entries, with_note)
        if console.measure(table, options=console.options.update_width(10_000)).minimum <= console.width:
            console.print(table)
            return
    console.print("\n".join("  ".join(row) for row in model_rows(entries)), markup=False, soft_wrap=True)


def models_table(entries, with_note: bool = True) -> DataTable:
    """The catalog as a table: every column but the note stays on one line, so nothing is cut or folded."""
    table = DataTable(title="models (* default quant)", title_justify="left", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False)
    rows = [(e.name, e.family, "yes" if e.chat else "base",
             "\n".join(f"{q.name}{'*' if q.name == e.default_quant else ''} {_size(q)}" for q in e.quants.values()),
             str(e.recommended_ctx), e.note) for e in entries]
    for i, col in enumerate(("name", "family", "chat", "quants (size)", "ctx")):
        # min_width = the widest cell: the table's measured minimum is then the width it needs to show every cell whole
        widest = max(cell_len(line) for text in [col] + [r[i] for r in rows] for line in text.splitlines())
        table.add_column(col, no_wrap=True, min_width=widest)
    if with_note:
        table.add_column("note", min_width=20, ratio=1)   # the one column that wraps
    for row in rows:
        table.add_row(*(row if with_note else row[:-1]))
    return table


@models_app.command("show")
def show(name: str = typer.Argument(..., help="Model name, e.g. chinese-alpaca-2-1.3b"), json_out: bool = Json):
    """Show one catalog entry: files, hashes and pins, chat template, system prompt, sampling."""
    e = catalog.get(catalog.split_ref(name)[0])
    if json_out:
        emit_json(e.to_json())
        return
    table = DataTable(title=f"model: {e.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("repo", e.repo)
    table.add_row("family / chat", f"{e.family} / {'chat (template ' + e.chat_template + ')' if e.chat else 'base model, not for chat'}")
    table.add_row("system prompt", e.system_prompt or "-")
    table.add_row("context", f"native {e.native_ctx}, recommended {e.recommended_ctx}")
    table.add_row("stop", " ".join(e.stop))
    table.add_row("sampling", ", ".join(f"{k} {v}" for k, v in e.sampling.items()))
    for q in e.quants.values():
        pin = "pinned" if q.pinned else f"NOT PINNED ({catalog.ALLOW_UNPINNED_FLAG}): {q.unpinned_reason}"
        table.add_row(f"{q.name}{' (default)' if q.name == e.default_quant else ''}",
                      f"{q.file} {_size(q)} sha256 {q.sha256 or '-'} @ {q.revision}; {pin}")
    if e.drafts:
        table.add_row("drafts", ", ".join(e.drafts) + " (same vocabulary: `edgekit provision --draft NAME`)")
    table.add_row("note", e.note)
    err.print(table)


@models_app.command("fit")
@logs_in
def fit_cmd(
    name: Optional[str] = typer.Argument(None, help="NAME[:QUANT] (not needed with --markdown)"),
    target: DeviceOption = None,
    board: Optional[str] = typer.Option(None, "--board", help=f"No device: a known board ({', '.join(fit.BOARDS)})."),
    ctx: Ctx = None,
    cache_type: str = typer.Option("f16", "--cache-type", help="KV cache type: f16, q8_0, q4_0."),
    cache_ram: Optional[int] = typer.Option(None, "--cache-ram", min=0, help="Prompt cache in MiB to count "
                                            "(default: the bound provision sets, half the headroom)."),
    draft: Optional[str] = typer.Option(None, "--draft", help="A speculative draft NAME[:QUANT] served with it: "
                                        "its weights, KV cache and compute counted (the pair checked first)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table of every model and quant."),
    pairs: bool = typer.Option(False, "--pairs", help="Router mode: a markdown table of which catalog pairs stay "
                                                      "loaded together (the --models-max provision would choose)."),
    json_out: bool = Json,
    login: Login = Login(),
) -> None:
    """Estimate whether a model fits a device's memory (weights + KV cache + compute + OS reserve)."""
    if (target is None) == (board is None):
        raise UsageError("give exactly one of --target HOST or --board BOARD",
                         hint=f"boards: {', '.join(fit.BOARDS)}")
    if board:
        label, total = fit.board_total(board)
    else:
        with login.open(target) as t:
            facts = read_facts(t)
        total = int((facts.memory or {}).get("total_bytes") or 0)
        label = target
        if not total:
            raise UsageError(f"cannot read the memory size of {target}", hint=f"run `edgekit facts {target}`")
    if markdown or pairs:
        typer.echo((pairs_markdown if pairs else fit_markdown)(label, total, cache_type), nl=False)
        return
    if not name:
        raise UsageError("which model?", hint="e.g. `edgekit models fit chinese-alpaca-2-1.3b --board orin-nano-4gb`")
    entry, quant = catalog.lookup(name, None, total)
    paired = None
    if draft:
        paired = catalog.lookup(draft, None, total)
        check_catalog_pair(entry, None, paired[0])
    n_ctx = ctx or fit.default_ctx(entry, quant, total, cache_type, paired)
    report = fit.check_entry(entry, quant, n_ctx, total, label, cache_type, cache_ram, paired)
    if json_out:
        emit_json(report.to_json())
    elif report.fits:
        say(("fits", "green"), ": " + report.summary())
    fit.require_fit(report, force_flag=False)   # exit 5 with the numbers and suggestions when it does not fit


def pairs_markdown(label: str, total: int, kv_type: str = "f16") -> str:
    """A markdown table: for every pair of catalog models (the quant and context provision picks for this board),
    how many stay loaded together: 2 means `--models-max 2`, both at once; 1, they take turns."""
    need = {}
    for e in catalog.entries():
        entry, quant = catalog.lookup(e.name, None, total)
        n_ctx = fit.default_ctx(entry, quant, total, kv_type)
        need[f"{entry.name}:{quant.name}"] = fit.check_entry(entry, quant, n_ctx, total, label, kv_type).need_bytes
    usable = fit.usable_bytes(total)
    lines = [f"### {label}: models that stay loaded together ({fit.gib(usable)} usable, KV {kv_type})", "",
             "| model A | model B | needs A + B | --models-max |", "|---|---|---|---|"]
    names = list(need)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = fit.loadable_together([need[a], need[b]], usable)
            lines.append(f"| {a} | {b} | {fit.gib(need[a])} + {fit.gib(need[b])} | "
                         f"{ {2: '2 (both loaded)', 1: '1 (they take turns)'}.get(n, '0 (refused)') } |")
    return "\n".join(lines) + "\n\n"


def fit_markdown(label: str, total: int, kv_type: str = "f16") -> str:
    """A markdown table: every catalog model and quant at its recommended context on one board."""
    lines = [f"### {label} ({total / 2**30:.2f} GiB RAM, {fit.gib(fit.os_reserve(total))} OS reserve, KV {kv_type})",
             "", "| model | quant | weights | ctx | KV cache | compute+runtime | needs | fits | largest ctx that fits |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in catalog.entries():
        shape = fit.Shape.from_dict(e.shape)
        for q in e.quants.values():
            r = fit.check_entry(e, q, e.recommended_ctx, total, label, kv_type)
            best = fit.max_ctx(q.best_size, shape, q.name, total, kv_type)
            lines.append(f"| {e.name} | {q.name} | {'~' if r.weights_estimated else ''}{fit.gib(r.weights_bytes)} "
                         f"| {r.ctx} | {fit.gib(r.kv_bytes)} | {fit.gib(r.compute_bytes + r.runtime_bytes)} "
                         f"| {fit.gib(r.need_bytes)} | {'yes' if r.fits else 'no'} | {best or 'none'} |")
    return "\n".join(lines) + "\n\n"


@models_app.command("pull")
@logs_in
def pull(
    name: str = typer.Argument(..., help="NAME[:QUANT]"),
    target: DeviceOption = ...,
    ctx: Ctx = None,
    fetch_on: FetchOn = "auto",
    hf_endpoint: Optional[str] = typer.Option(None, "--hf-endpoint", help="Hub mirror (default: $HF_ENDPOINT or huggingface.co)."),
    source_url: Optional[str] = typer.Option(None, "--url", help="Fetch from this https:// URL or local file instead."),
    sha256: Optional[str] = typer.Option(None, "--sha256", help="Expected sha256 (overrides the catalog)."),
    force: Force = False,
    allow_unpinned: AllowUnpinned = False,
    dry_run: DryRun = False,
    json_out: bool = Json,
    login: Login = Login(),
) -> None:
    """Download a model to a device (verified by sha256, resumable), after checking it fits."""
    request = ModelRequest(name, n_ctx=ctx, fetch_on=fetch_on, hf_endpoint=hf_endpoint, source_url=source_url,
                           force=bool(force), sha256=sha256, allow_unpinned=bool(allow_unpinned))
    steps = model_steps(request)
    with login.open(target) as t:
        context = Context(t, dry_run=dry_run, reporter=StepPrinter())
        with device_lock(t, "models pull", enabled=not dry_run):
            results = run_steps(context, steps)
    if json_out:
        m = context.run.model
        model = {"name": m.name, "path": m.path, "ctx": m.n_ctx, "sha256": m.sha256, "size": m.size} if m else {}
        emit_json({"results": [r.to_json() for r in results], "model": model,
                   "transfer": context.run.model_transfer})


@models_app.command("use")
@logs_in
def use(
    target: Target,
    name: str = typer.Argument(..., help="One of the models TARGET serves (router mode)."),
    dry_run: DryRun = False,
    login: Login = Login(),
) -> None:
    """Make one of the served models the default: loaded at start, and what ask/chat/bench use without --model."""
    with login.open(target) as t:
        context = Context(t, dry_run=dry_run, reporter=StepPrinter())
        with device_lock(t, "models use", enabled=not dry_run):
            run_steps(context, [DefaultModel(name)])
        if not dry_run:
            controller_state.set_model(t.name, name)
    if not dry_run:
        say(f"{name} is the default model of {target}: `edgekit ask {target} ...` asks it; others with --model")
