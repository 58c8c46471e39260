"""The event lines the helper prints for the controller: EVENT_PREFIX, then one JSON object."""

from __future__ import annotations

import json
import sys
from typing import Optional

EVENT_PREFIX = "@@edgekit "


def emit(event: dict) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def parse_event(line: str) -> Optional[dict]:
    """The event a line holds (the controller reads them back); None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(line[len(EVENT_PREFIX):])
    except (ValueError, RecursionError):
        return None
    return event if isinstance(event, dict) else None
