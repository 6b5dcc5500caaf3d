"""The API's route table: each route its method, path template, role and models (what the OpenAPI document
is generated from), and matching a request path to one."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel

PREFIX = "/api/v1"
_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # below PREFIX: "/jobs/{job_id}"
    handler: Callable[..., Any]
    role: str  # auth.READ / OPERATE / UPLOAD, or "" (anonymous)
    summary: str
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    media: str = "application/json"  # of the success response
    body: str = ""  # media type of a request body, "" when none

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    @property
    def regex(self) -> re.Pattern[str]:
        pattern = "".join(f"(?P<{p}>[^/]+)" if i % 2 else re.escape(p) for i, p in enumerate(_PARAM.split(self.path)))
        return re.compile(pattern + "/?")


ROUTES: list[Route] = []


def route(method: str, path: str, *, role: str, summary: str, query: type[BaseModel] | None = None,
          response: type[BaseModel] | None = None, status: int = 200, media: str = "application/json",
          body: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        ROUTES.append(Route(method, path, fn, role, summary, query, response, status, media, body))
        return fn
    return register


def match(method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
    """(route, path params, methods allowed at this path). Literal segments win over parameters."""
    allowed: list[str] = []
    found: tuple[Route, dict[str, str]] | None = None
    for r in sorted(ROUTES, key=lambda r: (len(r.params), r.path)):
        m = r.regex.fullmatch(path)
        if m is None:
            continue
        if r.method == method and found is None:
            found = (r, {k: unquote(v) for k, v in m.groupdict().items()})
        allowed.append(r.method)
    return (found[0], found[1], allowed) if found else (None, {}, allowed)
