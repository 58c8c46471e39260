"""The one llama-server client (stdlib only) of `ask`, `chat`, `bench` and `sandbox demo`: URL check, bearer key,
/health wait, /props, /v1/models, /tokenize, /apply-template, chat (/v1/chat/completions) and raw (/completion)
completions, streamed (server-sent events, decoded incrementally: a character split across reads comes out whole)
or not. Errors: ServerUnreachable, ServerLoading, AuthFailed (exit 3), ServerError, ContextOverflow (exit 4).
Timing is the caller's (bench measures on top of `CompletionStream.events()`).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import quote, urlsplit

from edgekit import errors
from edgekit.chat.profile import Sampling
from edgekit.chat.sse import iter_sse
from edgekit.layout import UNIT_NAME

UNIT_HINT = f"systemctl status {UNIT_NAME} on the device"


class ServerUnreachable(errors.ConnectError):
    """Nothing answers at the server's address."""


class ServerLoading(errors.ConnectError):
    """llama-server is up but still loading the model (HTTP 503)."""


class AuthFailed(errors.ConnectError):
    """llama-server refused the API key (HTTP 401/403)."""


class ServerError(errors.EdgekitError):
    """llama-server answered with an error; `server_message` is its text, unchanged."""

    exit_code = errors.REMOTE

    def __init__(self, message: str, hint: str | None = None, status: int | None = None,
                 server_message: str = "", body: Any = None):
        super().__init__(message, hint)
        self.status = status
        self.server_message = server_message
        self.body = body


class ModelNotServed(ServerError):
    """The service (router mode) does not serve the model asked for; `served` lists the ones it does."""

    def __init__(self, message: str, served: list[str], **kwargs: Any):
        super().__init__(message, **kwargs)
        self.served = served


class ContextOverflow(ServerError):
    """The conversation no longer fits the server's context window."""


def check_url(url: str) -> str:
    """A server URL, http(s)://HOST[:PORT][/PATH] (a bare HOST:PORT means http), without a trailing slash."""
    full = url if "://" in url else f"http://{url}"
    try:
        parts = urlsplit(full)
        parts.port          # raises for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.UsageError(f"not a server URL: {url!r}",
                                hint="use http://HOST:PORT, e.g. --url http://10.77.1.2:8080")
    return full.rstrip("/")


@dataclass(frozen=True)
class Endpoint:
    """Where a llama-server is and which key it takes; `api_key_file` and `target` only make errors say where."""

    url: str
    api_key: str | None = None
    api_key_file: str | None = None
    model: str | None = None
    target: str | None = None

    @property
    def label(self) -> str:
        return self.target or self.url


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


def _server_message(body: bytes) -> tuple[str, Any]:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return text[:500], text
    err = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(err, dict):
        return str(err.get("message") or err.get("status") or text[:500]), data
    return str(err), data


def _is_context_error(status: int | None, message: str, data: Any) -> bool:
    err = data.get("error") if isinstance(data, dict) else None
    kind = err.get("type", "") if isinstance(err, dict) else ""
    return kind == "exceed_context_size_error" or ("context" in message.lower() and status in (None, 400, 500))


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


class LlamaClient:
    """Talks to one llama-server. `endpoint` names the target/key file so errors can say where to look."""

    def __init__(self, endpoint: Endpoint, timeout: float = 300.0):
        self.endpoint = endpoint
        self.url = check_url(endpoint.url)
        parts = urlsplit(self.url)
        self._https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self.timeout = timeout

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self.endpoint.api_key:
            h["Authorization"] = f"Bearer {self.endpoint.api_key}"
        return h

    def _unreachable(self, exc: BaseException) -> ServerUnreachable:
        target = self.endpoint.target
        if target and target != self.url:
            hint = f"run `edgekit status {target}` to see whether llama-server is running (or {UNIT_HINT})"
        else:
            hint = f"check the URL and port, and that llama-server runs: `edgekit status TARGET`, or {UNIT_HINT}"
        return ServerUnreachable(f"cannot reach llama-server at {self.url}: {_reason(exc)}", hint=hint)

    def _http_error(self, status: int, body: bytes) -> errors.EdgekitError:
        message, data = _server_message(body)
        where = self.url
        if status in (401, 403):
            ep = self.endpoint
            if ep.api_key_file:
                hint = (f"edgekit read the key from {ep.api_key_file} (stored by `edgekit provision`); "
                        f"re-run provision or pass --api-key")
            elif ep.api_key:
                hint = ("the key given is not this server's: pass the server's key with --api-key (`edgekit "
                        "provision` stores it in $EDGEKIT_HOME/targets/TARGET.api-key)")
            else:
                hint = "this server needs an API key: pass --api-key, or use the target name provisioned by edgekit"
            return AuthFailed(f"llama-server at {where} rejected the API key"
                              f"{'' if ep.api_key else ' (none was given)'} ({status}: {message})", hint=hint)
        if status == 503:
            return ServerLoading(f"llama-server at {where} is not ready: {message}",
                                 hint="the model is still loading; wait a little and try again")
        if _is_context_error(status, message, data):
            return ContextOverflow(f"llama-server: {message}", status=status, server_message=message, body=data,
                                   hint="the conversation is longer than the server's context: shorten it "
                                        "(in chat: /save, then /reset), or serve with a larger context size")
        logs = f"see the server's log: `edgekit logs TARGET` (journalctl -u {UNIT_NAME} on the device)"
        if status in (400, 404) and "model" in message.lower() and "not found" in message.lower() and \
                not getattr(self, "_listing", False):
            served = self.served_models()
            return ModelNotServed(f"llama-server answered {status}: {message}" + (
                f"; it serves {', '.join(served)}" if served else ""), served, status=status, server_message=message,
                body=data, hint=f"ask for one of the models it serves by name; {logs}")
        return ServerError(f"llama-server answered {status}: {message}", status=status, server_message=message,
                           body=data, hint=logs)

    def served_models(self) -> list[str]:
        """The ids of the models the service serves, from its own GET /v1/models ([] when it does not say)."""
        self._listing = True                # its own error is not answered by listing again
        try:
            conn, resp = self._request("GET", "/v1/models", timeout=min(self.timeout, 10.0))
            try:
                data = json.loads(resp.read().decode("utf-8"))
            finally:
                conn.close()
        except (errors.EdgekitError, OSError, http.client.HTTPException, ValueError):
            return []
        finally:
            self._listing = False
        models = data.get("data") if isinstance(data, dict) else None
        return [m["id"] for m in models or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _request(self, method: str, path: str, payload: dict | None = None,
                 timeout: float | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=timeout or self.timeout)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8") if payload is not None else None
        try:
            conn.request(method, self._base + path, body=body, headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                data = resp.read()
                conn.close()
                raise self._http_error(resp.status, data)
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise self._unreachable(e) from None
        return conn, resp

    def _json(self, method: str, path: str, payload: dict | None = None, timeout: float | None = None,
              key: str | None = None) -> Any:
        """The answer, a JSON object (holding `key` when given); ServerError when it is something else."""
        conn, resp = self._request(method, path, payload, timeout)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise self._unreachable(e) from None
        finally:
            conn.close()
        try:
            found = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):
            found = None
        if not isinstance(found, dict) or (key is not None and key not in found):
            raise ServerError(f"{method} {path}: not the answer of a llama-server: {data[:200]!r}",
                              hint="is this URL a llama-server?")
        return found

    def health(self) -> dict:
        """GET /health: {"status": "ok"}; raises ServerLoading while the model loads."""
        return self._json("GET", "/health", timeout=min(self.timeout, 10.0))

    def wait_ready(self, timeout: float, on_wait: Callable[[float, str], None] | None = None,
                   interval: float = 0.5, connect_grace: float = 0.0) -> dict:
        """Poll /health until the model is loaded; calls on_wait(seconds waited, what the server said) meanwhile.

        An unreachable server is retried for `connect_grace` seconds (a service that is starting), then raised."""
        start = time.monotonic()
        while True:
            waited = time.monotonic() - start
            try:
                return self.health()
            except ServerLoading as e:
                if waited >= timeout:
                    raise ServerLoading(f"{e.message} (still loading after {waited:.0f}s)", hint=e.hint) from None
                said = e.message
            except ServerUnreachable as e:
                if waited >= min(connect_grace, timeout):
                    raise
                said = e.message
            if on_wait:
                on_wait(waited, said)
            time.sleep(interval)

    def _routed(self, path: str) -> str:
        """A GET path for this endpoint's model (router mode routes GETs by `?model=`; one model ignores it)."""
        return f"{path}?model={quote(self.endpoint.model, safe='')}" if self.endpoint.model else path

    def _with_model(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "model": self.endpoint.model} if self.endpoint.model else payload

    def props(self) -> dict:
        """GET /props: the server's settings (chat template, slots, context size, model path). Needs the key."""
        return self._json("GET", self._routed("/props"), timeout=30)

    def model_info(self) -> dict:
        """GET /v1/models -> this endpoint's model (else the first) id and meta (size in bytes, n_params,
        n_ctx_train); {} when absent."""
        try:
            data = self._json("GET", "/v1/models", timeout=30)
        except ServerError:
            return {}
        models = (data.get("data") or []) if isinstance(data, dict) else []
        chosen = next((m for m in models if m.get("id") == self.endpoint.model), models[0] if models else None)
        return {"id": chosen.get("id"), **(chosen.get("meta") or {})} if chosen else {}

    def tokenize(self, text: str) -> list[int]:
        """POST /tokenize (no special tokens added) -> token ids."""
        data = self._json("POST", "/tokenize", {"content": text, "add_special": False}, timeout=60, key="tokens")
        return [t if isinstance(t, int) else t["id"] for t in data["tokens"]]

    def apply_template(self, messages: list[dict]) -> str:
        """POST /apply-template: the prompt the server builds from these messages with its chat template."""
        return self._json("POST", "/apply-template", {"messages": messages}, key="prompt")["prompt"]

    def chat(self, messages: list[dict], sampling: Sampling = Sampling(), stop: list[str] | None = None,
             stream: bool = False) -> "Completion | CompletionStream":
        """/v1/chat/completions with the server's chat template. Streamed: a CompletionStream of text pieces."""
        payload: dict[str, Any] = self._with_model({"messages": messages, "stream": stream, **sampling.to_request()})
        payload.pop("n_predict", None)
        if stop:
            payload["stop"] = stop
        if stream:
            payload["stream_options"] = {"include_usage": True}
            return CompletionStream(self, "/v1/chat/completions", payload, _chat_piece)
        data = self._json("POST", "/v1/chat/completions", payload, key="choices")
        choice = (data.get("choices") or [{}])[0]
        return Completion(text=(choice.get("message") or {}).get("content") or "",
                          finish_reason=choice.get("finish_reason"), timings=data.get("timings") or {},
                          usage=data.get("usage") or {}, raw=[data])

    def complete(self, prompt: str | list[int], sampling: Sampling = Sampling(), stop: list[str] | None = None,
                 stream: bool = False, cache_prompt: bool = True,
                 ignore_eos: bool = False) -> "Completion | CompletionStream":
        """/completion with a prompt edgekit formatted itself (`--raw`), or token ids (bench: `ignore_eos` and no
        prompt cache, so every request generates exactly max_tokens from scratch)."""
        payload: dict[str, Any] = self._with_model({"prompt": prompt, "stream": stream, "cache_prompt": cache_prompt,
                                                    **sampling.to_request()})
        payload.pop("max_tokens", None)
        if ignore_eos:
            payload["ignore_eos"] = True
        if stop:
            payload["stop"] = stop
        if stream:
            return CompletionStream(self, "/completion", payload, _completion_piece)
        data = self._json("POST", "/completion", payload, key="content")
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
    """Iterate for text pieces as the server sends them (or `events()` for the JSON events); `result` holds the
    whole answer when it is done. The request is sent when the stream is made: HTTP errors raise right away."""

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
            except (OSError, http.client.HTTPException) as e:
                raise ServerError(f"the stream from {self.client.url} broke off: {_reason(e)}",
                                  hint="the server may have crashed or restarted; see its log on the device") from None
            if not chunk:
                return
            yield chunk

    def events(self) -> Iterator[dict]:
        """Each JSON event as it arrives (already added to `result`); an error event raises its typed error."""
        try:
            for name, data in iter_sse(self._chunks()):
                if name == "data" and data.strip() == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(event, dict):
                    continue
                if name == "error" or ("error" in event and name == "data" and not event.get("choices")):
                    raise self._stream_error(event)
                self.result.raw.append(event)
                if event.get("timings"):
                    self.result.timings = event["timings"]
                if event.get("usage"):
                    self.result.usage = event["usage"]
                piece = self._piece(event, self.result)
                self.result.text += piece
                yield event
            self.done = True
        finally:
            self.close()

    def __iter__(self) -> Iterator[str]:
        text = len(self.result.text)
        for _ in self.events():
            piece, text = self.result.text[text:], len(self.result.text)
            if piece:
                yield piece

    def _stream_error(self, event: dict) -> errors.EdgekitError:
        err = event.get("error", event)
        status = err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), int) else 500
        return self.client._http_error(status, json.dumps({"error": err}, ensure_ascii=False).encode())

    def close(self) -> None:
        self._conn.close()
