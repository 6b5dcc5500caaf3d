"""Small helpers shared by HTTP trigger adapters, and how HTTP functions are registered.

HTTP streams (decision 192): with `WHARF_HTTP_STREAMS` on (the default) every HTTP function is registered as
an async function over the `azurefunctions-extensions-http-fastapi` types, so the Python worker serves HTTP
through its own ASGI server and hands the function the request as it arrives: an upload's body is read in
pieces and a download's body is sent as it is read, never whole. The switch is app-wide (the worker turns it
on when the extension is imported), which is why every HTTP function goes through `http_function` and why it
is decided once, at import. Off, the functions take and return the classic `func.HttpRequest` /
`func.HttpResponse` (whole bodies; the upload and download caps apply)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import azure.functions as func

from shared.observability.redaction import redact

if TYPE_CHECKING:  # cold start: shared.api loads pydantic models; imported where used
    from shared.api.http import ApiRequest, ApiResponse


def _streams_on() -> bool:
    return os.environ.get("WHARF_HTTP_STREAMS", "true").strip().lower() not in ("0", "false", "no", "off")


HTTP_STREAMS = _streams_on()

if HTTP_STREAMS:
    # Importing the extension is what turns HTTP streams on in the worker (and in devhost, which asks it).
    from azurefunctions.extensions.http.fastapi import Request as StreamRequest
    from azurefunctions.extensions.http.fastapi import Response as StreamResponse

# Blocking handlers (storage calls) run here, off the worker's event loop; sized like the worker's own pool.
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        workers = int(os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "0") or 0) or 16
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wharf-http")
    return _POOL


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
    """An API response for the classic Functions host (which takes the body whole)."""
    return func.HttpResponse(response.read(), status_code=response.status, mimetype=response.content_type,
                             headers=response.headers)


def deprecated(response: func.HttpResponse, successor: str) -> func.HttpResponse:
    """The old routes: a `Deprecation` header and a link to the v1 route."""
    from shared.api.legacy import deprecation_headers

    for name, value in deprecation_headers(successor).items():
        response.headers[name] = value
    return response


# --------------------------------------------------------------------------- registration

Handler = Callable[[func.HttpRequest], func.HttpResponse]
ApiHandler = Callable[["ApiRequest"], "ApiResponse"]


def http_function(bp: Any, name: str, *, route: str, methods: Sequence[str],
                  auth_level: func.AuthLevel) -> Callable[[Handler], Any]:
    """Register `handler(req: func.HttpRequest) -> func.HttpResponse` as the HTTP function `name`.

    With HTTP streams on, the registered function is async over the extension's request type: the body (small
    routes only: at most `shared.api.http.BODY_MAX_BYTES`, else 413) is read, and the handler runs in a thread
    with a classic request built from it, its response turned into the ASGI one the worker sends."""

    def register(handler: Handler) -> Any:
        if not HTTP_STREAMS:
            return bp.function_name(name)(bp.route(route=route, methods=list(methods),
                                                   auth_level=auth_level)(handler))

        async def entry(req: Any) -> Any:
            from starlette.responses import PlainTextResponse

            from shared.api.http import BODY_MAX_BYTES

            body = bytearray()
            try:
                async for chunk in req.stream():
                    body += chunk
                    if len(body) > BODY_MAX_BYTES:
                        return PlainTextResponse(f"the request body is over {BODY_MAX_BYTES} bytes", 413)
            except Exception:  # noqa: BLE001 - the client went away mid-body (Starlette's ClientDisconnect)
                return PlainTextResponse("the request body ended before it was whole", 400)
            classic = func.HttpRequest(req.method, str(req.url), headers=dict(req.headers),
                                       params=dict(req.query_params), route_params=dict(req.path_params),
                                       body=bytes(body))
            return _classic_out(await _in_thread(handler, classic))

        _name(entry, handler)
        return bp.function_name(name)(bp.route(route=route, methods=list(methods), auth_level=auth_level)(entry))

    return register


def api_function(bp: Any, name: str, *, route: str, methods: Sequence[str], auth_level: func.AuthLevel,
                 request: Callable[[str, str, dict[str, str], dict[str, str], dict[str, str]], dict[str, Any]],
                 ) -> Callable[[ApiHandler], Any]:
    """Register `handler(ApiRequest) -> ApiResponse` as the HTTP function `name`; `request(method, url,
    route_params, query, headers)` gives ApiRequest's method/path/query/headers.

    With HTTP streams on, the request body reaches the handler as it arrives (`ApiRequest.chunks()`, or
    `.body` read whole up to a limit) and an iterable response body is sent as it is produced."""

    def register(handler: ApiHandler) -> Any:
        def from_classic(req: func.HttpRequest) -> func.HttpResponse:
            from shared.api.http import ApiRequest

            parts = request(req.method, req.url, dict(req.route_params), dict(req.params),
                            {k.lower(): v for k, v in req.headers.items()})
            return from_api(handler(ApiRequest(**parts, body=req.get_body() or b"")))

        if not HTTP_STREAMS:
            _name(from_classic, handler)
            return bp.function_name(name)(bp.route(route=route, methods=list(methods),
                                                   auth_level=auth_level)(from_classic))

        async def entry(req: Any) -> Any:
            from shared.api.http import ApiRequest

            loop = asyncio.get_running_loop()
            parts = request(req.method, str(req.url), dict(req.path_params), dict(req.query_params),
                            {k.lower(): v for k, v in req.headers.items()})
            api_request = ApiRequest(**parts, stream=_blocking_stream(req.stream(), loop), streamed_response=True)
            return _api_out(await _in_thread(handler, api_request))

        _name(entry, handler)
        return bp.function_name(name)(bp.route(route=route, methods=list(methods), auth_level=auth_level)(entry))

    return register


def _name(entry: Callable[..., Any], handler: Callable[..., Any]) -> None:
    entry.__name__ = entry.__qualname__ = handler.__name__
    entry.__doc__ = handler.__doc__
    entry.__module__ = handler.__module__
    if HTTP_STREAMS and asyncio.iscoroutinefunction(entry):
        # Objects, not strings: the worker reads these to see the function takes the HTTP streams request.
        entry.__annotations__ = {"req": StreamRequest, "return": StreamResponse}
    else:
        entry.__annotations__ = {"req": func.HttpRequest, "return": func.HttpResponse}


async def _in_thread(fn: Callable[[Any], Any], arg: Any) -> Any:
    """`fn(arg)` in the HTTP pool, in the caller's context (its span stays the parent of the handler's)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_pool(), functools.partial(context.run, fn, arg))


def _blocking_stream(chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The request's async body stream, for a handler in a thread: each piece is awaited on the loop."""

    from shared.api.http import BodyIncompleteError

    async def following() -> bytes | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None

    while True:
        try:
            chunk = asyncio.run_coroutine_threadsafe(following(), loop).result()
        except Exception as exc:  # the client went away mid-body (Starlette's ClientDisconnect)
            raise BodyIncompleteError(type(exc).__name__) from exc
        if chunk is None:
            return
        yield chunk


def _classic_out(response: func.HttpResponse) -> Any:
    from starlette.responses import Response

    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    media = response.mimetype or "text/plain"
    if media.startswith("text/") and "charset" not in media:
        media = f"{media}; charset={response.charset}"
    return Response(response.get_body() or b"", status_code=response.status_code, headers=headers,
                    media_type=None if "content-type" in {k.lower() for k in headers} else media)


def _api_out(response: ApiResponse) -> Any:
    from starlette.responses import Response, StreamingResponse

    if isinstance(response.body, bytes):
        return Response(response.body, status_code=response.status, headers=response.headers,
                        media_type=response.content_type)
    return StreamingResponse(iter(response.body), status_code=response.status, headers=response.headers,
                             media_type=response.content_type)
