"""A request and a response as the API sees them: no web framework, no azure.functions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiRequest:
    method: str
    path: str  # below /api/v1, e.g. "/jobs/job-1"
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # keys lower-case
    body: bytes = b""

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class ApiResponse:
    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def read(self) -> bytes:
        """The whole body (what the Functions host needs; a streaming host iterates `body` instead)."""
        return self.body if isinstance(self.body, bytes) else b"".join(self.body)


def json_body(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, json.dumps(value, default=str).encode(), "application/json", dict(headers or {}))
