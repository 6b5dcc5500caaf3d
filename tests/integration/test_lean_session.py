"""The storage clients' LeanSession against a real HTTP server on 127.0.0.1: what it sends, what it leaves out
(cookies, redirects), what still takes requests' own path, and timeouts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from shared.adapters.http import LeanRequestsTransport, LeanSession


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        _Handler.seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                              "body": body})
        if self.path == "/slow":
            threading.Event().wait(2)
        status = 302 if self.path == "/moved" else 201
        payload = b"stored" if status == 201 else b""
        self.send_response(status)
        self.send_header("Set-Cookie", "ARRAffinity=abc; Path=/")
        if status == 302:
            self.send_header("Location", "/elsewhere")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = _answer


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _session() -> LeanSession:
    transport = LeanRequestsTransport(use_env_settings=False)
    transport.open()
    assert isinstance(transport.session, LeanSession)
    return transport.session


def test_the_lean_path_sends_the_body_and_headers_and_keeps_no_cookie(server: str) -> None:
    session = _session()
    body = bytes(range(256)) * 40
    first = session.request("PUT", f"{server}/c/b?comp=x", data=body, allow_redirects=False,
                            headers={"User-Agent": "azsdk-python-storage-blob", "x-ms-meta-k": "v"},
                            timeout=(5, 5))
    second = session.request("GET", f"{server}/c/b", allow_redirects=False, timeout=(5, 5))
    assert (first.status_code, first.content, second.status_code) == (201, b"stored", 201)
    put, get = _Handler.seen
    assert (put["method"], put["path"], put["body"]) == ("PUT", "/c/b?comp=x", body)
    assert put["headers"]["Content-Length"] == str(len(body)) and put["headers"]["x-ms-meta-k"] == "v"
    assert put["headers"]["User-Agent"] == "azsdk-python-storage-blob"  # the caller's header wins
    assert put["headers"]["Accept-Encoding"] == requests.Session().headers["Accept-Encoding"]  # the session's kept
    assert "Cookie" not in get["headers"] and len(session.cookies) == 0  # the Set-Cookie was not kept
    plain = requests.Session()  # what requests itself would have done
    plain.request("PUT", f"{server}/c/b", data=b"x")
    plain.request("GET", f"{server}/c/b")
    assert _Handler.seen[-1]["headers"]["Cookie"] == "ARRAffinity=abc"


def test_a_redirect_is_returned_not_followed(server: str) -> None:
    response = _session().request("GET", f"{server}/moved", allow_redirects=False, timeout=(5, 5))
    assert response.status_code == 302 and response.headers["Location"] == "/elsewhere"
    assert [s["path"] for s in _Handler.seen] == ["/moved"]


def test_a_call_that_asks_for_more_takes_requests_own_path(server: str) -> None:
    session = _session()
    session.request("GET", f"{server}/a", cookies={"given": "1"}, allow_redirects=False, timeout=(5, 5))
    session.request("GET", f"{server}/b", params={"q": "1"}, allow_redirects=False, timeout=(5, 5))
    followed = session.request("GET", f"{server}/moved", timeout=(5, 5))  # allow_redirects: followed
    assert _Handler.seen[0]["headers"]["Cookie"] == "given=1" and _Handler.seen[1]["path"] == "/b?q=1"
    assert followed.status_code == 201 and [s["path"] for s in _Handler.seen[2:]] == ["/moved", "/elsewhere"]


def test_a_streamed_response_is_read_by_the_caller_and_timeouts_hold(server: str) -> None:
    session = _session()
    streamed = session.request("GET", f"{server}/s", stream=True, allow_redirects=False, timeout=(5, 5))
    assert streamed.raw.read() == b"stored"
    with pytest.raises(requests.exceptions.ReadTimeout):
        session.request("GET", f"{server}/slow", allow_redirects=False, timeout=(5, 0.2))
