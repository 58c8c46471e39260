"""A small llama-server client on the standard library: chat (/v1/chat/completions) and raw (/completion),
streaming (server-sent events) or not, with a bearer API key.

The byte stream is decoded with an incremental UTF-8 decoder, so a Chinese character whose bytes arrive in two
network reads comes out whole. Failures become typed errors with a hint: ServerUnreachable, ServerLoading,
AuthFailed, ContextOverflow, ServerError.
"""

from __future__ import annotations

import codecs
import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from edgekit import errors
from edgekit.chat.endpoint import Endpoint
from edgekit.chat.profile import Sampling


class ServerUnreachable(errors.ConnectError):
    """Nothing answers at the server's address."""


class ServerLoading(errors.ConnectError):
    """llama-server is up but still loading the model (HTTP 503)."""


class AuthFailed(errors.ConnectError):
    """llama-server refused the API key (HTTP 401)."""


class ServerError(errors.EdgekitError):
    """llama-server answered with an error; `server_message` is its text, unchanged."""

    exit_code = errors.REMOTE

    def __init__(self, message: str, hint: str | None = None, status: int | None = None,
                 server_message: str = "", body: Any = None):
        super().__init__(message, hint)
        self.status = status
        self.server_message = server_message
        self.body = body


class ContextOverflow(ServerError):
    """The conversation no longer fits the server's context window."""


@dataclass
class Completion:
    """A finished answer: its text, why it stopped, the server's timings, and every raw JSON event received."""

    text: str = ""
    finish_reason: str | None = None
    timings: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)
    raw: list = field(default_factory=list)

    @property
    def response(self) -> Any:
        """The raw server response: the JSON document, or the list of stream events."""
        return self.raw[0] if len(self.raw) == 1 else self.raw


def iter_sse(chunks: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """Server-sent events from raw byte chunks: yields (event field, data), e.g. ("data", '{"content": ..}').

    Bytes are decoded incrementally, so a multi-byte character split between chunks is never broken.
    llama-server writes `data: ...` lines, and `error: ...` when a streamed request fails.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    fields: dict[str, list[str]] = {}

    def lines(text: str) -> Iterator[str]:
        nonlocal buffer
        buffer += text
        while True:
            cut = min((i for i in (buffer.find("\n"), buffer.find("\r")) if i != -1), default=-1)
            if cut == -1:
                return
            line, rest = buffer[:cut], buffer[cut + 1:]
            if buffer[cut] == "\r" and rest.startswith("\n"):
                rest = rest[1:]
            elif buffer[cut] == "\r" and not rest:  # a lone \r at the end: wait to see if \n follows
                return
            buffer = rest
            yield line

    def feed(text: str) -> Iterator[tuple[str, str]]:
        for line in lines(text):
            if not line:
                for name, values in fields.items():
                    yield name, "\n".join(values)
                fields.clear()
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)

    for chunk in chunks:
        yield from feed(decoder.decode(chunk))
    yield from feed(decoder.decode(b"", final=True) + "\n\n")


def _server_message(body: bytes) -> tuple[str, Any]:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text, text
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or text), data
    return str(err), data


def _is_context_error(status: int | None, message: str, data: Any) -> bool:
    err = data.get("error") if isinstance(data, dict) else None
    kind = err.get("type", "") if isinstance(err, dict) else ""
    return kind == "exceed_context_size_error" or ("context" in message.lower() and status in (None, 400, 500))


class LlamaClient:
    """Talks to one llama-server. `endpoint` names the target/key file so errors can say where to look."""

    def __init__(self, endpoint: Endpoint, timeout: float = 300.0):
        self.endpoint = endpoint
        parts = urlsplit(endpoint.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.endpoint.api_key:
            h["Authorization"] = f"Bearer {self.endpoint.api_key}"
        return h

    def _unreachable(self, exc: BaseException) -> ServerUnreachable:
        where = self.endpoint.url
        if self.endpoint.target and self.endpoint.target != where:
            hint = f"run `edgekit status {self.endpoint.target}` to see whether llama-server is running"
        else:
            hint = f"check that llama-server is running and listening at {where} (`edgekit status TARGET`)"
        return ServerUnreachable(f"cannot reach llama-server at {where}: {exc}", hint=hint)

    def _http_error(self, status: int, body: bytes) -> errors.EdgekitError:
        message, data = _server_message(body)
        where = self.endpoint.url
        if status in (401, 403):
            if self.endpoint.api_key_file:
                hint = (f"edgekit reads the key from {self.endpoint.api_key_file} (stored by `edgekit provision`); "
                        f"re-run provision or pass --api-key")
            elif self.endpoint.api_key:
                hint = "the key given with --api-key is not the server's; the key edgekit stored is in the file " \
                       "named by `api_key_file` in $EDGEKIT_HOME/targets/TARGET.json"
            else:
                hint = "this server needs an API key: pass --api-key, or use the target name provisioned by edgekit"
            return AuthFailed(f"llama-server at {where} refused the API key ({status}: {message})", hint=hint)
        if status == 503:
            return ServerLoading(f"llama-server at {where} is not ready: {message}",
                                 hint="the model is still loading; wait a little and try again (--wait SECONDS)")
        if _is_context_error(status, message, data):
            return ContextOverflow(f"llama-server: {message}", status=status, server_message=message, body=data,
                                   hint="the conversation is longer than the server's context: shorten it "
                                        "(in chat: /save, then /reset), or serve with a larger context size")
        return ServerError(f"llama-server answered {status}: {message}", status=status, server_message=message,
                           body=data, hint="see the server's log: `edgekit logs TARGET` "
                                           "(journalctl -u edgekit-llama-server on the device)")

    def _request(self, method: str, path: str, payload: dict | None = None,
                 timeout: float | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout or self.timeout)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8") if payload is not None else None
        try:
            conn.request(method, self._base + path, body=body, headers=self._headers())
            resp = conn.getresponse()
        except (ConnectionError, socket.timeout, socket.gaierror, OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._unreachable(e) from None
        if resp.status >= 400:
            data = resp.read()
            conn.close()
            raise self._http_error(resp.status, data)
        return conn, resp

    def _json(self, method: str, path: str, payload: dict | None = None, timeout: float | None = None) -> Any:
        conn, resp = self._request(method, path, payload, timeout)
        try:
            data = resp.read()
        except (socket.timeout, OSError) as e:
            raise self._unreachable(e) from None
        finally:
            conn.close()
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise ServerError(f"llama-server sent a response that is not JSON: {data[:200]!r}",
                              hint="is this URL a llama-server?") from None

    # -- API --------------------------------------------------------------------------------------------------

    def health(self) -> dict:
        """GET /health: {"status": "ok"}; raises ServerLoading while the model loads."""
        return self._json("GET", "/health", timeout=min(self.timeout, 10.0))

    def wait_ready(self, timeout: float, on_wait: Callable[[float, str], None] | None = None,
                   interval: float = 0.5) -> dict:
        """Poll /health until the model is loaded; calls on_wait(seconds waited, server message) meanwhile."""
        start = time.monotonic()
        while True:
            try:
                return self.health()
            except ServerLoading as e:
                waited = time.monotonic() - start
                if waited >= timeout:
                    raise ServerLoading(f"{e.message} (still loading after {waited:.0f}s)", hint=e.hint) from None
                if on_wait:
                    on_wait(waited, e.message)
                time.sleep(interval)

    def props(self) -> dict:
        """GET /props: the server's settings (chat template, context size, model path)."""
        return self._json("GET", "/props")

    def apply_template(self, messages: list[dict]) -> str:
        """POST /apply-template: the prompt the server builds from these messages with its chat template."""
        return self._json("POST", "/apply-template", {"messages": messages})["prompt"]

    def chat(self, messages: list[dict], sampling: Sampling = Sampling(), stop: list[str] | None = None,
             stream: bool = False) -> "Completion | CompletionStream":
        """/v1/chat/completions with the server's chat template. Streamed: a CompletionStream of text pieces."""
        payload: dict[str, Any] = {"messages": messages, "stream": stream, **sampling.to_request()}
        payload.pop("n_predict", None)
        if stop:
            payload["stop"] = stop
        if stream:
            payload["stream_options"] = {"include_usage": True}
            return CompletionStream(self, "/v1/chat/completions", payload, _chat_piece)
        data = self._json("POST", "/v1/chat/completions", payload)
        choice = (data.get("choices") or [{}])[0]
        return Completion(text=(choice.get("message") or {}).get("content") or "",
                          finish_reason=choice.get("finish_reason"), timings=data.get("timings") or {},
                          usage=data.get("usage") or {}, raw=[data])

    def complete(self, prompt: str, sampling: Sampling = Sampling(), stop: list[str] | None = None,
                 stream: bool = False) -> "Completion | CompletionStream":
        """/completion with a prompt edgekit formatted itself (`--raw`)."""
        payload: dict[str, Any] = {"prompt": prompt, "stream": stream, "cache_prompt": True,
                                   **sampling.to_request()}
        payload.pop("max_tokens", None)
        if stop:
            payload["stop"] = stop
        if stream:
            return CompletionStream(self, "/completion", payload, _completion_piece)
        data = self._json("POST", "/completion", payload)
        return Completion(text=data.get("content") or "", finish_reason=_completion_reason(data),
                          timings=data.get("timings") or {}, raw=[data])


def _completion_reason(event: dict) -> str | None:
    if not event.get("stop"):
        return None
    return event.get("stop_type") or ("limit" if event.get("stopped_limit") else "stop")


def _chat_piece(event: dict, result: Completion) -> str:
    for choice in event.get("choices") or []:
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]
        piece = (choice.get("delta") or {}).get("content")
        if piece:
            return piece
    return ""


def _completion_piece(event: dict, result: Completion) -> str:
    reason = _completion_reason(event)
    if reason:
        result.finish_reason = reason
    return event.get("content") or ""


class CompletionStream:
    """Iterate for text pieces as the server sends them; `result` holds the whole answer when it is done."""

    def __init__(self, client: LlamaClient, path: str, payload: dict,
                 piece: Callable[[dict, Completion], str]):
        self.client = client
        self.result = Completion()
        self._piece = piece
        self._conn, self._resp = client._request("POST", path, payload)
        self.done = False

    def _chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = self._resp.read1(65536)
            except (socket.timeout, OSError, http.client.HTTPException) as e:
                raise ServerError(f"the stream from {self.client.endpoint.url} broke off: {e}",
                                  hint="the server may have crashed or restarted; see its log on the device") from None
            if not chunk:
                return
            yield chunk

    def __iter__(self) -> Iterator[str]:
        try:
            for name, data in iter_sse(self._chunks()):
                if name == "data" and data.strip() == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if name == "error" or (isinstance(event, dict) and "error" in event and name == "data"
                                       and not event.get("choices")):
                    raise self._stream_error(event)
                self.result.raw.append(event)
                if event.get("timings"):
                    self.result.timings = event["timings"]
                if event.get("usage"):
                    self.result.usage = event["usage"]
                piece = self._piece(event, self.result)
                if piece:
                    self.result.text += piece
                    yield piece
            self.done = True
        finally:
            self.close()

    def _stream_error(self, event: Any) -> errors.EdgekitError:
        err = event.get("error", event) if isinstance(event, dict) else event
        status = err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), int) else 500
        return self.client._http_error(status, json.dumps({"error": err}, ensure_ascii=False).encode())

    def close(self) -> None:
        self._conn.close()
