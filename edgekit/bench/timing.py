"""Timed requests: one streamed completion measured on this machine's clock, and N of them released together.

One request = one POST /completion through the llama-server client (edgekit.chat.client) with `stream: true`:
the first event carrying a token gives the time to first token; the last event carries the server's `timings`
(prompt_per_second, predicted_per_second). Concurrency = threads, one connection each, released together.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

from edgekit.chat.client import LlamaClient
from edgekit.chat.profile import Sampling
from edgekit.errors import EdgekitError


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
    draft_n: Optional[int] = None                  # speculative decoding: tokens drafted, and accepted by the model
    draft_n_accepted: Optional[int] = None

    @property
    def wall_gen_per_second(self) -> Optional[float]:
        """Generated tokens per second from this machine's clock (after the first token)."""
        if not self.predicted_n or self.ttft_s is None or self.wall_s <= self.ttft_s or self.predicted_n < 2:
            return None
        return (self.predicted_n - 1) / (self.wall_s - self.ttft_s)

    def to_json(self) -> Dict[str, Any]:
        return {**asdict(self), "wall_gen_per_second": self.wall_gen_per_second}


def timed_completion(client: LlamaClient, prompt: List[int], n_predict: int, temperature: float = 0.0,
                     seed: int = 42) -> RequestResult:
    """One streamed completion of exactly `n_predict` tokens (EOS ignored, no prompt cache); never raises for a
    failing request: the result says what went wrong."""
    sampling = Sampling(temperature=temperature, seed=seed, max_tokens=n_predict)
    started = time.time()
    t0 = time.perf_counter()
    ttft, final, stream = None, None, None
    try:
        stream = client.complete(prompt, sampling, stream=True, cache_prompt=False, ignore_eos=True)
        for event in stream.events():
            if ttft is None and (event.get("content") or event.get("tokens")):
                ttft = time.perf_counter() - t0
            if event.get("stop"):
                final = event
                break
    except EdgekitError as e:
        return RequestResult(False, started, time.perf_counter() - t0, ttft, error=e.message)
    finally:
        if stream is not None:
            stream.close()
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
                         prompt_ms=t.get("prompt_ms"), predicted_ms=t.get("predicted_ms"),
                         draft_n=t.get("draft_n"), draft_n_accepted=t.get("draft_n_accepted"))


def timed_completions(client: LlamaClient, prompts: List[List[int]], n_predict: int,
                      **kwargs: Any) -> List[RequestResult]:
    """Send the prompts at once, one thread each; results in prompt order."""
    results: List[Optional[RequestResult]] = [None] * len(prompts)
    gate = threading.Barrier(len(prompts))

    def worker(i: int) -> None:
        gate.wait()
        results[i] = timed_completion(client, prompts[i], n_predict, **kwargs)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(prompts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return [r for r in results if r is not None]
