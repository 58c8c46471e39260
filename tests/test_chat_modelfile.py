"""Ollama Modelfiles: they parse, name the right template per family, and render to the seed's prompt formats."""

from __future__ import annotations

import pytest

from edgekit.chat import modelfile, prompts
from edgekit.chat.modelfile import TEMPLATES, parse_modelfile, render, render_modelfile
from edgekit.chat.profile import family_profile, profile_for
from edgekit.chat.prompts import Turn, format_prompt
from edgekit.errors import UsageError

SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"

# ymcui/Chinese-LLaMA-Alpaca-3 scripts/ollama/Modelfile, verbatim.
SEED_ALPACA3_MODELFILE = '''FROM /your-path-to-ggml/ggml-model-q8_0.gguf
TEMPLATE """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>

{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

{{ .Response }}<|eot_id|>"""
SYSTEM """You are a helpful assistant. 你是一个乐于助人的助手。"""
PARAMETER num_keep 24
PARAMETER stop <|start_header_id|>
PARAMETER stop <|end_header_id|>
PARAMETER stop <|eot_id|>
PARAMETER stop assistant
'''

CONVERSATIONS = [
    [Turn("介绍一下北京")],
    [Turn("介绍一下北京", "北京是中国的首都。"), Turn("请列举5条文明乘车的建议")],
    [Turn("a", "b"), Turn("c", "d"), Turn("e")],
]


def by_command(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ins in parse_modelfile(text):
        out.setdefault(ins.command, []).append(ins.args)
    return out


def test_seed_modelfile_parses_and_its_template_is_ours_for_llama3():
    parsed = by_command(SEED_ALPACA3_MODELFILE)
    assert parsed["from"] == ["/your-path-to-ggml/ggml-model-q8_0.gguf"]
    assert parsed["system"] == [SYSTEM]
    assert parsed["template"] == [TEMPLATES["llama3"]]
    assert parsed["parameter"][-1] == "stop assistant"


@pytest.mark.parametrize("model,family,marker", [
    ("chinese-alpaca-2-1.3b", "llama2", "[INST] {{ if .System }}<<SYS>>"),
    ("llama-3-chinese-8b-instruct-v3", "llama3", "<|start_header_id|>assistant<|end_header_id|>"),
    ("gemma3-270m", "gemma", "<start_of_turn>model"),
])
def test_modelfile_per_catalog_model_names_the_family_template(model, family, marker):
    profile = profile_for(model)
    text = render_modelfile(profile, f"/opt/edgekit/models/{model}/{profile.gguf_file}", num_ctx=4096)
    parsed = by_command(text)
    assert parsed["from"] == [f"/opt/edgekit/models/{model}/{profile.gguf_file}"]
    assert parsed["template"] == [TEMPLATES[family]]
    assert marker in parsed["template"][0]
    others = [t for f, t in TEMPLATES.items() if f != family]
    assert all(t not in text for t in others)
    assert parsed["system"] == [SYSTEM]
    params = [p.split(" ", 1) for p in parsed["parameter"]]
    stops = [v for k, v in params if k == "stop"]
    assert stops == profile.stop_strings
    assert ["temperature", str(profile.sampling.temperature)] in params
    assert ["num_ctx", "4096"] in params


def test_alpaca2_gets_llama2_template_not_the_llama3_one():
    text = render_modelfile(profile_for("chinese-alpaca-2-1.3b"), "/m.gguf")
    assert "<|start_header_id|>" not in text and "[INST]" in text
    assert "PARAMETER temperature 0.5" in text and "PARAMETER top_k 40" in text
    assert "PARAMETER top_p 0.9" in text and "PARAMETER repeat_penalty 1.1" in text


@pytest.mark.parametrize("family", prompts.FAMILIES)
@pytest.mark.parametrize("system", [SYSTEM, None])
@pytest.mark.parametrize("turns", CONVERSATIONS)
def test_rendered_template_equals_the_seed_prompt_format(family, system, turns):
    assert render(TEMPLATES[family], system, turns) == format_prompt(family, system, turns)


def test_render_follows_ollamas_cut_after_response_and_trim_markers():
    assert render("A{{ .Prompt }}B{{ .Response }}C", None, [Turn("p", "r"), Turn("q")]) == "ApBrCAqB"
    assert render("x  {{- .Prompt -}}  y{{ .Response }}", None, [Turn("p")]) == "xpy"
    with pytest.raises(ValueError):
        render("{{ range .Messages }}{{ end }}", None, [Turn("p")])


def test_parse_errors_and_quoting():
    with pytest.raises(UsageError):
        parse_modelfile('FROM x\nTEMPLATE """never closed')
    with pytest.raises(UsageError):
        parse_modelfile("BOGUS thing")
    assert by_command('# comment\nfrom ./m.gguf\nSYSTEM "a \\"quoted\\" 系统"\n')["system"] == ['a "quoted" 系统']
    with pytest.raises(UsageError):
        modelfile.render_modelfile(family_profile("llama2").__class__(family="llama2", system_prompt='x"""y'), "/m")
