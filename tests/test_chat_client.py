"""The llama-server client over real loopback HTTP connections.

A raw-socket server on 127.0.0.1 sends exact byte streams (chunked transfer encoding, SSE), so the tests control
where TCP writes split: a Chinese character split across chunks must come out whole. Error bodies are the shapes
llama-server sends (format_error_response in tools/server/utils.hpp); tests/test_chat_e2e.py checks the real
server produces them.
"""

from __future__ import annotations

import http
import json
import socket
import socketserver
import threading
import time

import pytest

from edgekit.chat.client import (AuthFailed, ContextOverflow, LlamaClient, ServerError, ServerLoading,
                                 ServerUnreachable, iter_sse)
from edgekit.chat.endpoint import Endpoint
from edgekit.chat.profile import Sampling

ANSWER = "北京是中国的首都。Beijing 🐼"
LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
BAD_KEY = {"error": {"code": 401, "message": "Invalid API Key", "type": "authentication_error"}}
TOO_LONG = {"error": {"code": 400, "message": "the request exceeds the available context size, try increasing it",
                      "type": "exceed_context_size_error", "n_prompt_tokens": 900, "n_ctx": 512}}


def chat_events(text: str) -> list[bytes]:
    events = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]}]
    for ch in [text[i:i + 2] for i in range(0, len(text), 2)]:
        events.append({"choices": [{"index": 0, "delta": {"content": ch}, "finish_reason": None}]})
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "timings": {"prompt_n": 12, "prompt_ms": 30.0, "prompt_per_second": 400.0,
                               "predicted_n": 9, "predicted_ms": 90.0, "predicted_per_second": 100.0}})
    out = [b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events]
    return out + [b"data: [DONE]\n\n"]


def split_inside_characters(stream: bytes) -> list[bytes]:
    """Cut the byte stream right after the first byte of every multi-byte character (so each one is split)."""
    pieces, start = [], 0
    for i, b in enumerate(stream):
        if b >= 0xC0:       # a UTF-8 lead byte: cut after it
            pieces.append(stream[start:i + 1])
            start = i + 1
    pieces.append(stream[start:])
    return [p for p in pieces if p]


class Server:
    """Loopback HTTP server: `routes[path]` = (status, headers, [body chunks], chunked?) or a callable."""

    def __init__(self):
        self.routes: dict = {}
        self.requests: list[dict] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += sock.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
                while len(body) < int(headers.get("content-length", 0)):
                    body += sock.recv(65536)
                outer.requests.append({"method": method, "path": path, "headers": headers,
                                       "json": json.loads(body) if body else None})
                route = outer.routes[path]
                status, ctype, chunks, chunked = route() if callable(route) else route
                reason = http.HTTPStatus(status).phrase
                hdr = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                if chunked:
                    sock.sendall((hdr + "Transfer-Encoding: chunked\r\n\r\n").encode())
                    for c in chunks:
                        sock.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
                        time.sleep(0.01)        # separate TCP reads on the client side
                    sock.sendall(b"0\r\n\r\n")
                else:
                    body = b"".join(chunks)
                    sock.sendall((hdr + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def json_route(self, path, status, obj):
        self.routes[path] = (status, "application/json; charset=utf-8", [json.dumps(obj).encode()], False)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.server.shutdown()
    s.server.server_close()


def client_for(server, key="sekrit", key_file="/root/.config/edgekit/keys/dev.key", target="dev"):
    return LlamaClient(Endpoint(url=server.url, api_key=key, api_key_file=key_file, target=target), timeout=10)


def test_stream_keeps_chinese_characters_split_across_chunks_whole(server):
    stream = b"".join(chat_events(ANSWER))
    chunks = split_inside_characters(stream)
    assert len(chunks) == sum(1 for ch in ANSWER if ord(ch) > 127) + 1   # every character split
    server.routes["/v1/chat/completions"] = (200, "text/event-stream", chunks, True)
    client = client_for(server)
    s = client.chat([{"role": "user", "content": "介绍一下北京"}], Sampling(temperature=0.5, top_k=40), stream=True)
    pieces = list(s)
    assert "".join(pieces) == ANSWER and "\ufffd" not in "".join(pieces)
    assert len(pieces) == len(chat_events(ANSWER)) - 3          # one per content event, as they arrived
    assert s.result.text == ANSWER and s.result.finish_reason == "stop"
    assert s.result.timings["predicted_n"] == 9
    req = server.requests[-1]
    assert req["headers"]["authorization"] == "Bearer sekrit"
    assert req["json"]["stream"] is True and req["json"]["temperature"] == 0.5 and req["json"]["top_k"] == 40
    assert req["json"]["messages"] == [{"role": "user", "content": "介绍一下北京"}]


def test_iter_sse_byte_by_byte_and_crlf():
    raw = "data: {\"content\": \"北京\"}\r\n\r\n: comment\n\nerror: {\"x\": 1}\n\ndata: [DONE]\n\n".encode()
    assert list(iter_sse(raw[i:i + 1] for i in range(len(raw)))) == [
        ("data", '{"content": "北京"}'), ("error", '{"x": 1}'), ("data", "[DONE]")]


def test_raw_completion_stream_and_nonstream(server):
    events = [{"content": c, "stop": False} for c in "北京欢迎你"]
    events.append({"content": "", "stop": True, "stop_type": "word", "timings": {"predicted_n": 5}})
    stream = b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\n\n" for e in events)
    server.routes["/completion"] = (200, "text/event-stream", split_inside_characters(stream), True)
    client = client_for(server)
    s = client.complete("[INST] hi [/INST]", Sampling(max_tokens=16), stop=["</s>", "[INST]"], stream=True)
    assert "".join(s) == "北京欢迎你" and s.result.finish_reason == "word"
    body = server.requests[-1]["json"]
    assert body["prompt"] == "[INST] hi [/INST]" and body["stop"] == ["</s>", "[INST]"]
    assert body["n_predict"] == 16 and "max_tokens" not in body
    server.json_route("/completion", 200, {"content": "你好", "stop": True, "stop_type": "eos", "timings": {}})
    done = client.complete("x", stream=False)
    assert done.text == "你好" and done.finish_reason == "eos" and done.response["content"] == "你好"


def test_wrong_key_names_where_the_key_is_stored(server):
    server.json_route("/v1/chat/completions", 401, BAD_KEY)
    with pytest.raises(AuthFailed) as e:
        client_for(server).chat([{"role": "user", "content": "hi"}])
    assert "Invalid API Key" in e.value.message
    assert "/root/.config/edgekit/keys/dev.key" in e.value.hint and "--api-key" in e.value.hint
    assert e.value.exit_code == 3


def test_loading_is_waited_for_then_ready(server):
    answers = iter([LOADING, LOADING, {"status": "ok"}])

    def health():
        body = next(answers)
        return (503 if "error" in body else 200), "application/json", [json.dumps(body).encode()], False

    server.routes["/health"] = health
    seen = []
    assert client_for(server).wait_ready(5, on_wait=lambda t, m: seen.append(m), interval=0.01) == {"status": "ok"}
    assert seen == ["llama-server at %s is not ready: Loading model" % server.url] * 2


def test_still_loading_after_timeout_says_so(server):
    server.json_route("/health", 503, LOADING)
    with pytest.raises(ServerLoading) as e:
        client_for(server).wait_ready(0.05, interval=0.01)
    assert "Loading model" in e.value.message and "still loading" in e.value.message


def test_context_overflow_shows_server_text(server):
    server.json_route("/v1/chat/completions", 400, TOO_LONG)
    with pytest.raises(ContextOverflow) as e:
        client_for(server).chat([{"role": "user", "content": "长" * 1000}], stream=True)
    assert e.value.server_message == TOO_LONG["error"]["message"]
    assert "/reset" in e.value.hint and "context" in e.value.hint


def test_error_event_inside_a_stream(server):
    err = {"code": 500, "message": "slot unavailable", "type": "server_error"}
    stream = chat_events("北京")[:2] + [b"error: " + json.dumps(err).encode() + b"\n\n"]
    server.routes["/v1/chat/completions"] = (200, "text/event-stream", stream, True)
    s = client_for(server).chat([{"role": "user", "content": "hi"}], stream=True)
    got = []
    with pytest.raises(ServerError) as e:
        for piece in s:
            got.append(piece)
    assert got == ["北京"] and "slot unavailable" in e.value.message


def test_server_down_hint_names_edgekit_status():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                   # nothing listens there now
    client = LlamaClient(Endpoint(url=f"http://127.0.0.1:{port}", target="jetson1"), timeout=5)
    with pytest.raises(ServerUnreachable) as e:
        client.health()
    assert "refused" in e.value.message.lower()
    assert "edgekit status jetson1" in e.value.hint and e.value.exit_code == 3
