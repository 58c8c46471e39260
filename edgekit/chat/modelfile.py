"""Ollama Modelfiles for the same GGUF, with the right TEMPLATE per family.

The templates use Ollama's `.System`/`.Prompt`/`.Response` form (as the seed's Alpaca-3 Modelfile does): Ollama
renders it once per exchange and cuts the last one after `.Response`. Rendered, each gives exactly the prompt
`edgekit.chat.prompts.format_prompt` builds for that family (tested with `render()` below, which follows
Ollama's template/template.go for this subset of Go template syntax).

- llama3: the seed's template verbatim (ymcui/Chinese-LLaMA-Alpaca-3 scripts/ollama/Modelfile).
- llama2: `[INST] <<SYS>>` ... `[/INST]` as in Alpaca-2's chat.sh and gradio_demo.py (the seed's docs reuse the
  Llama-3 template for Alpaca-2, which the model was never trained on).
- gemma: `<start_of_turn>user` ... `<start_of_turn>model`, the system prompt opening the first user turn.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

from edgekit.chat import prompts
from edgekit.chat.profile import ChatProfile
from edgekit.chat.prompts import Turn
from edgekit.errors import UsageError

TEMPLATES = {
    "llama2": (
        "[INST] {{ if .System }}<<SYS>>\n{{ .System }}\n<</SYS>>\n\n{{ end }}{{ .Prompt }} [/INST]"
        "{{ if .Response }} {{ .Response }}</s><s>{{ end }}"
    ),
    "llama3": (
        "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
        "{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}"
        "<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"
    ),
    "gemma": (
        "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n"
        "<start_of_turn>model\n{{ .Response }}<end_of_turn>\n"
    ),
}

# Ollama PARAMETER names for edgekit's sampling fields.
_PARAMETERS = (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"),
               ("repeat_penalty", "repeat_penalty"), ("max_tokens", "num_predict"), ("seed", "seed"))


def _quote(text: str) -> str:
    if '"""' in text:
        raise UsageError('a Modelfile value cannot contain """', hint="change the system prompt")
    return f'"""{text}"""'


def render_modelfile(profile: ChatProfile, gguf_path: str, num_ctx: int | None = None) -> str:
    """The Modelfile text for a model with this profile, loading the GGUF at gguf_path."""
    family = prompts.check_family(profile.family)
    lines = [f"# Ollama Modelfile for {profile.model or family} ({family} prompt format), written by edgekit",
             f"FROM {gguf_path}",
             f"TEMPLATE {_quote(TEMPLATES[family])}"]
    if profile.system_prompt:
        lines.append(f"SYSTEM {_quote(profile.system_prompt)}")
    for field, name in _PARAMETERS:
        value = getattr(profile.sampling, field)
        if value is not None:
            lines.append(f"PARAMETER {name} {value}")
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {num_ctx}")
    for stop in profile.stop_strings:
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False) if ' ' in stop else stop}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Instruction:
    command: str
    args: str


_COMMANDS = {"from", "adapter", "template", "system", "parameter", "license", "message", "requires"}


def parse_modelfile(text: str) -> list[Instruction]:
    """Parse a Modelfile the way Ollama's parser does (commands, `#` comments, "..." and \"\"\"...\"\"\" values)."""
    out: list[Instruction] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] == "#":
            i = text.find("\n", i) if text.find("\n", i) != -1 else n
            continue
        m = re.compile(r"([A-Za-z]+)[ \t]+").match(text, i)
        if not m or m.group(1).lower() not in _COMMANDS:
            line = text[i:text.find("\n", i) if text.find("\n", i) != -1 else n]
            raise UsageError(f"Modelfile: unknown instruction in line {line!r}")
        command, i = m.group(1).lower(), m.end()
        prefix = ""
        if command in ("parameter", "message"):
            m2 = re.compile(r"(\S+)[ \t]+").match(text, i)
            if not m2:
                raise UsageError(f"Modelfile: {command.upper()} needs a name and a value")
            prefix, i = m2.group(1) + " ", m2.end()
        if text.startswith('"""', i):
            end = text.find('"""', i + 3)
            if end == -1:
                raise UsageError('Modelfile: unterminated """ string')
            value, i = text[i + 3:end], end + 3
        elif text.startswith('"', i):
            m3 = re.compile(r'"((?:[^"\\\n]|\\.)*)"').match(text, i)
            if not m3:
                raise UsageError('Modelfile: unterminated " string')
            value, i = json.loads(m3.group(0)), m3.end()
        else:
            end = text.find("\n", i)
            end = n if end == -1 else end
            value, i = text[i:end].strip(), end
        out.append(Instruction(command, prefix + value))
    return out


# --- rendering Ollama's legacy template form (the subset used above) ------------------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _parse_template(template: str) -> list:
    """A tree of ("text", s) | ("field", name) | ("if", name, then, else) nodes."""
    tokens: list = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        if tokens and tokens[-1][0] == "trim-next":
            tokens.pop()
            text = text.lstrip()
        tokens.append(("text", text))
        action = m.group(2)
        if (f := re.fullmatch(r"\.(\w+)", action)):
            tokens.append(("field", f.group(1)))
        elif (f := re.fullmatch(r"if \.(\w+)", action)):
            tokens.append(("if", f.group(1)))
        elif action in ("else", "end"):
            tokens.append((action,))
        else:
            raise ValueError(f"template action not supported by this renderer: {{{{ {action} }}}}")
        if m.group(3):
            tokens.append(("trim-next",))
        pos = m.end()
    rest = template[pos:]
    if tokens and tokens[-1][0] == "trim-next":
        tokens.pop()
        rest = rest.lstrip()
    tokens.append(("text", rest))

    stack: list[list] = [[]]
    frames: list[tuple[str, list]] = []
    for tok in tokens:
        kind = tok[0]
        if kind == "if":
            node = ["if", tok[1], [], []]
            stack[-1].append(node)
            frames.append(("then", node))
            stack.append(node[2])
        elif kind == "else":
            if not frames:
                raise ValueError("template: {{ else }} outside {{ if }}")
            _, node = frames.pop()
            stack.pop()
            frames.append(("else", node))
            stack.append(node[3])
        elif kind == "end":
            if not frames:
                raise ValueError("template: {{ end }} without {{ if }}")
            frames.pop()
            stack.pop()
        else:
            stack[-1].append(tok)
    if frames:
        raise ValueError("template: missing {{ end }}")
    return stack[0]


def _cut_after_response(nodes: list) -> list:
    """Ollama's deleteNode: drop every text/action after the first .Response (if-conditions stay)."""
    cut = False

    def walk(ns: list) -> list:
        nonlocal cut
        out = []
        for node in ns:
            if cut:
                if node[0] == "if":
                    out.append(["if", node[1], walk(node[2]), walk(node[3])])
                continue
            if node[0] == "field" and node[1] == "Response":
                cut = True
                out.append(node)
            elif node[0] == "if":
                out.append(["if", node[1], walk(node[2]), walk(node[3])])
            else:
                out.append(node)
        return out

    return walk(nodes)


def _execute(nodes: list, values: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(values.get(node[1], ""))
        elif node[0] == "if":
            out.append(_execute(node[2] if values.get(node[1]) else node[3], values))
    return "".join(out)


def render(template: str, system: str | None, turns: Sequence[Turn]) -> str:
    """What Ollama sends the model for this conversation with a `.System/.Prompt/.Response` template."""
    nodes = _parse_template(template)
    out = []
    values = {"System": system or "", "Prompt": "", "Response": ""}
    for turn in turns:
        if turn.assistant is None:
            break
        out.append(_execute(nodes, {**values, "Prompt": turn.user, "Response": turn.assistant}))
        values["System"] = ""
    last = turns[-1] if turns and turns[-1].assistant is None else None
    out.append(_execute(_cut_after_response(nodes), {**values, "Prompt": last.user if last else ""}))
    return "".join(out)
