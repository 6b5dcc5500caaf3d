"""`table_batch.entity_json` gives the SDK's `_add_entity_properties` output exactly: for every row the landing
path writes, and for the values it hands back to the SDK."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import pytest
from azure.data.tables import EdmType, EntityProperty
from azure.data.tables._serialize import _add_entity_properties

from shared.adapters.ledger import _ledger_entity
from shared.adapters.table_batch import entity_json
from shared.adapters.tables import _event_entity, _index_entity, _job_to_entity, _log_entity, _transfer_entity
from shared.domain.ids import new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobEvent, project
from shared.domain.ledger import LedgerEntry, LedgerState, ledger_key

AT = datetime(2026, 12, 3, 8, 30, 5, 123456, tzinfo=UTC)


def _same(entity: dict[str, Any]) -> None:
    # Byte for byte: the same keys, values and order in the JSON body.
    assert json.dumps(entity_json(entity)) == json.dumps(_add_entity_properties(entity))


def test_every_row_of_the_landing_path_is_converted_as_the_sdk_converts_it() -> None:
    job_id = new_job_id(AT)
    path = "/out/f\udce9 'x'.csv"
    _same(_ledger_entity(LedgerEntry(
        partner="acme", key=ledger_key("sftp", path, 5 * 2**31, 1_700_000_000), channel="sftp", path=path,
        size=5 * 2**31, mtime=1_700_000_000, state=LedgerState.CLAIMED, owner="host:1:abc", claimed_at=AT,
        job_id=job_id, transfer_id=new_transfer_id(AT), container="inbound", blob_path="acme/2026/12/03/t/f.csv",
        error="boom \"quoted\" é")))
    created = {"partner": "acme", "job_type": "SFTP_INGEST", "source": "sftp://h:22/out/f.csv", "file_name": "f.csv"}
    job = project([JobEvent(job_id=job_id, seq=0, type=EventType.CREATED, at=AT, data=created),
                   JobEvent(job_id=job_id, seq=1, type=EventType.FILE_LANDED, at=AT + timedelta(microseconds=1),
                            data={"blob_path": "inbound/acme/f.csv", "bytes": 10240, "sha256": "ab" * 32})])
    _same(_job_to_entity(job))
    _same(_index_entity(job))
    _same(_event_entity(job_id, 1, EventType.FILE_LANDED, AT, json.dumps(created)))
    _same(_transfer_entity(FileTransfer(job_id=job_id, transfer_id=new_transfer_id(AT), file_name="f.csv",
                                        source="sftp://h:22/out/f.csv", destination="inbound/acme/f.csv",
                                        status="LANDED", transfer_date=AT, bytes=10240, sha256="ab" * 32)))
    _same(_log_entity(job_id, "INFO", "landed f.csv 𝄞", "0" * 32, AT, 1_764_750_605_123_456_789))


class _Colour(Enum):
    RED = "red"


@pytest.mark.parametrize("value", [
    None, "", True, False, 0, 2**31 - 1, -(2**31),
    datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),  # converted to UTC
    datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC),
    EntityProperty(2**63 - 1, EdmType.INT64), EntityProperty(-(2**63), EdmType.INT64),
    # handed to the SDK:
    1.5, float("nan"), b"bytes", _Colour.RED, datetime(2026, 1, 2, 3, 4, 5),
    datetime(999, 1, 1, tzinfo=UTC), EntityProperty(7, EdmType.INT32), EntityProperty("9", "Edm.Int64"),
    EntityProperty(None, EdmType.INT64),
])
def test_each_kind_of_value_matches_the_sdk(value: Any) -> None:
    _same({"PartitionKey": "p", "RowKey": "r", "Before": "x", "Value": value, "After": 1})


@pytest.mark.parametrize("value", [2**31, 2**63, EntityProperty(2**63, EdmType.INT64)])
def test_a_value_the_sdk_refuses_is_refused(value: Any) -> None:
    with pytest.raises(TypeError):
        _add_entity_properties({"V": value})
    with pytest.raises(TypeError):
        entity_json({"V": value})
