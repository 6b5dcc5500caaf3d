"""HTTP streams: a function that takes the `azurefunctions-extensions-http-fastapi` request gets it as the
worker gives it (a Starlette/FastAPI request whose body is read as it arrives), and its response is sent
through ASGI (a streaming body in chunked encoding, or with its Content-Length).

In Azure the host proxies the request to the worker's own uvicorn server; here the front end's socket feeds
the request instead. What the function sees is the same: the request (route params synced into
`path_params`, as the worker's synchroniser does), the body in pieces, and its Response sent as it comes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, BinaryIO

log = logging.getLogger("devhost.http")

_PIECE = 256 * 1024


def takes_stream_request(annotation: Any) -> bool:
    """True for a trigger parameter typed with the HTTP streams request (what the worker checks)."""
    try:
        from azurefunctions.extensions.base import RequestTrackerMeta
    except ImportError:
        return False
    return RequestTrackerMeta.get_request_type() is not None and RequestTrackerMeta.check_type(annotation)


class BodyReader:
    """The request body from the socket, piece by piece (Content-Length or chunked transfer encoding)."""

    def __init__(self, rfile: BinaryIO, headers: dict[str, str]) -> None:
        self._rfile = rfile
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        self._left = 0 if self._chunked else int(headers.get("content-length") or 0)
        self._chunk_left = 0
        self.done = not self._chunked and self._left == 0

    def read(self) -> bytes:
        if self.done:
            return b""
        if not self._chunked:
            data = self._rfile.read(min(self._left, _PIECE))
            if not data:
                raise ConnectionError("the client closed the connection before the whole body")
            self._left -= len(data)
            self.done = self._left == 0
            return data
        if self._chunk_left == 0:
            size = int(self._rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self._rfile.readline().strip():
                    pass
                self.done = True
                return b""
            self._chunk_left = size
        data = self._rfile.read(min(self._chunk_left, _PIECE))
        if not data:
            raise ConnectionError("the client closed the connection before the whole body")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline()
        return data


def build_request(*, method: str, raw_path: str, headers: list[tuple[str, str]], route_params: dict[str, str],
                  client: tuple[str, int], server: tuple[str, int], reader: BodyReader,
                  loop: asyncio.AbstractEventLoop, finished: asyncio.Event) -> Any:
    """The request object the function gets; its body is read from `reader` in a thread as it is awaited."""
    from azurefunctions.extensions.base import RequestTrackerMeta
    from starlette.requests import Request

    path, _, query = raw_path.partition("?")

    last_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal last_sent
        if not last_sent:
            data = await loop.run_in_executor(None, reader.read) if not reader.done else b""
            last_sent = reader.done
            return {"type": "http.request", "body": data, "more_body": not reader.done}
        await finished.wait()  # after the body: nothing until the exchange is over (no busy loop)
        return {"type": "http.disconnect"}

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode("latin-1"), "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": client, "server": server, "path_params": {},
    }
    request = Request(scope, receive)
    RequestTrackerMeta.get_synchronizer().sync_route_params(request, route_params)
    return request


async def send_response(response: Any, *, request: Any, head: bool,
                        write_head: Callable[[int, list[tuple[str, str]], bool], None],
                        write_body: Callable[[bytes], None], finished: asyncio.Event) -> None:
    """Run the function's ASGI response; the status and headers, then each body piece, go to the socket."""
    loop = asyncio.get_running_loop()
    started = False

    async def send(message: dict[str, Any]) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            chunked = not any(k.lower() == "content-length" for k, _ in headers) and not head
            await loop.run_in_executor(None, write_head, int(message["status"]), headers, chunked)
            started = True
        elif message["type"] == "http.response.body":
            data = message.get("body", b"")
            if data and not head:
                await loop.run_in_executor(None, write_body, data)

    try:
        await response(request.scope, request.receive, send)
    finally:
        finished.set()
    if not started:
        raise RuntimeError("the response sent no status")
