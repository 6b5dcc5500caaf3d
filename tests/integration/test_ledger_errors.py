"""The ledger adapter against Azurite: a refused table transaction says what happened, not "another instance"."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient

from shared.adapters.ledger import LedgerClient, LedgerStorageError
from shared.domain.errors import ConflictError, WharfError
from shared.domain.ledger import LedgerState
from tests.integration.test_contracts import entry

pytestmark = pytest.mark.azurite


@pytest.fixture
def ledger(azurite: str) -> Iterator[LedgerClient]:
    client = LedgerClient.from_connection_string(azurite, prefix=f"t{uuid.uuid4().hex}")
    client.ensure_table()
    yield client
    TableServiceClient.from_connection_string(azurite).delete_table(client.table_name)


def test_a_batch_with_an_entity_the_service_refuses_is_a_storage_error_naming_status_and_code(
        ledger: LedgerClient) -> None:
    too_big = entry(n=2, owner="x" * 40_000)  # a string property past the service's 64 KiB
    with pytest.raises(LedgerStorageError) as caught:
        ledger.create_many([entry(n=1), too_big])
    error = caught.value
    assert not isinstance(error, ConflictError | WharfError) and isinstance(error, AzureError)
    assert "another instance" not in str(error)
    assert error.status_code == 400 and error.error_code == "PropertyValueTooLarge"
    assert str(error).startswith("ledger batch of 2 for acme: table storage refused it: HTTP 400 "
                                 "PropertyValueTooLarge at entry 2: The property value exceeds the maximum")
    assert ledger.entries("acme") == []  # the transaction did nothing


def test_a_batch_update_with_a_refused_entity_is_a_storage_error_too(ledger: LedgerClient) -> None:
    stored = ledger.create_many([entry(n=1), entry(n=2)])
    changed = [replace(stored[0], state=LedgerState.LANDED), replace(stored[1], owner="y" * 40_000)]
    with pytest.raises(LedgerStorageError, match=r"ledger batch update of 2 for acme: .*HTTP 400 "
                                                  r"PropertyValueTooLarge at entry 2"):
        ledger.update_many(changed)


def test_a_real_race_is_still_a_conflict(ledger: LedgerClient) -> None:
    first = ledger.create(entry(n=1))
    with pytest.raises(ConflictError, match="another instance wrote first"):
        ledger.create_many([entry(n=3), entry(n=1)])
    moved = ledger.update(replace(first, state=LedgerState.LANDED))
    assert moved.etag != first.etag
    with pytest.raises(ConflictError, match="another instance wrote first"):
        ledger.update_many([replace(first, state=LedgerState.DONE)])  # the stale etag: 412
