"""`edgekit ask/chat/modelfile` as a user runs them (subprocess): exit codes, stderr hints, clean stdout.

The server-side cases use the loopback HTTP server from test_chat_client (exact llama-server bodies);
the real llama-server is in test_chat_e2e.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_cli_inprocess as run_cli
from test_chat_client import BAD_KEY, Server, chat_events, split_inside_characters

from edgekit import state
from edgekit.chat.modelfile import TEMPLATES, parse_modelfile


@pytest.fixture
def server():
    s = Server()
    s.json_route("/health", 200, {"status": "ok"})
    yield s
    s.server.shutdown()
    s.server.server_close()


def provisioned(target: str, url: str, key: str | None = "sekrit", model: str = "gemma3-270m") -> None:
    key_file = state.save_api_key(target, key) if key else None
    state.save(target, {"url": url, "model": model, "api_key_file": str(key_file) if key_file else None})


def test_ask_without_provision_names_provision():
    r = run_cli("ask", "jetson1", "介绍一下北京")
    assert r.returncode == 2 and r.stdout == ""
    assert "edgekit provision jetson1" in r.stderr.replace("\n", "")


def test_ask_server_down_names_status(server):
    url = server.url
    server.server.shutdown()
    server.server.server_close()
    provisioned("jetson1", url)
    r = run_cli("ask", "jetson1", "介绍一下北京")
    assert r.returncode == 3 and r.stdout == ""
    flat = r.stderr.replace("\n", "")
    assert "cannot reach llama-server" in flat and "edgekit status jetson1" in flat


def test_ask_prints_only_the_answer_and_timings_with_v(server):
    answer = "北京是中国的首都。"
    server.routes["/v1/chat/completions"] = (200, "text/event-stream",
                                             split_inside_characters(b"".join(chat_events(answer))), True)
    provisioned("jetson1", server.url)
    r = run_cli("ask", "jetson1", "介绍一下北京", "-v", "--temp", "0.3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == answer + "\n"
    assert "answer 9 tokens" in r.stderr and "tok/s" in r.stderr
    body = server.requests[-1]["json"]
    assert server.requests[-1]["headers"]["authorization"] == "Bearer sekrit"   # the stored key
    assert body["temperature"] == 0.3 and body["top_k"] == 40                   # override + catalog default
    assert body["messages"][0] == {"role": "system", "content": "You are a helpful assistant. 你是一个乐于助人的助手。"}


def test_ask_json_prints_the_raw_response(server):
    raw = {"choices": [{"message": {"role": "assistant", "content": "你好"}, "finish_reason": "stop"}],
           "timings": {"predicted_n": 1}}
    server.json_route("/v1/chat/completions", 200, raw)
    r = run_cli("ask", "--url", server.url, "--json", "hi")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == raw


def test_ask_wrong_key_says_where_the_key_is(server):
    server.json_route("/v1/chat/completions", 401, BAD_KEY)
    provisioned("jetson1", server.url, key="old-key")
    r = run_cli("ask", "jetson1", "hi")
    assert r.returncode == 3
    flat = r.stderr.replace("\n", "")     # rich wraps long lines
    assert "Invalid API Key" in flat and "jetson1.api-key" in flat


def test_raw_needs_a_family_with_a_bare_url(server):
    r = run_cli("ask", "--url", server.url, "--raw", "hi")
    assert r.returncode == 2 and "--family" in r.stderr


def test_modelfile_command_prints_a_parseable_modelfile():
    r = run_cli("modelfile", "llama-3-chinese-8b-instruct-v3")
    assert r.returncode == 0, r.stderr
    parsed = {i.command: i.args for i in parse_modelfile(r.stdout)}
    assert parsed["from"] == "/opt/edgekit/models/llama-3-chinese-8b-instruct-v3/ggml-model-q4_k.gguf"
    assert parsed["template"] == TEMPLATES["llama3"]
    r = run_cli("modelfile", "no-such-model")
    assert r.returncode == 2 and "edgekit models list" in r.stderr
