"""Queue messages as a queue-triggered function receives them (the host has base64-decoded them)."""

from __future__ import annotations

import base64
import json
from typing import Any


def decode_host_message(body: bytes | str) -> dict[str, Any]:
    """A queue-triggered function's message as JSON (the host has already base64-decoded it)."""
    text = body.decode() if isinstance(body, bytes) else body
    try:
        return dict(json.loads(text))
    except json.JSONDecodeError:
        # Messages put on the queue without base64 by other tools: accept both shapes.
        return dict(json.loads(base64.b64decode(text)))
