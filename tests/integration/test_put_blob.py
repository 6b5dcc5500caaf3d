"""The blob adapter's lean Put Blob (`shared.adapters.blobs.put_blob`) against Azurite: it writes the blob the
SDK's `upload_blob` writes, fails with the SDK's errors, and goes through the client's own pipeline."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from shared.adapters.blobs import put_blob
from shared.settings import AZURITE_ACCOUNT, AZURITE_KEY

pytestmark = [pytest.mark.azurite]


@pytest.fixture
def service(azurite: str) -> Iterator[tuple[BlobServiceClient, str]]:
    client = BlobServiceClient.from_connection_string(azurite)
    container = f"put{uuid.uuid4().hex[:20]}"
    client.create_container(container)
    yield client, container
    client.delete_container(container)


@pytest.mark.parametrize(("data", "content_type"), [(b"a,b\n1,2\n" * 1000, "text/csv"), (b"", None),
                                                     (bytes(range(256)) * 40, None)])
def test_lean_put_writes_what_upload_blob_writes(service: tuple[BlobServiceClient, str], data: bytes,
                                                 content_type: str | None) -> None:
    client, container = service
    meta = {"sha256": hashlib.sha256(data).hexdigest(), "original_name": "r%C3%A9sum%C3%A9.csv", "partner": "acme"}
    sdk = client.get_blob_client(container, "sdk/ä b#1.csv")
    sdk.upload_blob(data, overwrite=True, metadata=meta, length=len(data),
                    content_settings=ContentSettings(content_type=content_type) if content_type else None)
    url, headers = put_blob(client, container, "lean/ä b#1.csv", data, metadata=meta, content_type=content_type)

    lean = client.get_blob_client(container, "lean/ä b#1.csv")
    assert url == lean.url  # the same encoding of the path as the SDK's own client
    ours, theirs = lean.get_blob_properties(), sdk.get_blob_properties()
    assert (ours.size, ours.blob_type, ours.metadata, ours.content_settings.content_type,
            ours.content_settings.content_md5) == (theirs.size, theirs.blob_type, theirs.metadata,
                                                   theirs.content_settings.content_type,
                                                   theirs.content_settings.content_md5)
    assert ours.size == len(data) and ours.metadata == meta
    assert (headers["etag"], headers["last_modified"]) == (ours.etag, ours.last_modified)
    assert lean.download_blob().readall() == data


def test_lean_put_fails_as_upload_blob_fails(service: tuple[BlobServiceClient, str], azurite: str) -> None:
    client, container = service
    put_blob(client, container, "taken", b"first", metadata={})
    with pytest.raises(ResourceExistsError) as sdk:
        client.get_blob_client(container, "taken").upload_blob(b"second", overwrite=False)
    with pytest.raises(ResourceExistsError) as lean:
        put_blob(client, container, "taken", b"second", metadata={}, overwrite=False)
    assert lean.value.error_code == sdk.value.error_code == "BlobAlreadyExists"
    assert client.get_blob_client(container, "taken").download_blob().readall() == b"first"  # not replaced

    missing = f"gone{uuid.uuid4().hex[:16]}"
    with pytest.raises(ResourceNotFoundError) as not_found:
        put_blob(client, missing, "x", b"x", metadata={})
    assert not_found.value.error_code == "ContainerNotFound"

    wrong_key = azurite.replace(AZURITE_KEY, "d3Jvbmcta2V5LW9mLXRoZS1yaWdodC1sZW5ndGgtZm9yLWF6dXJpdGUtc2hhcmVkLWtleQ==")
    assert wrong_key != azurite
    stranger = BlobServiceClient.from_connection_string(wrong_key)
    with pytest.raises(HttpResponseError) as sdk_auth:
        stranger.get_blob_client(container, "denied").upload_blob(b"x")
    with pytest.raises(HttpResponseError) as lean_auth:
        put_blob(stranger, container, "denied", b"x", metadata={})
    assert type(lean_auth.value) is type(sdk_auth.value)
    assert (lean_auth.value.status_code, lean_auth.value.error_code) == (403, sdk_auth.value.error_code)
    assert not client.get_blob_client(container, "denied").exists()


def test_lean_put_goes_through_the_clients_own_pipeline(azurite: str) -> None:
    seen: list[Any] = []
    client = BlobServiceClient.from_connection_string(azurite, raw_request_hook=lambda r: seen.append(r))
    container = f"put{uuid.uuid4().hex[:20]}"
    client.create_container(container)
    try:
        seen.clear()
        put_blob(client, container, "hooked.csv", b"abc", metadata={"k": "v"})
        [request] = [r.http_request for r in seen]
        headers = request.headers
        assert request.method == "PUT" and headers["x-ms-blob-type"] == "BlockBlob"
        assert headers["Authorization"].startswith(f"SharedKey {AZURITE_ACCOUNT}:")  # the client's credential
        assert headers["x-ms-date"] and headers["x-ms-client-request-id"] and headers["x-ms-meta-k"] == "v"
        assert "azsdk-python-storage-blob" in headers["User-Agent"]
    finally:
        client.delete_container(container)
