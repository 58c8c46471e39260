"""llama-server's own /metrics, re-exported with a `model` label; the API key is read here and never leaves.

Per scrape: GET /health (edgekit_llama_server_up), GET /models (which models, and in router mode which are
loaded), then GET /metrics for each loaded model: `/metrics` in single-model mode, `/metrics?model=NAME&
autoload=false` in router mode (autoload=false: a scrape never loads a model). Names are kept as llama-server
prints them (`llamacpp:tokens_predicted_total`), so dashboards written for llama-server keep working.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Dict, List, Optional, Tuple

from edgekit import layout as L
from edgekit.exporter import textformat
from edgekit.exporter.textformat import Exposition
from edgekit.localhttp import request

Fetch = Tuple[int, str]          # (HTTP status, body); status 0 when nothing answered


def server_url(env: Dict[str, str]) -> str:
    """Where llama-server answers on this device (its env file): wildcards are reached on loopback.

    Mirrors edgekit.service.steps.probe_host (controller side; this module stays stdlib-only)."""
    host = env.get("LLAMA_ARG_HOST", "127.0.0.1").strip() or "127.0.0.1"
    port = env.get("LLAMA_ARG_PORT", "8080").strip() or "8080"
    if host in ("0.0.0.0", "0", "0x0"):
        host = "127.0.0.1"
    elif host in ("::", "::0"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def get(url: str, key: Optional[str], timeout: float) -> Fetch:
    """GET url; the key only to edgekit's own llama-server (edgekit.localhttp: no redirects, the service user's
    socket, the unit's main process)."""
    return request(url, key, timeout=timeout, owner=L.SERVICE_USER)


def models(status: int, body: str) -> Tuple[bool, List[Tuple[str, bool]]]:
    """GET /models -> (router mode?, [(model id, loaded?)]). Router entries carry {"status": {"value": ...}}."""
    if status != 200:
        return False, []
    try:
        data = json.loads(body).get("data") or []
    except (ValueError, AttributeError, RecursionError):
        return False, []
    if not isinstance(data, list):
        return False, []
    router = any(isinstance(m.get("status"), dict) for m in data if isinstance(m, dict))
    out = []
    for m in data:
        if isinstance(m, dict) and isinstance(m.get("id"), str):
            status = m.get("status")
            loaded = isinstance(status, dict) and status.get("value") == "loaded" if router else True
            out.append((m["id"], loaded))
    return router, out


def add_server(exp: Exposition, base: str, key: Optional[str], fallback_model: str, timeout: float = 2.5,
               fetch=get) -> None:
    """Health, models and every loaded model's /metrics into `exp` (fetch(url, key, timeout) -> Fetch).

    `timeout` is for all of llama-server's answers together: a hung server must not make the whole scrape miss
    Prometheus' deadline (4 s at a 5 s interval) and lose the board's series with it."""
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.05, deadline - time.monotonic())

    health, _ = fetch(f"{base}/health", None, left())          # /health needs no key: it is never sent there
    exp.gauge("edgekit_llama_server_up", "1 when llama-server answers /health with 200 (0: down or loading).") \
        .add(1.0 if health == 200 else 0.0)
    if health == 0:
        return
    router, listed = models(*fetch(f"{base}/models", key, left()))
    if not listed and fallback_model:
        listed = [(fallback_model, True)]
    exp.gauge("edgekit_llama_server_router_mode", "1 when llama-server serves several models (router mode).") \
        .add(1.0 if router else 0.0)
    loaded = exp.gauge("edgekit_llama_model_loaded", "1 for each model loaded now, 0 for one known but not loaded.")
    up = exp.gauge("edgekit_llama_metrics_up", "1 when the model's llama-server /metrics was read in this scrape.")
    for name, is_loaded in listed:
        loaded.add(1.0 if is_loaded else 0.0, {"model": name})
        if not is_loaded:
            continue
        url = f"{base}/metrics" + (f"?{urllib.parse.urlencode({'model': name, 'autoload': 'false'})}" if router else "")
        status, body = fetch(url, key, left()) if time.monotonic() < deadline else (0, "no time left")
        families = None
        if status == 200:
            try:
                families = textformat.parse(body)
            except ValueError:
                families = None
        up.add(1.0 if families is not None else 0.0, {"model": name})
        if families:
            exp.merge(families, {"model": name})
