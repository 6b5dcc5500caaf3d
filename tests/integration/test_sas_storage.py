"""Storage through an account SAS connection string (Azurite): every adapter works, and no URL a BlobInfo
carries (recorded in job events, published in `file.processed`) holds the SAS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import AccountSasPermissions, BlobServiceClient, ResourceTypes, generate_account_sas
from azure.storage.blob import Services as SasServices

from shared.adapters.blobs import BlobStoreClient
from shared.adapters.ledger import LedgerClient
from shared.adapters.queues import QueueClientAdapter
from shared.adapters.tables import JobStoreClient
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.settings import AZURITE_ACCOUNT, AZURITE_KEY
from tests.integration.test_contracts import entry
from tests.table_stores import drop_tables

pytestmark = [pytest.mark.azurite]


def sas_connection_string(azurite: str) -> tuple[str, str]:
    """(connection string, SAS token): Azurite's endpoints with an account SAS for blob, queue and table, the
    way AzureWebJobsStorage may be set in Azure (`BlobEndpoint=...;SharedAccessSignature=...`)."""
    endpoints = dict(part.split("=", 1) for part in azurite.split(";") if part.endswith(f"/{AZURITE_ACCOUNT}"))
    sas = generate_account_sas(
        AZURITE_ACCOUNT, AZURITE_KEY, ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True, create=True, update=True,
                              process=True),
        expiry=datetime.now(UTC) + timedelta(hours=2), services=SasServices.from_string("bqt"))
    conn = (f"BlobEndpoint={endpoints['BlobEndpoint']};QueueEndpoint={endpoints['QueueEndpoint']};"
            f"TableEndpoint={endpoints['TableEndpoint']};SharedAccessSignature={sas}")
    return conn, sas


def test_blobs_through_a_sas_give_urls_without_it_and_still_copy(azurite: str) -> None:
    conn, sas = sas_connection_string(azurite)
    container = f"sas{uuid.uuid4().hex[:20]}"
    store = BlobStoreClient.from_connection_string(conn, block_size=64 * 1024)
    store.ensure_containers([container])
    try:
        small = store.upload_stream(container, "a/small.csv", [b"abc"])
        large = store.upload_stream(container, "a/large.csv", [b"x" * 200_000])  # staged blocks
        info = store.get_info(container, "a/small.csv")
        # Copy Blob authorises its source with the client's own (SAS) URL: the stripped URLs are never needed.
        copied = store.copy(container, "a/small.csv", container, "b/copy.csv", source_etag=info.etag)
        urls = [small.url, large.url, info.url, copied.url]
        assert all("?" not in url and "sig=" not in url for url in urls), urls
        assert small.url.endswith(f"/{container}/a/small.csv") and copied.sha256 == small.sha256
        assert b"".join(store.open_read(container, "b/copy.csv")) == b"abc"
        assert all(sas not in str(b) for b in store.list_blobs(container, "a/"))
    finally:
        BlobServiceClient.from_connection_string(conn).delete_container(container)


def test_tables_and_queues_through_a_sas(azurite: str) -> None:
    conn, _ = sas_connection_string(azurite)
    prefix = f"sas{uuid.uuid4().hex[:16]}"
    jobs = JobStoreClient.from_connection_string(conn, prefix=prefix)
    ledger = LedgerClient.from_connection_string(conn, prefix=prefix)
    queues = QueueClientAdapter.from_connection_string(conn)
    queue = f"q{prefix}"
    try:
        jobs.ensure_tables()
        job_id = new_job_id()
        jobs.append(job_id, EventType.CREATED, {"partner": "acme", "job_type": "UPLOAD", "file_name": "a.csv"})
        assert jobs.get_job(job_id).file_name == "a.csv"
        stored = ledger.create(entry())
        assert ledger.get(stored.partner, stored.key).job_id == stored.job_id
        queues.ensure_queues([queue])
        queues.send(queue, {"job_id": job_id})
        assert queues.peek(queue)[0]["job_id"] == job_id
    finally:
        drop_tables(conn, prefix)
        queues._service.delete_queue(queue)
