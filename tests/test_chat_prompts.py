"""Prompt formats equal what the seed's scripts produce, byte for byte.

The fixtures below are the seed's lines, copied verbatim (only `./main ...` / `curl ...` replaced by printf so bash
prints the argument instead of running it) and evaluated by real bash:
- SEED_ALPACA2_CHAT_SH: ymcui/Chinese-LLaMA-Alpaca-2 scripts/llama-cpp/chat.sh
- SEED_ALPACA2_CURL_SH: ymcui/Chinese-LLaMA-Alpaca-2 scripts/llama-cpp/server_curl_example.sh
- SEED_LLAMA3_CHAT_SH:  ymcui/Chinese-LLaMA-Alpaca-3 scripts/llama_cpp/chat.sh (llama.cpp's main turns the
  escapes in -p/--in-prefix/--in-suffix into characters: `process_escapes`, reimplemented below for `\\n`)
- seed_gradio_llama2: ymcui/Chinese-LLaMA-Alpaca-2 scripts/inference/gradio_demo.py (generate_prompt + predict)
"""

from __future__ import annotations

import json
import subprocess

import pytest

from edgekit.chat import prompts
from edgekit.chat.prompts import Turn, format_prompt
from edgekit.errors import UsageError

SYSTEM = "You are a helpful assistant. 你是一个乐于助人的助手。"
QUESTIONS = ["介绍一下北京", "请列举5条文明乘车的建议", "say \"hi\" to $HOME (100%) 'quoted'"]

SEED_ALPACA2_CHAT_SH = r"""
SYSTEM_PROMPT='You are a helpful assistant. 你是一个乐于助人的助手。'
MODEL_PATH=$1
FIRST_INSTRUCTION=$2

printf '%s' \
"[INST] <<SYS>>
$SYSTEM_PROMPT
<</SYS>>

$FIRST_INSTRUCTION [/INST]"
"""

SEED_ALPACA2_CURL_SH = r"""
SYSTEM_PROMPT='You are a helpful assistant. 你是一个乐于助人的助手。'
INSTRUCTION=$1
ALL_PROMPT="[INST] <<SYS>>\n$SYSTEM_PROMPT\n<</SYS>>\n\n$INSTRUCTION [/INST]"
CURL_DATA="{\"prompt\": \"$ALL_PROMPT\",\"n_predict\": 128}"

printf '%s' "$CURL_DATA"
"""

SEED_LLAMA3_CHAT_SH = r"""
FIRST_INSTRUCTION=$2
SYSTEM_PROMPT="You are a helpful assistant. 你是一个乐于助人的助手。"

printf '%s\0' \
'<|start_header_id|>user<|end_header_id|>\n\n' \
'<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n' \
"<|start_header_id|>system<|end_header_id|>\n\n$SYSTEM_PROMPT<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n$FIRST_INSTRUCTION<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
"""


def bash(script: str, *args: str) -> str:
    return subprocess.run(["bash", "-c", script, "seed", *args], capture_output=True, text=True, check=True).stdout


def process_escapes(text: str) -> str:
    """llama.cpp common.cpp process_escapes, for the escapes the seed uses."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def seed_gradio_llama2(history: list[list[str]], system_prompt: str) -> str:
    """gradio_demo.py's prompt building, copied (args.system_prompt -> system_prompt)."""
    TEMPLATE_WITH_SYSTEM_PROMPT = (
        "[INST] <<SYS>>\n"
        "{system_prompt}\n"
        "<</SYS>>\n\n"
        "{instruction} [/INST]"
    )
    TEMPLATE_WITHOUT_SYSTEM_PROMPT = "[INST] {instruction} [/INST]"

    def generate_prompt(instruction, response="", with_system_prompt=True):
        if with_system_prompt is True:
            prompt = TEMPLATE_WITH_SYSTEM_PROMPT.format_map({'instruction': instruction, 'system_prompt': system_prompt})
        else:
            prompt = TEMPLATE_WITHOUT_SYSTEM_PROMPT.format_map({'instruction': instruction})
        if len(response) > 0:
            prompt += " " + response
        return prompt

    if len(history) == 1:
        input = history[0][0]
        prompt = generate_prompt(input, response="", with_system_prompt=True)
    else:
        input = history[0][0]
        response = history[0][1]
        prompt = generate_prompt(input, response=response, with_system_prompt=True) + '</s>'
        for hist in history[1:-1]:
            input = hist[0]
            response = hist[1]
            prompt = prompt + '<s>' + generate_prompt(input, response=response, with_system_prompt=False) + '</s>'
        input = history[-1][0]
        prompt = prompt + '<s>' + generate_prompt(input, response="", with_system_prompt=False)
    return prompt


@pytest.mark.parametrize("question", QUESTIONS)
def test_llama2_first_turn_equals_alpaca2_chat_sh(question):
    expected = bash(SEED_ALPACA2_CHAT_SH, "model.gguf", question)
    assert expected.startswith("[INST] <<SYS>>\nYou are a helpful assistant.")  # the fixture really ran
    assert format_prompt("llama2", SYSTEM, [Turn(question)]) == expected


@pytest.mark.parametrize("question", QUESTIONS[:2])
def test_llama2_first_turn_equals_server_curl_example(question):
    data = json.loads(bash(SEED_ALPACA2_CURL_SH, question))
    assert data["n_predict"] == 128
    assert format_prompt("llama2", SYSTEM, [Turn(question)]) == data["prompt"]


@pytest.mark.parametrize("question", QUESTIONS)
def test_llama3_first_turn_equals_alpaca3_chat_sh(question):
    in_prefix, in_suffix, prompt, _ = bash(SEED_LLAMA3_CHAT_SH, "model.gguf", question).split("\0")
    assert format_prompt("llama3", SYSTEM, [Turn(question)]) == process_escapes(prompt)
    # later turns: main appends --in-prefix + input + --in-suffix after the answer and its <|eot_id|>
    turns = [Turn(question, "北京是中国的首都。"), Turn("还有呢？")]
    expected = (process_escapes(prompt) + "北京是中国的首都。" + "<|eot_id|>"
                + process_escapes(in_prefix) + "还有呢？" + process_escapes(in_suffix))
    assert format_prompt("llama3", SYSTEM, turns) == expected


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_llama2_multi_turn_equals_gradio_demo(n):
    history = [[f"问题{i} 介绍一下北京", f"回答{i}：北京是中国的首都。"] for i in range(n)]
    history[-1][1] = None
    turns = [Turn(q, a) for q, a in history]
    assert format_prompt("llama2", SYSTEM, turns) == seed_gradio_llama2(history, SYSTEM)


def test_llama2_without_system_prompt_matches_seed_template():
    assert format_prompt("llama2", None, [Turn("你好")]) == "[INST] 你好 [/INST]"
    assert format_prompt("llama2", "", [Turn("a", "b"), Turn("c")]) == "[INST] a [/INST] b</s><s>[INST] c [/INST]"


def test_gemma_format_puts_system_in_first_user_turn():
    got = format_prompt("gemma", SYSTEM, [Turn("介绍一下北京", "北京是首都。"), Turn("还有呢？")])
    assert got == ("<start_of_turn>user\n" + SYSTEM + "\n\n介绍一下北京<end_of_turn>\n"
                   "<start_of_turn>model\n北京是首都。<end_of_turn>\n"
                   "<start_of_turn>user\n还有呢？<end_of_turn>\n<start_of_turn>model\n")


def test_no_text_bos_by_default_and_on_request():
    for family in prompts.FAMILIES:
        text = format_prompt(family, SYSTEM, [Turn("hi")])
        assert not text.startswith(prompts.BOS[family])
        assert format_prompt(family, SYSTEM, [Turn("hi")], bos=True) == prompts.BOS[family] + text
    assert format_prompt("llama3", SYSTEM, [Turn("hi")], bos=True).startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + SYSTEM + "<|eot_id|>")


def test_stop_strings_per_family_merge_catalog_extras_without_duplicates():
    assert prompts.stop_strings("llama2") == ["</s>", "[INST]"]
    assert prompts.stop_strings("llama3", ["<|eot_id|>", "<|end_of_text|>"]) == [
        "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]
    assert "assistant" not in prompts.stop_strings("llama3")
    assert prompts.stop_strings("gemma") == ["<end_of_turn>", "<start_of_turn>"]
    assert prompts.strip_stop("答案<|eot_id|><|start_header_id|>user", prompts.STOP["llama3"]) == "答案"


def test_bad_input_is_a_usage_error_or_value_error():
    with pytest.raises(UsageError) as e:
        format_prompt("mistral", SYSTEM, [Turn("hi")])
    assert "--family" in e.value.hint
    with pytest.raises(ValueError):
        format_prompt("llama2", SYSTEM, [])
    with pytest.raises(ValueError):
        format_prompt("llama2", SYSTEM, [Turn("a"), Turn("b")])


def test_catalog_chat_templates_are_llama_cpps_templates_for_the_seed_formats():
    """The service runs llama.cpp's built-in template named by the catalog; it must build the seed's format
    (test_chat_e2e checks LLAMA_CPP_TEMPLATE against the real server)."""
    from edgekit.models import catalog

    wrong = [f"{e.name}: {e.chat_template!r}, want {prompts.LLAMA_CPP_TEMPLATE[e.family]!r}"
             for e in catalog.entries(include_test=True)
             if e.chat and e.family in prompts.LLAMA_CPP_TEMPLATE
             and e.chat_template != prompts.LLAMA_CPP_TEMPLATE[e.family]]
    assert not wrong, "; ".join(wrong)
