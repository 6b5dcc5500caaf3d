"""Table-backed stores for contract tests: the fake, or the real adapter over tables of its own in Azurite (deleted
afterwards). For fixtures parametrized ``["fake", "azurite"]``: ``yield from job_store(request)``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from azure.data.tables import TableServiceClient

from shared.adapters.ledger import _TablesAdapter
from shared.adapters.tables import JobStoreClient
from shared.ports import JobStore
from shared.resources import TABLES
from tests.fakes import FakeJobStore


def table_prefix() -> str:
    """A WHARF_TABLE_PREFIX no other test (or run) uses."""
    return f"t{uuid.uuid4().hex}"


def drop_tables(conn: str, prefix: str, names: Iterable[str] = TABLES) -> None:
    """Delete the prefixed tables (those of Wharf's list by default); a table that is not there is no error."""
    service = TableServiceClient.from_connection_string(conn)
    for name in names:
        service.delete_table(f"{prefix}{name}")


def job_store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    """FakeJobStore, or JobStoreClient over every Wharf table under a prefix of its own."""
    if request.param == "fake":
        yield FakeJobStore()
        return
    conn = request.getfixturevalue("azurite")
    prefix = table_prefix()
    store = JobStoreClient.from_connection_string(conn, prefix=prefix)
    store.ensure_tables()
    yield store
    drop_tables(conn, prefix)


def table_store(request: pytest.FixtureRequest, fake: Callable[[], Any],
                adapter: type[_TablesAdapter]) -> Iterator[Any]:
    """The fake, or the one-table adapter (ledger, breakers, SLA windows, ...) over a table of its own."""
    if request.param == "fake":
        yield fake()
        return
    conn = request.getfixturevalue("azurite")
    client = adapter.from_connection_string(conn, prefix=table_prefix())
    client.ensure_table()
    yield client
    TableServiceClient.from_connection_string(conn).delete_table(client.table_name)
