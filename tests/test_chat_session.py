"""Conversation state, slash commands, multi-line input, /save."""

from __future__ import annotations

import json

import pytest

from edgekit.chat.session import Command, Conversation, parse_command, read_message, unescape
from edgekit.errors import UsageError


def lines(*items):
    it = iter(items)
    prompts = []

    def readline(prompt):
        prompts.append(prompt)
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    readline.prompts = prompts
    return readline


def test_backslash_continues_a_line():
    rl = lines("第一行\\", "第二行\\", "第三行", "next")
    assert read_message(rl) == "第一行\n第二行\n第三行"
    assert rl.prompts == ["> ", ". ", ". "]
    assert read_message(rl) == "next"


def test_triple_quote_block_for_pastes_keeps_blank_lines():
    rl = lines('"""', "def f():", "", "    return '北京'\\", '"""')
    assert read_message(rl) == "def f():\n\n    return '北京'\\"


def test_eof_propagates():
    with pytest.raises(EOFError):
        read_message(lines())


def test_commands():
    assert parse_command("介绍一下北京") is None
    assert parse_command("/system 你是诗人") == Command("/system", "你是诗人")
    assert parse_command("/system") == Command("/system", "")
    assert parse_command(" /reset ") == Command("/reset")
    assert parse_command("/save chat.md") == Command("/save", "chat.md")
    assert parse_command("/exit") == Command("/quit")
    assert parse_command("//usr/bin is a path") is None
    assert unescape("//usr/bin is a path") == "/usr/bin is a path"
    with pytest.raises(UsageError) as e:
        parse_command("/sytem x")
    assert "/system" in e.value.hint
    with pytest.raises(UsageError):
        parse_command("/save")


def test_messages_and_reset_keep_system():
    conv = Conversation(system="sys")
    assert conv.messages("q1") == [{"role": "system", "content": "sys"}, {"role": "user", "content": "q1"}]
    conv.add("q1", "a1")
    assert [m["role"] for m in conv.messages("q2")] == ["system", "user", "assistant", "user"]
    assert conv.prompt("llama2", "q2") == "[INST] <<SYS>>\nsys\n<</SYS>>\n\nq1 [/INST] a1</s><s>[INST] q2 [/INST]"
    conv.reset()
    assert conv.messages() == [{"role": "system", "content": "sys"}]


def test_save_json_roundtrip_and_markdown(tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    conv = Conversation(system="You are a helpful assistant. 你是一个乐于助人的助手。")
    conv.add("介绍一下北京", "北京是中国的首都。")
    p = conv.save(tmp_path / "c.json")
    data = json.loads(p.read_text(encoding="utf-8"))
    assert data["messages"][1] == {"role": "user", "content": "介绍一下北京"}
    back = Conversation.load(p)
    assert back == conv
    md = conv.save(tmp_path / "c.md").read_text(encoding="utf-8")
    assert "**user:** 介绍一下北京" in md and "**assistant:** 北京是中国的首都。" in md
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.json", "c.md"]  # no temp files left


def test_save_to_missing_folder_and_load_garbage(tmp_path):
    with pytest.raises(UsageError):
        Conversation().save(tmp_path / "nope" / "c.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError):
        Conversation.load(bad)
