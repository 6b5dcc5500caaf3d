"""RFC 9457 problem details: every refusal of the API is one, with a `detail` naming what was wrong."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from shared.observability.redaction import redact

PROBLEM_TYPE = "application/problem+json"
_TYPE_BASE = "https://wharf.dev/problems/"


class Problem(Exception):
    """Raise from a handler (or the auth layer) to answer with a problem; `param` names a bad parameter."""

    def __init__(self, status: int, detail: str, *, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.param = status, detail, param
        self.code = code or HTTPStatus(status).phrase.lower().replace(" ", "-").replace("'", "")
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, instance: str = "") -> dict[str, Any]:
        body: dict[str, Any] = {"type": _TYPE_BASE + self.code, "title": HTTPStatus(self.status).phrase,
                                "status": self.status, "detail": redact(self.detail)}
        if instance:
            body["instance"] = instance
        if self.param:
            body["parameter"] = self.param
        body.update(self.extra)
        return body

    def to_json(self, instance: str = "") -> bytes:
        return json.dumps(self.body(instance)).encode()


def bad_param(param: str, message: str) -> Problem:
    shown = param if len(param) <= 60 else param[:59] + "\u2026"
    return Problem(400, f"parameter {shown!r}: {message}", param=shown, code="bad-parameter")
