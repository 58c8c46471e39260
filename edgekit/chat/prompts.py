"""Prompt formats per model family, exactly as the seed's scripts build them (used by `--raw` and Modelfiles).

Sources (ymcui/Chinese-LLaMA-Alpaca-2 and -3), copied as test fixtures in tests/test_chat_prompts.py:
- llama2, first turn: `scripts/llama-cpp/chat.sh` and `scripts/llama-cpp/server_curl_example.sh`
  `[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{instruction} [/INST]`
- llama2, later turns: `scripts/inference/gradio_demo.py` (`generate_prompt` + `predict`):
  `... [/INST] {answer}</s><s>[INST] {instruction} [/INST]`, and `[INST] {instruction} [/INST]` without a system prompt
- llama3: `scripts/llama_cpp/chat.sh` (-p, --in-prefix, --in-suffix; llama.cpp turns `\\n` into newlines)

No text BOS: llama.cpp (and Ollama) add the BOS token when they tokenize a prompt (`add_bos_token` in the
GGUF); writing `<s>`/`<|begin_of_text|>`/`<bos>` in front as well would give the model two. `bos=True` adds it
for servers that do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from edgekit.errors import UsageError

FAMILIES = ("llama2", "llama3", "gemma")

BOS = {"llama2": "<s>", "llama3": "<|begin_of_text|>", "gemma": "<bos>"}

# Text that ends an answer in raw /completion mode. The EOS/EOT token stops generation by itself; these catch a
# model that starts writing the next turn. (The seed's Llama-3 Modelfile also stops on the bare word `assistant`;
# that cuts answers such as "I am an AI assistant", so it is left out.)
STOP = {
    "llama2": ("</s>", "[INST]"),
    "llama3": ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"),
    "gemma": ("<end_of_turn>", "<start_of_turn>"),
}

# llama.cpp's built-in chat template (llama-server --no-jinja --chat-template NAME) that builds each family's
# prompt as above; checked against llama-server's /apply-template in tests/test_chat_e2e.py. (The plain `llama2`
# template drops the <<SYS>> block; `llama2-sys-bos` differs from gradio_demo.py only by the space before an
# earlier answer.)
LLAMA_CPP_TEMPLATE = {"llama2": "llama2-sys-bos", "llama3": "llama3", "gemma": "gemma"}


@dataclass(frozen=True)
class Turn:
    """One exchange: what the user said and what the model answered (None while waiting for the answer)."""

    user: str
    assistant: str | None = None


def check_family(family: str | None) -> str:
    if family not in FAMILIES:
        raise UsageError(f"unknown prompt family {family!r}",
                         hint=f"use one of: {', '.join(FAMILIES)} (--family), or a model from `edgekit models list`")
    return family


def format_prompt(family: str, system: str | None, turns: Sequence[Turn], *, bos: bool = False) -> str:
    """The whole conversation as one prompt string, ending where the model's next answer starts."""
    check_family(family)
    turns = list(turns)
    if not turns:
        raise ValueError("a prompt needs at least one user turn")
    if any(t.assistant is None for t in turns[:-1]):
        raise ValueError("only the last turn may be waiting for an answer")
    text = {"llama2": _llama2, "llama3": _llama3, "gemma": _gemma}[family](system or "", turns)
    return (BOS[family] + text) if bos else text


def _llama2(system: str, turns: list[Turn]) -> str:
    out = []
    for i, turn in enumerate(turns):
        if i == 0 and system:
            out.append(f"[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{turn.user} [/INST]")
        else:
            out.append(("<s>" if i else "") + f"[INST] {turn.user} [/INST]")
        if turn.assistant is not None:
            out.append(f" {turn.assistant}</s>")
    return "".join(out)


def _llama3(system: str, turns: list[Turn]) -> str:
    out = [f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"] if system else []
    for turn in turns:
        out.append(f"<|start_header_id|>user<|end_header_id|>\n\n{turn.user}<|eot_id|>"
                   f"<|start_header_id|>assistant<|end_header_id|>\n\n")
        if turn.assistant is not None:
            out.append(f"{turn.assistant}<|eot_id|>")
    return "".join(out)


def _gemma(system: str, turns: list[Turn]) -> str:
    # Gemma has no system role: the system prompt opens the first user turn (Gemma 3's chat template,
    # llama.cpp's built-in `gemma` template and Ollama's gemma3 template all do this).
    out = []
    for i, turn in enumerate(turns):
        user = f"{system}\n\n{turn.user}" if i == 0 and system else turn.user
        out.append(f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")
        if turn.assistant is not None:
            out.append(f"{turn.assistant}<end_of_turn>\n")
    return "".join(out)


def stop_strings(family: str, extra: Iterable[str] = ()) -> list[str]:
    """The family's stop strings plus any extra ones (e.g. the catalog's), without duplicates, in order."""
    check_family(family)
    seen: list[str] = []
    for s in (*STOP[family], *extra):
        if s and s not in seen:
            seen.append(s)
    return seen


def strip_stop(text: str, stops: Iterable[str]) -> str:
    """Cut an answer at the first stop string (servers usually do this already; harmless when they did)."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
