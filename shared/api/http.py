"""A request and a response as the API sees them: no web framework, no azure.functions."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# A request body read whole (JSON, a console form) is at most this big; larger ones are refused with 413.
# Uploads do not read the body whole: they take `ApiRequest.chunks()` as it arrives.
BODY_MAX_BYTES = 1024 * 1024


class BodyTooLargeError(Exception):
    """The request body is over what the route reads whole (the router answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is over {limit} bytes")
        self.limit = limit


class BodyIncompleteError(Exception):
    """The request body ended before it was whole (the client went away): the router answers 400."""


class ApiRequest:
    """One request. `body` is the whole body; a streaming host passes `stream` instead (the body as it arrives),
    which `chunks()` hands out once and `body` reads whole, up to `body_limit` bytes."""

    __slots__ = ("_body", "_body_limit", "_stream", "headers", "method", "path", "query", "streamed_response")

    def __init__(self, method: str, path: str, query: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None, body: bytes = b"", *,
                 stream: Iterator[bytes] | None = None, body_limit: int = BODY_MAX_BYTES,
                 streamed_response: bool = False) -> None:
        self.method = method
        self.path = path  # below /api/v1, e.g. "/jobs/job-1"
        self.query: Mapping[str, str] = query or {}
        self.headers: Mapping[str, str] = headers or {}  # keys lower-case
        # True when the host sends an iterable response body as it is produced (HTTP streams), not joined whole.
        self.streamed_response = streamed_response
        self._body: bytes | None = None if stream is not None else body
        self._stream = stream
        self._body_limit = body_limit

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    @property
    def streamed(self) -> bool:
        return self._stream is not None

    @property
    def body(self) -> bytes:
        """The whole body (read from the stream on first use, at most `body_limit` bytes)."""
        if self._body is None:
            parts: list[bytes] = []
            size = 0
            for chunk in self._take_stream():
                size += len(chunk)
                if size > self._body_limit:
                    raise BodyTooLargeError(self._body_limit)
                parts.append(chunk)
            self._body = b"".join(parts)
        return self._body

    def chunks(self, size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        """The body as it arrives (streamed), or the whole body cut in `size` pieces; empty pieces skipped."""
        if self._body is not None:
            view = memoryview(self._body)
            for start in range(0, len(view), size):
                yield bytes(view[start:start + size])
            return
        for chunk in self._take_stream():
            if chunk:
                yield chunk

    def _take_stream(self) -> Iterator[bytes]:
        stream, self._stream = self._stream, None
        if stream is None:
            raise RuntimeError("the request body was already read as a stream")
        return stream


@dataclass
class ApiResponse:
    status: int
    body: bytes | Iterable[bytes] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def read(self) -> bytes:
        """The whole body (what the classic Functions host needs; a streaming host iterates `body` instead)."""
        return self.body if isinstance(self.body, bytes) else b"".join(self.body)


def json_body(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, json.dumps(value, default=str).encode(), "application/json", dict(headers or {}))
