"""Call a registered HTTP function the way the worker would, whichever way it is registered (decision 192):
a classic `func.HttpRequest` function directly; an HTTP streams function with a Starlette request built from
the classic one (route params in `path_params`, as the worker's synchroniser puts them), its Response turned
back into a `func.HttpResponse` for the test to read."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

import azure.functions as func


def http_caller(function: Any) -> Callable[[func.HttpRequest], func.HttpResponse]:
    user = function.build().get_user_function()
    if not inspect.iscoroutinefunction(user):
        return user  # type: ignore[no-any-return]

    def call(req: func.HttpRequest) -> func.HttpResponse:
        from starlette.requests import Request

        body = req.get_body() or b""
        parts = urlsplit(req.url)
        scope = {"type": "http", "http_version": "1.1", "method": req.method, "scheme": "http",
                 "path": parts.path or "/", "raw_path": (parts.path or "/").encode(),
                 "query_string": urlencode(dict(req.params)).encode(), "root_path": "",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in req.headers.items()],
                 "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "path_params": dict(req.route_params)}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        response = asyncio.run(user(Request(scope, receive)))
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return func.HttpResponse(bytes(response.body), status_code=response.status_code, headers=headers,
                                 mimetype=response.headers.get("content-type", "").split(";")[0] or None)

    return call
