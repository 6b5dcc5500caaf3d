"""HTTP front end: user routes under the route prefix, auth levels, and the Durable extension's HTTP API."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

from devhost.asgi import BodyReader, build_request, send_response, takes_stream_request
from devhost.client import WEBHOOK_PATH, management_urls
from devhost.durable import DurableError, TaskHub, parse_time_query
from devhost.index import FunctionSpec
from devhost.invoke import Invoker, shared_loop
from devhost.routes import RouteTemplate

log = logging.getLogger("devhost.http")

_ANONYMOUS = "anonymous"


@dataclass
class _Route:
    spec: FunctionSpec
    template: RouteTemplate
    methods: set[str] | None
    auth_level: str


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] | None = None


def _json_reply(status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> _Reply:
    return _Reply(status, json.dumps(doc).encode(), [("Content-Type", "application/json; charset=utf-8"),
                                                      *(headers or [])])


def _json_body(body: bytes) -> Any:
    return json.loads(body) if body.strip() else None


def _text_reply(status: int, text: str) -> _Reply:
    return _Reply(status, text.encode(), [("Content-Type", "text/plain; charset=utf-8")])


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of connections (two dozen intakes' durable client calls
    # while the accept thread waits for the GIL) overflows it, the kernel drops the SYNs and the clients' connects
    # time out. Kestrel, which the host runs, listens with 511.
    request_queue_size = 511


def _send_reply(handler: BaseHTTPRequestHandler, reply: _Reply, *, close: bool = False) -> None:
    handler.send_response(reply.status)
    for name, value in reply.headers or []:
        handler.send_header(name, value)
    payload = b"" if handler.command == "HEAD" else reply.body
    handler.send_header("Content-Length", str(len(payload)))
    if close:  # a body left unread on the socket: the connection cannot carry another request
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    handler.wfile.write(payload)


class HttpFrontend:
    """Serves the app's HTTP triggers and devhost's built-in endpoints on a ThreadingHTTPServer."""

    def __init__(self, *, specs: list[FunctionSpec], invoker: Invoker, hub: TaskHub | None, route_prefix: str,
                 function_key: str | None, host: str, port: int,
                 run_function: Callable[[str], bool] | None = None) -> None:
        self._invoker = invoker
        self._hub = hub
        self._prefix = route_prefix.strip("/")
        self._key = function_key or None
        self._run_function = run_function
        self.rpc_token = secrets.token_hex(16)
        routes = []
        for spec in specs:
            auth = str(spec.trigger.get("authLevel") or "function").lower()
            methods = {str(m).upper() for m in spec.trigger["methods"]} if spec.trigger.get("methods") else None
            template = RouteTemplate(spec.trigger.get("route") or spec.name)
            routes.append(_Route(spec, template, methods, auth))
        self._routes = sorted(routes, key=lambda r: r.template.precedence)
        # HTTP streams (decision 192): functions typed with the extension's request get it with the body unread.
        self._streamed = {r.spec.name for r in routes if takes_stream_request(r.spec.annotation(r.spec.trigger_param))}
        self._server = _Server((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        host, port = str(self._server.server_address[0]), self._server.server_address[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only
        return f"http://{shown}:{port}"

    @property
    def rpc_base_url(self) -> str:
        # Like the extension's localhost-only RPC endpoint: no key, but an unguessable per-process path.
        return f"{self.base_url}/durabletask/{self.rpc_token}/"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="devhost-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------ dispatch

    def _authorized(self, level: str, headers: dict[str, str], query: dict[str, str]) -> bool:
        if level == _ANONYMOUS:
            return True
        if not self._key:
            return False
        supplied = headers.get("x-functions-key") or query.get("code") or ""
        return hmac.compare_digest(supplied.encode(), self._key.encode())

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        parts = urlsplit(raw_path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        trimmed = path.strip("/")
        rpc_prefix = f"durabletask/{self.rpc_token}/"
        if trimmed.startswith(rpc_prefix) or trimmed + "/" == rpc_prefix:
            return self._durable_api(method, trimmed[len(rpc_prefix):], query, body)
        if trimmed.startswith(WEBHOOK_PATH + "/"):
            if not self._authorized("function", headers, query):
                return self._unauthorized()
            return self._durable_api(method, trimmed[len(WEBHOOK_PATH) + 1:], query, body)
        if trimmed == "admin/host/status":
            return _json_reply(200, {"state": "Running", "version": "devhost"})
        if trimmed.startswith("admin/functions/") and method == "POST":
            if not self._authorized("admin", headers, query):
                return self._unauthorized()
            name = trimmed[len("admin/functions/"):]
            if self._run_function is None or not self._run_function(name):
                return _text_reply(404, f"no timer function named {name!r}")
            return _Reply(202)
        if trimmed == "" and self._prefix:
            return _text_reply(200, "Your Functions app (devhost) is up and running.")
        route_path = self._route_path(trimmed)
        if route_path is None:
            return _text_reply(404, "Not Found")
        return self._user_route(method, route_path, raw_path, headers, query, body)

    def _route_path(self, trimmed: str) -> str | None:
        """The path below the route prefix, None when the request is not under it."""
        if not self._prefix:
            return trimmed
        if trimmed.lower() != self._prefix.lower() and not trimmed.lower().startswith(self._prefix.lower() + "/"):
            return None
        return trimmed[len(self._prefix):]

    def _match(self, method: str, route_path: str) -> tuple[_Route, dict[str, str]] | None:
        """The first route (by precedence) whose template and methods take the request."""
        for route in self._routes:
            params = route.template.match(route_path)
            if params is not None and (route.methods is None or method in route.methods):
                return route, params
        return None

    def _unauthorized(self) -> _Reply:
        hint = "" if self._key else " (devhost: set WHARF_FUNCTION_KEY to enable function keys)"
        return _text_reply(401, "Unauthorized" + hint)

    def _user_route(self, method: str, route_path: str, raw_path: str, headers: dict[str, str],
                    query: dict[str, str], body: bytes) -> _Reply:
        found = self._match(method, route_path)
        if found is not None:
            route, params = found
            if not self._authorized(route.auth_level, headers, query):
                return self._unauthorized()
            host = headers.get("host") or self.base_url.split("//", 1)[1]
            request = func.HttpRequest(method, f"http://{host}{raw_path}", headers=headers, params=query,
                                       route_params=params, body=body)
            spec = route.spec
            try:
                detail = f"{method} /{route_path.strip('/')}"
                result = self._invoker.call(spec, {spec.trigger_param: request}, detail=detail)
            except Exception:  # noqa: BLE001 - the host answers 500 for an unhandled function error
                return _Reply(500)
            return self._to_reply(spec, result)
        return _text_reply(404, "Not Found")

    @staticmethod
    def _to_reply(spec: FunctionSpec, result: Any) -> _Reply:
        if result is None:
            return _Reply(204)
        if isinstance(result, str | bytes):
            data = result.encode() if isinstance(result, str) else result
            return _Reply(200, data, [("Content-Type", "text/plain; charset=utf-8")])
        if isinstance(result, func.HttpResponse):
            out_headers: list[tuple[str, str]] = []
            has_type = False
            for name, value in result.headers.items():
                if name.lower() == "content-type":
                    has_type = True
                if name.lower() == "set-cookie" and hasattr(result.headers, "get_all"):
                    out_headers.extend(("Set-Cookie", v) for v in result.headers.get_all("Set-Cookie"))
                    continue
                out_headers.append((name, value))
            if not has_type:
                mimetype = result.mimetype or "text/plain"
                ctype = f"{mimetype}; charset={result.charset}" if mimetype.startswith("text/") else mimetype
                out_headers.append(("Content-Type", ctype))
            return _Reply(result.status_code, result.get_body() or b"", out_headers)
        log.error("function %s returned %s; an HTTP function must return func.HttpResponse, str or bytes",
                  spec.name, type(result).__name__)
        return _Reply(500)

    # ------------------------------------------------------------------ HTTP streams

    def stream_target(self, method: str, raw_path: str,
                      headers: dict[str, str]) -> tuple[_Route, dict[str, str], str] | _Reply | None:
        """The streamed user route this request goes to (or a 401), None when it takes the classic path."""
        if not self._streamed:
            return None
        parts = urlsplit(raw_path)
        route_path = self._route_path(parts.path.strip("/"))
        if route_path is None:
            return None
        found = self._match(method, route_path)
        if found is None or found[0].spec.name not in self._streamed:
            return None
        route, params = found
        if not self._authorized(route.auth_level, headers, dict(parse_qsl(parts.query, keep_blank_values=True))):
            return self._unauthorized()
        return route, params, route_path

    def serve_stream(self, target: tuple[_Route, dict[str, str], str], handler: BaseHTTPRequestHandler,
                     headers: dict[str, str]) -> None:
        """Invoke a streamed function on the request as it arrives and send its ASGI response as it comes."""
        route, params, route_path = target
        spec = route.spec
        loop = shared_loop()
        finished = asyncio.Event()
        reader = BodyReader(handler.rfile, headers)  # type: ignore[arg-type]
        local = handler.connection.getsockname()
        request = build_request(method=handler.command, raw_path=handler.path, headers=list(handler.headers.items()),
                                route_params=params, client=handler.client_address[:2], server=local[:2],
                                reader=reader, loop=loop, finished=finished)
        chunked = False

        def write_head(status: int, out: list[tuple[str, str]], use_chunks: bool) -> None:
            nonlocal chunked
            chunked = use_chunks
            handler.send_response(status)
            for name, value in out:
                handler.send_header(name, value)
            if use_chunks:
                handler.send_header("Transfer-Encoding", "chunked")
            if not reader.done:  # the function did not read the whole body: the rest is not read either
                handler.send_header("Connection", "close")
                handler.close_connection = True
            handler.end_headers()

        def write_body(data: bytes) -> None:
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)

        try:
            result = self._invoker.call(spec, {spec.trigger_param: request},
                                        detail=f"{handler.command} /{route_path.strip('/')}")
        except Exception:  # noqa: BLE001 - the host answers 500 for an unhandled function error
            finished.set()
            _send_reply(handler, _Reply(500), close=not reader.done)
            return
        from starlette.responses import Response

        if not isinstance(result, Response):
            finished.set()
            log.error("function %s returned %s; a function taking the HTTP streams request must return a "
                      "Starlette/FastAPI Response", spec.name, type(result).__name__)
            _send_reply(handler, _Reply(500), close=not reader.done)
            return
        coro = send_response(result, request=request, head=handler.command == "HEAD", write_head=write_head,
                             write_body=write_body, finished=finished)
        try:
            asyncio.run_coroutine_threadsafe(coro, loop).result()
        except (ConnectionError, OSError):
            handler.close_connection = True  # the client went away mid-response
            return
        if chunked:
            handler.wfile.write(b"0\r\n\r\n")

    # ------------------------------------------------------------------ Durable extension HTTP API

    def _durable_api(self, method: str, sub: str, query: dict[str, str], body: bytes) -> _Reply:
        hub = self._hub
        if hub is None:
            return _text_reply(404, "this app has no orchestrator functions")
        segments = [unquote(s) for s in sub.strip("/").split("/")] if sub.strip("/") else []
        try:
            if method == "POST" and segments[:1] == ["orchestrators"] and len(segments) in (2, 3):
                instance_id = segments[2] if len(segments) == 3 else None
                iid = hub.start_new(segments[1], instance_id, _json_body(body))
                payload = management_urls(self.base_url, hub.hub_name, self._key, iid)
                return _json_reply(202, payload, [("Location", payload["statusQueryGetUri"])])
            if segments[:1] != ["instances"]:
                return _text_reply(404, "Not Found")
            if len(segments) == 1 and method == "GET":
                statuses = set(query["runtimeStatus"].split(",")) if query.get("runtimeStatus") else None
                docs = hub.list_status(prefix=query.get("instanceIdPrefix"), statuses=statuses,
                                       created_from=parse_time_query(query.get("createdTimeFrom")),
                                       created_to=parse_time_query(query.get("createdTimeTo")),
                                       show_input=query.get("showInput", "").lower() == "true")
                return _json_reply(200, docs)
            instance_id = segments[1] if len(segments) > 1 else ""
            if len(segments) == 2 and method == "GET":
                doc = hub.status(instance_id, show_history=query.get("showHistory", "").lower() == "true",
                                 show_input=query.get("showInput", "true").lower() != "false")
                running = doc["runtimeStatus"] in ("Pending", "Running", "ContinuedAsNew")
                if doc["runtimeStatus"] == "Failed" and query.get("returnInternalServerErrorOnFailure") == "true":
                    return _json_reply(500, doc)
                return _json_reply(202 if running else 200, doc)
            if len(segments) == 2 and method == "DELETE":
                deleted = hub.purge(instance_id)
                return _json_reply(200, {"instancesDeleted": deleted}) if deleted else _Reply(404)
            if len(segments) == 4 and segments[2] == "raiseEvent" and method == "POST":
                hub.raise_event(instance_id, segments[3], _json_body(body))
                return _Reply(202)
            if len(segments) == 3 and segments[2] == "terminate" and method == "POST":
                hub.terminate(instance_id, query.get("reason", ""))
                return _Reply(202)
            if len(segments) == 3 and segments[2] in ("rewind", "restart", "suspend", "resume"):
                return _text_reply(501, f"devhost does not implement {segments[2]}")
        except ValueError as exc:
            return _json_reply(400, {"Message": f"request body is not JSON: {exc}"})
        except DurableError as exc:
            if exc.http_status == 404:
                return _Reply(404)
            return _json_reply(exc.http_status, {"Message": str(exc), "ExceptionMessage": str(exc),
                                                 "ExceptionType": type(exc).__name__})
        return _text_reply(404, "Not Found")

    # ------------------------------------------------------------------ stdlib plumbing

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        frontend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "devhost"

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
                try:
                    target = frontend.stream_target(self.command, self.path, headers)
                    if isinstance(target, tuple):
                        frontend.serve_stream(target, self, headers)
                        return
                except Exception:  # never drop the connection without an answer
                    log.exception("devhost: error streaming %s %s", self.command, urlsplit(self.path).path)
                    _send_reply(self, _Reply(500), close=True)
                    return
                if isinstance(target, _Reply):
                    _send_reply(self, target, close=True)  # refused before its body was read
                    return
                body = self._read_body()
                try:
                    reply = frontend.dispatch(self.command, self.path, headers, body)
                except Exception:  # never drop the connection without an answer
                    log.exception("devhost: error handling %s %s", self.command, urlsplit(self.path).path)
                    reply = _Reply(500)
                _send_reply(self, reply)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

            def log_message(self, format: str, *args: Any) -> None:
                # Invocations are logged by the invoker; request lines may carry ?code= keys, so stay quiet.
                return

        return Handler
