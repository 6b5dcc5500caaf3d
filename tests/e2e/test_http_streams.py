"""HTTP streams through devhost and the whole app (decision 192): an upload's body is stored as it arrives and a
download is sent as it is read, so neither costs the worker a body's worth of memory; an upload over the limit
stops at the limit with 413 and leaves nothing in drop/."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from tests.e2e.conftest import E2E, FUNCTION_KEY
from tests.e2e.test_processing import catalog_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]

MIB = 1024 * 1024


def _port(e2e: E2E) -> int:
    return int(e2e.host.http_url.rsplit(":", 1)[1].split("/")[0])


def _pieces(count: int) -> Iterator[bytes]:
    piece = bytes(range(256)) * 4096  # 1 MiB, the same object each time: the client holds one piece
    for _ in range(count):
        yield piece


def _expected_sha(count: int) -> str:
    digest = hashlib.sha256()
    for piece in _pieces(count):
        digest.update(piece)
    return digest.hexdigest()


def _partner(e2e: E2E) -> str:
    partner = f"s{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR"))
    return partner


@pytest.fixture()
def big_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    # Read on each request: the default 100 MiB limit would refuse the file below.
    monkeypatch.setenv("WHARF_UPLOAD_MAX_BYTES", str(1024 * MIB))
    monkeypatch.setenv("WHARF_DOWNLOAD_MAX_BYTES", str(MIB))  # the joined-body cap; streamed downloads pass it


def test_a_320_mib_upload_and_its_download_stream_through_a_few_blocks_of_memory(e2e: E2E, big_limits: None) -> None:
    partner, count = _partner(e2e), 320
    name = f"big-{uuid.uuid4().hex[:6]}.bin"
    conn = http.client.HTTPConnection("127.0.0.1", _port(e2e), timeout=120)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        conn.request("POST", f"/api/v1/partners/{partner}/uploads?name={name}", body=_pieces(count),
                     headers={"x-functions-key": FUNCTION_KEY, "Content-Type": "application/octet-stream"},
                     encode_chunked=True)
        resp = conn.getresponse()
        doc = json.loads(resp.read())
        upload_peak = tracemalloc.get_traced_memory()[1] - before
        assert resp.status == 201, doc
        assert doc["bytes"] == count * MIB and doc["sha256"] == _expected_sha(count)
        # The blob adapter's blocks in flight (4 x 8 MiB and one being filled: ~45-55 MiB measured for 40 to
        # 320 MiB files), not the body: joined, it alone was 320 MiB.
        assert upload_peak < count * MIB // 4, f"the upload held {upload_peak / MIB:.1f} MiB"

        # A job whose raw file is the upload: its content comes back streamed, past the joined-body cap.
        job_id = new_job_id()
        e2e.services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD",
                                                               "source": "test", "file_name": name})
        e2e.services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"drop/{partner}/{name}",
                                                              "bytes": count * MIB})
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        conn.request("GET", f"/api/v1/jobs/{job_id}/content?which=raw", headers={"x-functions-key": FUNCTION_KEY})
        resp = conn.getresponse()
        assert resp.status == 200
        digest, size = hashlib.sha256(), 0
        while chunk := resp.read(MIB):
            digest.update(chunk)
            size += len(chunk)
        download_peak = tracemalloc.get_traced_memory()[1] - before
        assert size == count * MIB and digest.hexdigest() == doc["sha256"]
        assert download_peak < count * MIB // 4, f"the download held {download_peak / MIB:.1f} MiB"
    finally:
        tracemalloc.stop()
        conn.close()
        e2e.services.blobs.delete("drop", f"{partner}/{name}")


def _send_ignoring_errors(sock: socket.socket, count: int) -> None:
    try:
        sock.sendall(b"")
        for piece in _pieces(count):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the server answered 413 and closed the connection: the rest is not taken


def test_an_upload_over_the_limit_stops_there_with_413_and_leaves_nothing(e2e: E2E,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHARF_UPLOAD_MAX_BYTES", str(8 * MIB))
    partner = _partner(e2e)
    name = f"over-{uuid.uuid4().hex[:6]}.bin"
    sock = socket.create_connection(("127.0.0.1", _port(e2e)), timeout=60)
    try:
        sock.sendall((f"POST /api/v1/partners/{partner}/uploads?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"x-functions-key: {FUNCTION_KEY}\r\nContent-Type: application/octet-stream\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n").encode())
        sender = threading.Thread(target=_send_ignoring_errors, args=(sock, 512), daemon=True)  # 512 MiB offered
        sender.start()
        reply = sock.makefile("rb")
        status_line = reply.readline()
        headers: dict[str, Any] = {}
        while (line := reply.readline().strip()):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = json.loads(reply.read(int(headers["content-length"])))
        assert status_line.split()[1] == b"413", (status_line, body)
        assert "WHARF_UPLOAD_MAX_BYTES" in body["detail"]
        assert headers.get("connection") == "close"  # the unread rest of the body ends the connection
        sender.join(timeout=30)
        assert not sender.is_alive()  # the server stopped taking the body: the sender got an error, not 512 MiB in
    finally:
        sock.close()
    assert not e2e.services.blobs.exists("drop", f"{partner}/{name}")


def test_an_upload_whose_client_goes_away_mid_body_stores_nothing_and_logs_no_traceback(
        e2e: E2E, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    partner = _partner(e2e)
    name = f"cut-{uuid.uuid4().hex[:6]}.bin"
    piece = b"x" * MIB
    with caplog.at_level(logging.INFO, logger="shared.api"):
        sock = socket.create_connection(("127.0.0.1", _port(e2e)), timeout=30)
        sock.sendall((f"POST /api/v1/partners/{partner}/uploads?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"x-functions-key: {FUNCTION_KEY}\r\nContent-Type: application/octet-stream\r\n"
                      f"Content-Length: {64 * MIB}\r\n\r\n").encode())
        sock.sendall(piece * 2)  # 2 of the 64 MiB it announced, then the client is gone
        sock.close()
        answered = e2e.wait_for("the upload's answer in the log", lambda: [
            r for r in caplog.records if "/partners/{partner}/uploads" in r.getMessage()], timeout=30)
    assert "-> 400" in answered[0].getMessage()  # a clear 4xx for the request, not a 500
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("shared.api")]
    time.sleep(0.5)
    assert not e2e.services.blobs.exists("drop", f"{partner}/{name}")
