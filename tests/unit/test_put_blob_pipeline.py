"""The lean Put Blob in Azure's shape, without a network: a bearer token credential signs it, and the client's
retry policy retries it (both are the client's own pipeline policies, which `put_blob` does not replace)."""

from __future__ import annotations

import io
from typing import Any

import requests
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, LinearRetry
from requests.adapters import BaseAdapter

from shared.adapters.blobs import BlobStoreClient, put_blob


class _Token:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-from-entra", 4_102_444_800)


class _Server(BaseAdapter):
    """Answers each request with the next status (a 201 once the list runs out), recording what it got."""

    def __init__(self, statuses: list[int]) -> None:
        super().__init__()
        self.statuses, self.requests = statuses, []  # type: ignore[var-annotated]

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        response = requests.Response()
        response.status_code = self.statuses.pop(0) if self.statuses else 201
        response.headers.update({"ETag": '"0x8DC0FFEE"', "Last-Modified": "Thu, 03 Dec 2026 08:00:00 GMT",
                                 "x-ms-request-id": "r1", "Content-Length": "0"})
        if response.status_code >= 500:
            response.headers["x-ms-error-code"] = "ServerBusy"
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(b""), status=response.status_code,
                                            preload_content=False)
        response.request, response.url = request, request.url or ""
        return response

    def close(self) -> None:
        pass


def _client(server: _Server, token: _Token) -> BlobServiceClient:
    session = requests.Session()
    session.mount("https://", server)
    return BlobServiceClient("https://wharfdata.blob.core.windows.net", credential=token,
                             transport=RequestsTransport(session=session, session_owner=False),
                             retry_policy=LinearRetry(backoff=0, random_jitter_range=0, retry_total=2))


def test_put_blob_is_signed_by_a_bearer_token_credential() -> None:
    server, token = _Server([]), _Token()
    url, headers = put_blob(_client(server, token), "inbound", "acme/2026/12/03/t1/orders.csv", b"a,b\n",
                            metadata={"sha256": "ab", "job_id": "job-1"}, content_type="text/csv")
    [sent] = server.requests
    assert sent.headers["Authorization"] == "Bearer token-from-entra"
    assert token.scopes == [("https://storage.azure.com/.default",)]
    assert sent.method == "PUT" and url == "https://wharfdata.blob.core.windows.net/inbound/acme/2026/12/03/t1/orders.csv"
    assert (sent.headers["x-ms-blob-type"], sent.headers["x-ms-blob-content-type"]) == ("BlockBlob", "text/csv")
    assert (sent.headers["x-ms-meta-sha256"], sent.headers["x-ms-meta-job_id"]) == ("ab", "job-1")
    assert sent.body == b"a,b\n" and "If-None-Match" not in sent.headers
    assert headers["etag"] == '"0x8DC0FFEE"' and headers["last_modified"].year == 2026


def test_put_blob_is_retried_by_the_clients_retry_policy() -> None:
    server = _Server([503, 500])
    _, headers = put_blob(_client(server, _Token()), "inbound", "f.csv", b"x", metadata={}, overwrite=False)
    assert len(server.requests) == 3 and all(r.body == b"x" for r in server.requests)
    assert all(r.headers["If-None-Match"] == "*" for r in server.requests)  # create-if-absent on every try
    assert headers["etag"] == '"0x8DC0FFEE"'


def test_a_one_block_upload_stream_takes_the_lean_put() -> None:
    server = _Server([])
    store = BlobStoreClient(_client(server, _Token()))
    info = store.upload_stream("inbound", "acme/small.csv", iter([b"a" * 10, b"b" * 10]), metadata={"k": "v"})
    [sent] = server.requests
    assert sent.body == b"a" * 10 + b"b" * 10 and sent.headers["x-ms-meta-sha256"] == info.sha256
    assert info.url == "https://wharfdata.blob.core.windows.net/inbound/acme/small.csv" and info.size == 20
