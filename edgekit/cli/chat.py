"""`edgekit chat`, `edgekit ask` and `edgekit modelfile`: talk to the served model."""

from __future__ import annotations

import dataclasses

import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from edgekit.chat import endpoint as endpoints
from edgekit.chat.client import Completion, LlamaClient, ServerLoading
from edgekit.chat.modelfile import render_modelfile
from edgekit.chat.profile import ChatProfile, profile_for
from edgekit.chat.session import COMMANDS, Conversation, parse_command, read_message, unescape
from edgekit.cli.app import app
from edgekit.layout import MODELS_DIR
from edgekit.console import emit_json, err, error, say
from edgekit.errors import EdgekitError, UsageError

Url = typer.Option(None, "--url", help="Talk to this llama-server (http://HOST:PORT) instead of TARGET's.")
ApiKey = typer.Option(None, "--api-key", envvar="EDGEKIT_API_KEY", show_envvar=True,
                      help="API key (default: the one stored by `edgekit provision TARGET`).")
Model = typer.Option(None, "--model", "-m", help="The model to ask, and its defaults (default: TARGET's default "
                                                  "model; with several models served, any of them).")
Family = typer.Option(None, "--family", help="Prompt family: llama2, llama3 or gemma (default: the model's).")
System = typer.Option(None, "--system", "-s", help="System prompt (default: the model's catalog prompt).")
Temp = typer.Option(None, "--temp", help="Temperature (default: the model's, e.g. 0.5 Alpaca-2, 0.2 Llama-3).")
TopK = typer.Option(None, "--top-k", help="Top-k sampling (default: the model's).")
TopP = typer.Option(None, "--top-p", help="Top-p sampling (default: the model's).")
RepeatPenalty = typer.Option(None, "--repeat-penalty", help="Repeat penalty (default: the model's).")
MaxTokens = typer.Option(None, "--max-tokens", "-n", help="Stop after this many tokens.")
Seed = typer.Option(None, "--seed", help="Sampling seed (for repeatable answers).")
Raw = typer.Option(False, "--raw", help="Use /completion with edgekit's own prompt format and stop strings.")
Wait = typer.Option(60.0, "--wait", help="Seconds to wait for a model that is still loading.")


def _split_args(args: List[str], url: Optional[str], what: str) -> tuple[Optional[str], list[str]]:
    if url and len(args) < 2 and what == "QUESTION":
        return None, args
    if not args:
        raise UsageError("no target given", hint="name a provisioned target, or pass --url http://HOST:PORT")
    return args[0], args[1:]


def _connect(target: Optional[str], url: Optional[str], api_key: Optional[str], model: Optional[str],
             family: Optional[str], wait: float) -> tuple[LlamaClient, ChatProfile]:
    ep = endpoints.endpoint_for(target, url, api_key)
    if model:                                  # router mode: the model the requests go to (and its defaults)
        ep = dataclasses.replace(ep, model=model)
    profile = profile_for(ep.model, family)
    client = LlamaClient(ep)
    shown = {"done": False}

    def loading(waited: float, message: str) -> None:
        if not shown["done"]:
            say((f"{ep.label}: {message}; waiting up to {wait:.0f}s ...", "dim"))
            shown["done"] = True

    try:
        client.wait_ready(wait, on_wait=loading)
    except ServerLoading as e:
        raise ServerLoading(e.message, hint="the model is still loading: try again in a moment, or wait longer "
                                            "with --wait SECONDS") from None
    return client, profile


def _sampling(profile: ChatProfile, temp, top_k, top_p, repeat_penalty, max_tokens, seed):
    return profile.sampling.merged(temperature=temp, top_k=top_k, top_p=top_p, repeat_penalty=repeat_penalty,
                                   max_tokens=max_tokens, seed=seed)


def _send(client: LlamaClient, profile: ChatProfile, conv: Conversation, message: str, sampling, raw: bool,
          stream: bool):
    if raw:
        if not profile.family:
            raise UsageError("--raw needs the model's prompt family", hint="pass --family llama2|llama3|gemma "
                                                                            "or --model NAME")
        return client.complete(conv.prompt(profile.family, message), sampling, profile.stop_strings, stream=stream)
    return client.chat(conv.messages(message), sampling, stop=list(profile.stop) or None, stream=stream)


def _timings(result: Completion) -> str:
    t = result.timings or {}
    parts = []
    if "prompt_n" in t:
        parts.append(f"prompt {t['prompt_n']} tokens in {t.get('prompt_ms', 0) / 1000:.2f}s "
                     f"({t.get('prompt_per_second', 0):.1f} tok/s)")
    if "predicted_n" in t:
        parts.append(f"answer {t['predicted_n']} tokens in {t.get('predicted_ms', 0) / 1000:.2f}s "
                     f"({t.get('predicted_per_second', 0):.1f} tok/s)")
    parts.append(f"finish: {result.finish_reason or '?'}")
    return ", ".join(parts)


@app.command(no_args_is_help=True)
def ask(
    args: List[str] = typer.Argument(..., metavar="[TARGET] QUESTION",
                                     help="A provisioned target and the question (`-` reads it from stdin); "
                                          "with --url, TARGET may be left out."),
    url: Optional[str] = Url, api_key: Optional[str] = ApiKey, model: Optional[str] = Model,
    family: Optional[str] = Family, system: Optional[str] = System,
    temp: Optional[float] = Temp, top_k: Optional[int] = TopK, top_p: Optional[float] = TopP,
    repeat_penalty: Optional[float] = RepeatPenalty, max_tokens: Optional[int] = MaxTokens,
    seed: Optional[int] = Seed, raw: bool = Raw, wait: float = Wait,
    json_out: bool = typer.Option(False, "--json", help="Print the server's raw JSON response instead."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print timings on stderr."),
) -> None:
    """Ask the served model one question; prints only the answer on stdout (pipes cleanly)."""
    target, rest = _split_args(args, url, "QUESTION")
    if len(rest) != 1:
        raise UsageError("give exactly one QUESTION (quote it)", hint='edgekit ask TARGET "请列举5条文明乘车的建议"')
    question = sys.stdin.read().strip() if rest[0] == "-" else rest[0]
    if not question:
        raise UsageError("the question is empty", hint='edgekit ask TARGET "介绍一下北京"')
    client, profile = _connect(target, url, api_key, model, family, wait)
    conv = Conversation(system=profile.system_prompt if system is None else system)
    sampling = _sampling(profile, temp, top_k, top_p, repeat_penalty, max_tokens, seed)
    if json_out:
        emit_json(_send(client, profile, conv, question, sampling, raw, stream=False).response)
        return
    stream = _send(client, profile, conv, question, sampling, raw, stream=True)
    try:
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:
        stream.close()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if verbose:
        say((_timings(stream.result), "dim"))


CHAT_HELP = """Chat with the served model (streaming). Multi-line input: end a line with \\ to continue it, or
paste between two lines of \"\"\". Commands: /system [TEXT], /reset, /save FILE (.md or .json), /history, /help,
/quit (or Ctrl-D). Ctrl-C stops an answer. Start a message with // to send a leading /."""


@app.command(help=CHAT_HELP)
def chat(
    target: Optional[str] = typer.Argument(None, help="A provisioned target (may be left out with --url)."),
    url: Optional[str] = Url, api_key: Optional[str] = ApiKey, model: Optional[str] = Model,
    family: Optional[str] = Family, system: Optional[str] = System,
    temp: Optional[float] = Temp, top_k: Optional[int] = TopK, top_p: Optional[float] = TopP,
    repeat_penalty: Optional[float] = RepeatPenalty, max_tokens: Optional[int] = MaxTokens,
    seed: Optional[int] = Seed, raw: bool = Raw, wait: float = Wait,
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a conversation saved with /save x.json."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print timings after each answer."),
) -> None:
    if not target and not url:
        raise UsageError("no target given", hint="edgekit chat TARGET, or edgekit chat --url http://HOST:PORT")
    client, profile = _connect(target, url, api_key, model, family, wait)
    conv = Conversation.load(resume) if resume else Conversation()
    if not resume or system is not None:
        conv.system = profile.system_prompt if system is None else system
    sampling = _sampling(profile, temp, top_k, top_p, repeat_penalty, max_tokens, seed)
    out = Console(highlight=False, soft_wrap=True, emoji=False)
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    say((f"chat with {client.endpoint.label} ({profile.model or 'model'}"
         f"{', ' + profile.family if profile.family else ''}{', raw /completion' if raw else ''}); "
         f"/help for commands, /quit to leave", "dim"))
    while True:
        try:
            message = read_message(lambda p: input(p), prompt="you> ", more="...> ")
        except EOFError:
            out.print()
            return
        except KeyboardInterrupt:
            out.print()
            continue
        if not message.strip():
            continue
        try:
            command = parse_command(message)
        except UsageError as e:
            say((e.message, "red"), *([("  " + e.hint, "dim")] if e.hint else []))
            continue
        if command is not None:
            if command.name == "/quit":
                return
            _run_command(command, conv, out)
            continue
        message = unescape(message)
        _turn(client, profile, conv, message, sampling, raw, out, verbose)


def _run_command(command, conv: Conversation, out: Console) -> None:
    if command.name == "/help":
        for line in COMMANDS.values():
            say(line)
    elif command.name == "/system":
        if command.arg:
            conv.system = command.arg
            err.print("[dim]system prompt set[/]")
        else:
            say(f"system: {conv.system or '(none)'}")
    elif command.name == "/reset":
        conv.reset()
        err.print("[dim]conversation cleared[/]")
    elif command.name == "/history":
        out.print(conv.to_markdown(), markup=False)
    elif command.name == "/save":
        try:
            say((f"saved to {conv.save(command.arg)}", "dim"))
        except (EdgekitError, OSError) as e:
            say((f"cannot save: {getattr(e, 'message', e)}", "red"))


def _turn(client, profile, conv: Conversation, message: str, sampling, raw: bool, out: Console,
          verbose: bool) -> None:
    """One exchange. On any error the conversation is left as it was, and the server's error is shown."""
    stream = None
    try:
        stream = _send(client, profile, conv, message, sampling, raw, stream=True)
        out.print("[bold cyan]assistant>[/] ", end="")
        for piece in stream:
            out.print(piece, end="", markup=False)
        out.print()
    except KeyboardInterrupt:
        out.print()
        err.print("[yellow]answer stopped; this exchange is not kept[/]")
        return
    except EdgekitError as e:
        out.print()
        error(e.message, e.hint)
        say((f"(the conversation so far is kept: {len(conv.turns)} exchanges)", "dim"))
        return
    finally:
        if stream is not None:
            stream.close()
    conv.add(message, stream.result.text)
    if verbose:
        say((_timings(stream.result), "dim"))


@app.command()
def modelfile(
    model: str = typer.Argument(..., help="Catalog model name."),
    path: Optional[str] = typer.Option(None, "--path", help="GGUF path for FROM (default: where edgekit puts it "
                                                             f"on the device, {MODELS_DIR}/MODEL/FILE)."),
    family: Optional[str] = Family, system: Optional[str] = System,
    num_ctx: Optional[int] = typer.Option(None, "--num-ctx", help="Add PARAMETER num_ctx."),
) -> None:
    """Print an Ollama Modelfile for a model's GGUF, with the template of its prompt family."""
    profile = profile_for(model, family)
    if system is not None:
        profile = replace(profile, system_prompt=system)
    if not path:
        if not profile.gguf_file:
            raise UsageError(f"the catalog does not name a GGUF file for {model!r}",
                             hint="pass --path /path/to/model.gguf (catalog names: `edgekit models list`)")
        path = f"{MODELS_DIR}/{model}/{profile.gguf_file}"
    sys.stdout.write(render_modelfile(profile, path, num_ctx))
