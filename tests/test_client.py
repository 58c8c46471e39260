"""The one llama-server client (edgekit.chat.client) as bench and chat share it: URL check, errors and their exit
codes, the JSON endpoints bench reads, timed completions; and chat profiles read from the catalog.

The streaming and error-body cases against exact llama-server bytes are in test_chat_client.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_chat_client import LOADING, server  # noqa: F401  (the fixture: a local stand-in llama-server)

from edgekit import errors
from edgekit.bench.timing import timed_completion, timed_completions
from edgekit.chat import client as C
from edgekit.chat.client import Endpoint, LlamaClient, ServerError, check_url
from edgekit.chat.profile import Sampling, profile_for
from edgekit.models import catalog
from tests.conftest import run_cli_inprocess
from tests.test_hints import HINTS, OPTIONS, mentions

REPO = Path(__file__).resolve().parents[1]


def client_for(server, key: str | None = "sekrit") -> LlamaClient:
    return LlamaClient(Endpoint(url=server.url, api_key=key), timeout=10)


def test_check_url_one_rule_for_bench_and_chat():
    assert check_url("http://10.77.1.2:8080/") == "http://10.77.1.2:8080"
    assert check_url("10.77.1.2:8080") == "http://10.77.1.2:8080"          # a bare HOST:PORT is http
    assert check_url("https://h/prefix/") == "https://h/prefix"
    for bad in ("ftp://x", "http://", "http://h:port", "http://[::1"):
        with pytest.raises(errors.UsageError) as e:
            check_url(bad)
        assert "--url http://" in e.value.hint
    assert LlamaClient(Endpoint(url="h:81")).port == 81


def test_exit_codes_match_the_documented_table():
    assert C.ServerError("x").exit_code == C.ContextOverflow("x").exit_code == errors.REMOTE == 4
    for cls in (C.ServerUnreachable, C.ServerLoading, C.AuthFailed):
        assert issubclass(cls, errors.ConnectError) and cls("x").exit_code == errors.CONNECT == 3
    table = (REPO / "docs" / "troubleshooting.md").read_text()
    assert re.search(r"^\| 3 \| cannot connect or authenticate", table, re.M)
    assert re.search(r"^\| 4 \| a remote command failed", table, re.M)


def test_client_hints_name_only_options_of_every_command_that_prints_them():
    """test_hints checks chat/ hints against `ask` and `chat`; bench prints this module's hints too."""
    hints = [h for h in HINTS if h.module == "chat/client.py"]
    assert hints
    for hint in hints:
        for option, named in mentions(hint)[1]:
            for command in [named] if named else ["ask", "chat", "bench"]:
                assert option in OPTIONS[command], f"{hint}: {option} is not an option of `edgekit {command}`"


def test_bench_endpoints_tokenize_props_models(server):
    server.json_route("/tokenize", 200, {"tokens": [1, {"id": 2, "piece": "x"}, 3]})
    server.json_route("/props", 200, {"total_slots": 2, "build_info": "b1"})
    server.json_route("/v1/models", 200, {"data": [{"id": "g", "meta": {"size": 10, "n_params": 3}}]})
    c = client_for(server)
    assert c.tokenize("北京") == [1, 2, 3]
    assert server.requests[-1]["json"] == {"content": "北京", "add_special": False}
    assert c.props()["total_slots"] == 2
    assert c.model_info() == {"id": "g", "size": 10, "n_params": 3}
    server.json_route("/v1/models", 404, {"error": {"code": 404, "message": "File Not Found"}})
    assert c.model_info() == {}


def test_not_a_llama_server_is_a_server_error(server):
    server.routes["/props"] = (200, "text/html", [b"<html>hello</html>"], False)
    server.json_route("/tokenize", 200, {"something": "else"})
    with pytest.raises(ServerError) as e:
        client_for(server).props()
    assert e.value.exit_code == 4 and "llama-server" in e.value.hint
    with pytest.raises(ServerError):
        client_for(server).tokenize("x")


def test_timed_completion_sends_bench_settings_and_reads_timings(server):
    timings = {"prompt_n": 3, "predicted_n": 4, "prompt_per_second": 300.0, "predicted_per_second": 40.0,
               "prompt_ms": 10.0, "predicted_ms": 100.0, "cache_n": 0}
    events = [{"content": "a", "stop": False}, {"content": "", "stop": True, "timings": timings}]
    server.routes["/completion"] = (200, "text/event-stream",
                                    [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events], True)
    r = timed_completion(client_for(server), [1, 2, 3], 4, temperature=0.0, seed=7)
    assert r.ok and r.ttft_s is not None and r.wall_s >= r.ttft_s
    assert (r.prompt_n, r.predicted_n, r.predicted_per_second) == (3, 4, 40.0)
    body = server.requests[-1]["json"]
    assert body == {"prompt": [1, 2, 3], "stream": True, "cache_prompt": False, "temperature": 0.0, "seed": 7,
                    "n_predict": 4, "ignore_eos": True}
    assert len(timed_completions(client_for(server), [[1], [2], [3]], 4)) == 3


def test_timed_completion_keeps_failures_as_results(server):
    server.json_route("/completion", 503, LOADING)
    r = timed_completion(client_for(server), [1], 4)
    assert not r.ok and "Loading model" in r.error
    server.routes["/completion"] = (200, "text/event-stream", [b'data: {"content": "a"}\n\n'], True)
    r = timed_completion(client_for(server), [1], 4)
    assert not r.ok and r.error == "stream ended without a final event" and r.ttft_s is not None
    down = LlamaClient(Endpoint(url="http://127.0.0.1:9"), timeout=2)
    r = timed_completion(down, [1], 4)
    assert not r.ok and "connection refused" in r.error


def test_chat_waits_hint_names_wait_only_for_chat(server):
    """`edgekit ask` adds --wait to the loading hint (the client itself does not: bench has no --wait)."""
    server.json_route("/health", 503, LOADING)
    r = run_cli_inprocess("ask", "--url", server.url, "--wait", "0.2", "hi")
    assert r.returncode == 3 and "--wait" in r.stderr and "Loading model" in r.stderr


@pytest.mark.parametrize("entry", catalog.entries(include_test=True), ids=lambda e: e.name)
def test_chat_profile_comes_from_the_catalog_entry(entry):
    profile = profile_for(entry.name)
    for name, value in entry.sampling.items():
        assert getattr(profile.sampling, name) == value
    assert profile.system_prompt == entry.system_prompt
    assert profile.stop == (entry.stop or profile.stop)
    assert profile.gguf_file == entry.quant().file
    assert profile.chat_template == (entry.chat_template or None)


def test_profile_for_checks_an_explicit_family():
    with pytest.raises(errors.UsageError):
        profile_for("chinese-alpaca-2-1.3b", "nosuch")
    assert profile_for("chinese-alpaca-2-1.3b", "llama3").family == "llama3"
    assert profile_for("https://example.com/x.gguf", "gemma").sampling == Sampling(temperature=1.0, top_k=64,
                                                                                     top_p=0.95)


def test_a_model_the_router_does_not_serve_names_the_ones_it_does(server):
    """b11312's router answers 400 "model 'x' not found" (tools/server/server-models.cpp); the error names the
    models the service lists in its own GET /v1/models, and the hint the logs."""
    server.json_route("/v1/chat/completions", 400, {"error": {"code": 400, "message": "model 'x' not found",
                                                              "type": "invalid_request_error"}})
    server.json_route("/v1/models", 200, {"object": "list", "data": [
        {"id": "gemma3-270m", "object": "model", "status": {"value": "loaded"}},
        {"id": "smollm2-135m-instruct", "object": "model", "status": {"value": "unloaded"}}]})
    c = LlamaClient(Endpoint(url=server.url, api_key="sekrit", model="x"), timeout=10)
    with pytest.raises(C.ModelNotServed) as e:
        c.chat([{"role": "user", "content": "hi"}])
    assert e.value.message == ("llama-server answered 400: model 'x' not found; it serves gemma3-270m, "
                               "smollm2-135m-instruct")
    assert e.value.served == ["gemma3-270m", "smollm2-135m-instruct"] and e.value.exit_code == 4
    assert "edgekit logs TARGET" in e.value.hint and "ask for one of the models it serves" in e.value.hint
    server.json_route("/v1/models", 400, {"error": {"code": 400, "message": "model is not found"}})
    with pytest.raises(C.ModelNotServed) as e:
        c.chat([{"role": "user", "content": "hi"}])
    assert e.value.message == "llama-server answered 400: model 'x' not found" and e.value.served == []
