"""edgekit's own facts on the device, as info-style gauges: the build, the model(s), the last healthy deploy.

Read from the files provision writes (edgekit.layout): the env file, `<current>/build-stamp.json` and
last-healthy.json. Pure parsers plus `read_text`, which answers None for a missing or unreadable file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Dict, Optional

from edgekit.exporter.textformat import Exposition

BUILD_LABELS = ("version", "backend", "cuda_arch", "cpu_level", "flags_hash", "commit")


def read_text(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError):
        return None


def parse_env(text: Optional[str]) -> Dict[str, str]:
    """KEY=VALUE lines of the service's env file (as edgekit.service.settings.parse_env; stdlib-only copy)."""
    return dict(line.split("=", 1) for line in (text or "").splitlines() if "=" in line and not line.startswith("#"))


def _label(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def build_labels(stamp_text: Optional[str]) -> Optional[Dict[str, str]]:
    """The build stamp's identity as labels; None when there is no readable stamp."""
    try:
        stamp = json.loads(stamp_text) if stamp_text else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(stamp, dict) or "version" not in stamp:
        return None
    return {k: _label(stamp.get(k)) for k in BUILD_LABELS}


def healthy_time(record_text: Optional[str], mtime: Optional[float] = None) -> Optional[float]:
    """When the last healthy state was recorded (its "at", %Y-%m-%dT%H:%M:%S%z), else the file's mtime."""
    try:
        record = json.loads(record_text) if record_text else None
    except (ValueError, RecursionError):
        record = None
    at = record.get("at") if isinstance(record, dict) else None
    if isinstance(at, str):
        try:
            return _dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S%z").timestamp()
        except ValueError:
            pass
    return mtime if record_text is not None else None


def add_facts(exp: Exposition, env: Dict[str, str], stamp_text: Optional[str], healthy_text: Optional[str],
              healthy_mtime: Optional[float] = None) -> str:
    """Build info, model info and the last healthy time into `exp`; returns the env's model name ('' if none)."""
    labels = build_labels(stamp_text)
    if labels is not None:
        exp.gauge("edgekit_build_info", "The llama.cpp build the service runs (1; its identity in the labels).") \
            .add(1, labels)
    model = env.get("LLAMA_ARG_ALIAS", "").strip()
    path = env.get("LLAMA_ARG_MODEL", "").strip()
    if path and not model:
        model = os.path.basename(path).rsplit(".", 1)[0]
    if model:
        exp.gauge("edgekit_model_info", "The model the service is configured with (1; file and context size in "
                  "the labels).").add(1, {"model": model, "file": os.path.basename(path),
                                          "ctx_size": env.get("LLAMA_ARG_CTX_SIZE", "").strip()})
    exp.gauge("edgekit_last_healthy_timestamp_seconds", "When a provision last recorded the service healthy.") \
        .add(healthy_time(healthy_text, healthy_mtime))
    return model
