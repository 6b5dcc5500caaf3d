"""Small helpers shared by HTTP trigger adapters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.observability.redaction import redact

if TYPE_CHECKING:  # cold start: shared.api loads pydantic models; imported where used
    from shared.api.http import ApiResponse


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str, indent=2), status_code=status,
                             mimetype="application/json")


def error_response(status: int, message: str) -> func.HttpResponse:
    """`{"error": message}`, the message redacted (errors quote exceptions; a response never shows a secret)."""
    return json_response({"error": redact(message)}, status)


def bad_channel(asked: str, channels: Sequence[str]) -> func.HttpResponse:
    """400 for a ?channel= that is not one of `channels` (the request is wrong, not the catalogue)."""
    shown = asked if len(asked) <= 40 else asked[:39] + "\u2026"
    return error_response(400, f"unknown channel {shown!r}; use one of: {', '.join(channels)}")


def from_api(response: ApiResponse) -> func.HttpResponse:
    """An API response for the Functions host (which takes the body whole)."""
    return func.HttpResponse(response.read(), status_code=response.status, mimetype=response.content_type,
                             headers=response.headers)


def deprecated(response: func.HttpResponse, successor: str) -> func.HttpResponse:
    """The old routes: a `Deprecation` header and a link to the v1 route."""
    from shared.api.legacy import deprecation_headers

    for name, value in deprecation_headers(successor).items():
        response.headers[name] = value
    return response
