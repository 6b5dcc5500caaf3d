"""Shared fixtures: Azurite, unique names per test, Services wired to real storage, the private sshd."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from shared.bootstrap import Services, build_services
from shared.settings import Settings, azurite_connection_string
from tests.integration.sshd_server import private_sshd, sshd_server  # noqa: F401 (fixtures)


def unique(prefix: str = "t") -> str:
    """A name no other test (or run) uses: letters and digits only, valid for tables, queues, containers."""
    return f"{prefix}{uuid.uuid4().hex}"


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def azurite() -> str:
    """The local Azurite's connection string. Fails (never skips) when Azurite is not running."""
    conn = azurite_connection_string()
    endpoints = [part.split("=", 1)[1] for part in conn.split(";") if part.endswith("/devstoreaccount1")]
    down = [url for url in endpoints if not _reachable(url)]
    if down:
        pytest.fail(f"Azurite is not reachable at {', '.join(down)}: start it (scripts/stack.sh start, or "
                    "node_modules/.bin/azurite --silent --skipApiVersionCheck --loose --location /tmp/azurite)",
                    pytrace=False)
    return conn


#: Containers the app's blob triggers watch: whatever a test leaves there, `make run` later makes a job of.
WATCHED_CONTAINERS = ("drop", "outbound")


def _watched_blobs() -> dict[str, str] | None:
    """Name -> ETag of every blob in the watched containers of the local Azurite; None when it is not up."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    conn = azurite_connection_string()
    endpoint = next(part.split("=", 1)[1] for part in conn.split(";") if part.startswith("BlobEndpoint="))
    if not _reachable(endpoint):
        return None
    service = BlobServiceClient.from_connection_string(conn)
    found: dict[str, str] = {}
    for name in WATCHED_CONTAINERS:
        try:
            found.update({f"{name}/{b.name}": str(b.etag) for b in service.get_container_client(name).list_blobs()})
        except ResourceNotFoundError:
            continue
        except AzureError:
            return None
    return found


@pytest.fixture(scope="session", autouse=True)
def nothing_left_where_devhost_watches() -> Iterator[None]:
    """Fails the run when it added (or rewrote) blobs in a container devhost's blob triggers watch (drop/,
    outbound/):
    tests drop files into containers of their own (tests/e2e/conftest.py, tests/integration/test_drop_intake.py)."""
    before = _watched_blobs()
    yield
    if before is None:
        return
    after = _watched_blobs() or {}
    left = sorted(name for name, etag in after.items() if before.get(name) != etag)
    if left:
        pytest.fail(f"the test run left {len(left)} blob(s) where `make run` would process them: "
                    f"{', '.join(left[:10])}; tests must use a container of their own (see tests/conftest.py)",
                    pytrace=False)


@pytest.fixture
def table_prefix() -> str:
    """A WHARF_TABLE_PREFIX for one test: its tables are its own."""
    return unique("t")


@pytest.fixture
def test_settings(azurite: str, table_prefix: str) -> Settings:
    """Settings for real Azurite with this test's own tables and queues (containers are shared; tests
    write under unique partner ids / paths)."""
    tag = uuid.uuid4().hex[:16]
    return Settings(AzureWebJobsStorage=azurite, WHARF_TABLE_PREFIX=table_prefix, POLL_QUEUE=f"poll-{tag}",
                    LANDED_QUEUE=f"landed-{tag}", WHARF_EVENTS_QUEUE=f"events-{tag}",
                    TRANSFER_QUEUE=f"transfer-{tag}", REDELIVERY_QUEUE=f"redeliver-{tag}")


@pytest.fixture
def services(test_settings: Settings) -> Iterator[Services]:
    """Real adapters against Azurite, resources created. Override the catalogue with
    `services.overrides["catalog"] = ...` (and anything else before its first use)."""
    svc = build_services(test_settings)
    svc.ensure_resources()
    yield svc
    from azure.core.exceptions import AzureError
    from azure.storage.queue import QueueServiceClient

    from tests.table_stores import drop_tables

    conn = test_settings.storage_connection_string or ""
    queues = QueueServiceClient.from_connection_string(conn)
    try:  # best effort: cleanup must not hide the test's own outcome
        for name in svc.queue_names():
            queues.delete_queue(name)
        drop_tables(conn, test_settings.table_prefix)
    except AzureError:
        pass
