"""A stdlib HTTP client for llama-server: wait for /health, check the API key, stream completions.

One request = one POST /completion with `stream: true` (server-sent events): the first event carrying a token
gives the time to first token; the last event carries the server's `timings` (prompt_per_second,
predicted_per_second). Concurrency = threads, one connection each, released together.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import urlsplit

from edgekit.errors import ConnectError, EdgekitError, UsageError


class ServerError(EdgekitError):
    """llama-server answered a request with an error."""


@dataclass
class RequestResult:
    ok: bool
    started: float                 # this machine's clock
    wall_s: float
    ttft_s: Optional[float] = None
    prompt_n: Optional[int] = None
    predicted_n: Optional[int] = None
    cache_n: Optional[int] = None
    prompt_per_second: Optional[float] = None      # from the server's timings
    predicted_per_second: Optional[float] = None
    prompt_ms: Optional[float] = None
    predicted_ms: Optional[float] = None
    error: Optional[str] = None

    @property
    def wall_gen_per_second(self) -> Optional[float]:
        """Generated tokens per second from this machine's clock (after the first token)."""
        if not self.predicted_n or self.ttft_s is None or self.wall_s <= self.ttft_s or self.predicted_n < 2:
            return None
        return (self.predicted_n - 1) / (self.wall_s - self.ttft_s)

    def to_json(self) -> Dict[str, Any]:
        return {**asdict(self), "wall_gen_per_second": self.wall_gen_per_second}


class Server:
    """One llama-server at `url` (http://host:port), optionally with an API key."""

    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = 600.0):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not a server URL: {url!r}", hint="use http://HOST:PORT, e.g. http://10.77.1.2:8080")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.api_key = api_key
        self.timeout = timeout

    # -- plumbing ---------------------------------------------------------------------------------------
    def _conn(self, timeout: Optional[float] = None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout or self.timeout)

    def _headers(self) -> Dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request(self, method: str, path: str, body: Optional[dict] = None,
                timeout: Optional[float] = None) -> tuple[int, Any]:
        """One request; returns (status, parsed JSON or text). Raises ConnectError when unreachable."""
        conn = self._conn(timeout)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=self._headers())
            resp = conn.getresponse()
            raw = resp.read().decode("utf-8", "replace")
        except (ConnectionRefusedError, socket.timeout, TimeoutError, OSError, http.client.HTTPException) as e:
            raise ConnectError(f"cannot reach llama-server at {self.url}: {_reason(e)}",
                               hint="check the URL and port, and that the service runs (`edgekit status TARGET`, "
                                    "or systemctl status edgekit-llama-server on the device)") from None
        finally:
            conn.close()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw

    def _check_auth(self, status: int, data: Any) -> None:
        if status == 401:
            raise ConnectError(f"llama-server at {self.url} rejected the API key"
                               + ("" if self.api_key else " (none was given)"),
                               hint="pass --api-key, or name the provisioned TARGET so edgekit uses the key it "
                                    "stored (~/.config/edgekit/targets/TARGET.api-key)")

    # -- API --------------------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 600.0, connect_grace: float = 10.0,
                   on_progress: Optional[Callable[[str, float], None]] = None, poll: float = 1.0) -> None:
        """Wait until /health says ok. 503 = model still loading (reported through on_progress)."""
        started = time.monotonic()
        while True:
            waited = time.monotonic() - started
            try:
                status, data = self.request("GET", "/health", timeout=5)
            except ConnectError:
                if waited > connect_grace:
                    raise
                status, data = None, None
            if status == 200:
                return
            if status is not None and status != 503:
                self._check_auth(status, data)
                raise ServerError(f"llama-server at {self.url} answered /health with HTTP {status}: {_msg(data)}",
                                  hint="look at the server log: `edgekit logs TARGET`, or "
                                       "journalctl -u edgekit-llama-server on the device")
            if waited > timeout:
                raise ServerError(f"llama-server at {self.url} still not ready after {timeout:.0f}s "
                                  f"({_msg(data) if data else 'no answer'})",
                                  hint="a large model can take minutes to load; retry, or check the log")
            if on_progress:
                on_progress(_msg(data) if status == 503 else "connecting", waited)
            time.sleep(poll)

    def props(self) -> Dict[str, Any]:
        """GET /props (needs the API key when one is set - so this also checks the key)."""
        status, data = self.request("GET", "/props", timeout=30)
        self._check_auth(status, data)
        if status != 200 or not isinstance(data, dict):
            raise ServerError(f"GET /props failed with HTTP {status}: {_msg(data)}")
        return data

    def model_info(self) -> Dict[str, Any]:
        """GET /v1/models -> the first model's meta (size in bytes, n_params, n_ctx_train); {} when absent."""
        status, data = self.request("GET", "/v1/models", timeout=30)
        self._check_auth(status, data)
        if status != 200 or not isinstance(data, dict):
            return {}
        models = data.get("data") or []
        return {"id": models[0].get("id"), **(models[0].get("meta") or {})} if models else {}

    def tokenize(self, text: str) -> List[int]:
        status, data = self.request("POST", "/tokenize", {"content": text, "add_special": False}, timeout=60)
        self._check_auth(status, data)
        if status != 200 or not isinstance(data, dict) or "tokens" not in data:
            raise ServerError(f"POST /tokenize failed with HTTP {status}: {_msg(data)}")
        return [t if isinstance(t, int) else t["id"] for t in data["tokens"]]

    def complete(self, prompt: List[int], n_predict: int, temperature: float = 0.0, seed: int = 42) -> RequestResult:
        """One streamed completion with fixed generation length; never raises for server-side failures."""
        body = {"prompt": prompt, "n_predict": n_predict, "stream": True, "cache_prompt": False,
                "ignore_eos": True, "temperature": temperature, "seed": seed}
        started = time.time()
        t0 = time.perf_counter()
        conn = self._conn()
        ttft, final = None, None
        try:
            conn.request("POST", "/completion", body=json.dumps(body), headers=self._headers())
            resp = conn.getresponse()
            if resp.status != 200:
                data = resp.read().decode("utf-8", "replace")
                return RequestResult(False, started, time.perf_counter() - t0,
                                     error=f"HTTP {resp.status}: {_msg(_json_or(data))}")
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:].strip() or b"null")
                if not isinstance(event, dict):
                    continue
                if "error" in event:
                    return RequestResult(False, started, time.perf_counter() - t0, error=_msg(event))
                if ttft is None and (event.get("content") or event.get("tokens")):
                    ttft = time.perf_counter() - t0
                if event.get("stop"):
                    final = event
                    break
        except (OSError, http.client.HTTPException, ValueError) as e:
            return RequestResult(False, started, time.perf_counter() - t0, error=_reason(e))
        finally:
            conn.close()
        wall = time.perf_counter() - t0
        if final is None:
            return RequestResult(False, started, wall, ttft, error="stream ended without a final event")
        t = final.get("timings") or {}
        return RequestResult(True, started, wall, ttft,
                             prompt_n=t.get("prompt_n", final.get("tokens_evaluated")),
                             predicted_n=t.get("predicted_n", final.get("tokens_predicted")),
                             cache_n=t.get("cache_n"),
                             prompt_per_second=t.get("prompt_per_second"),
                             predicted_per_second=t.get("predicted_per_second"),
                             prompt_ms=t.get("prompt_ms"), predicted_ms=t.get("predicted_ms"))

    def complete_many(self, prompts: List[List[int]], n_predict: int, **kwargs) -> List[RequestResult]:
        """Send the prompts at once, one thread each; results in prompt order."""
        results: List[Optional[RequestResult]] = [None] * len(prompts)
        gate = threading.Barrier(len(prompts))

        def worker(i: int) -> None:
            gate.wait()
            results[i] = self.complete(prompts[i], n_predict, **kwargs)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(prompts))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return [r for r in results if r is not None]


def _json_or(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _msg(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
        return str(data.get("status") or data)[:200]
    return str(data)[:200]


def _reason(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
