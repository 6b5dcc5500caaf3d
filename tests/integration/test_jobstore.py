"""JobStore against real Azurite: events, projection, concurrency, rebuild, transfers, logs."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import pytest

from shared.adapters.tables import JobStoreClient
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.ids import new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobStatus
from shared.settings import azurite_connection_string

pytestmark = pytest.mark.azurite


@pytest.fixture
def store() -> JobStoreClient:
    s = JobStoreClient.from_connection_string(azurite_connection_string(), prefix=f"t{uuid.uuid4().hex[:10]}")
    s.ensure_tables()
    return s


def _created(store: JobStoreClient, partner: str = "acme") -> str:
    job_id = new_job_id()
    store.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "SFTP_INGEST",
                                             "source": "sftp://x/out/a.csv", "file_name": "a.csv"})
    return job_id


def test_append_updates_projection(store: JobStoreClient) -> None:
    job_id = _created(store)
    store.append(job_id, EventType.FILE_LANDED, {"blob_path": "inbound/acme/a.csv", "bytes": 42, "sha256": "ab"})
    store.append(job_id, EventType.STARTED)
    store.append(job_id, EventType.STEP_COMPLETED, {"step": "validate", "counts": {"rows": 7}})
    job = store.get_job(job_id)
    assert job.status is JobStatus.RUNNING
    assert (job.bytes, job.blob_path, job.counts, job.steps_completed) == (42, "inbound/acme/a.csv",
                                                                         {"rows": 7}, ["validate"])
    store.append(job_id, EventType.FAILED, {"reason": "column amount: not a decimal"})
    job = store.get_job(job_id)
    assert job.status is JobStatus.FAILED and job.error == "column amount: not a decimal"
    assert [e.seq for e in store.events(job_id)] == [0, 1, 2, 3, 4]
    assert job.event_count == 5


def test_second_create_is_a_conflict(store: JobStoreClient) -> None:
    job_id = _created(store)
    with pytest.raises(ConflictError):
        store.append(job_id, EventType.CREATED, {"partner": "acme"})


def test_unknown_job_is_not_found(store: JobStoreClient) -> None:
    with pytest.raises(NotFoundError):
        store.get_job("job-nope")
    with pytest.raises(NotFoundError):
        store.append("job-nope", EventType.STARTED)


def test_concurrent_appends_keep_every_event(store: JobStoreClient) -> None:
    job_id = _created(store)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        other = JobStoreClient.from_connection_string(azurite_connection_string(), prefix=store.table_name(""))
        for i in range(5):
            try:
                other.append(job_id, EventType.NOTE, {"message": f"w{n}-{i}"})
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = store.events(job_id)
    assert [e.seq for e in events] == list(range(21))
    assert sorted(e.data["message"] for e in events[1:]) == sorted(f"w{n}-{i}" for n in range(4) for i in range(5))
    assert store.get_job(job_id).event_count == 21


def test_projection_is_rebuilt_from_events(store: JobStoreClient) -> None:
    a = _created(store, "acme")
    b = _created(store, "globex")
    store.append(a, EventType.COMPLETED)
    store.append(b, EventType.FAILED, {"reason": "no route"})
    before = {j.job_id: j for j in store.list_jobs()}
    # Lose the projection entirely, as after a bad deploy or a manual delete.
    store._service.delete_table(store.table_name("IntegrationJob"))
    store.ensure_tables()
    assert store.list_jobs() == []
    assert store.rebuild() == 2
    after = {j.job_id: j for j in store.list_jobs()}
    assert after == before
    assert after[b].status is JobStatus.FAILED and after[b].error == "no route"


def test_append_repairs_a_lagging_projection(store: JobStoreClient) -> None:
    job_id = _created(store)
    # A crash after the event insert but before the projection update leaves the projection behind.
    store._table("JobEvents").create_entity({"PartitionKey": job_id, "RowKey": f"{1:010d}", "Type": "job.started",
                                             "At": datetime.now(UTC), "Data": "{}"})
    store.append(job_id, EventType.COMPLETED)
    assert [e.type for e in store.events(job_id)] == [EventType.CREATED, EventType.STARTED, EventType.COMPLETED]
    assert store.get_job(job_id).status is JobStatus.COMPLETED


def test_list_filters_and_orders_newest_first(store: JobStoreClient) -> None:
    ids = [_created(store, "acme") for _ in range(3)]
    other = _created(store, "globex")
    store.append(ids[1], EventType.COMPLETED)
    assert [j.job_id for j in store.list_jobs(partner="acme")] == list(reversed(ids))
    assert [j.job_id for j in store.list_jobs(status="COMPLETED")] == [ids[1]]
    assert [j.job_id for j in store.list_jobs(limit=2)] == [other, ids[2]]


def test_transfers_and_logs(store: JobStoreClient) -> None:
    job_id = _created(store)
    tr = FileTransfer(job_id=job_id, transfer_id=new_transfer_id(), file_name="a.csv", source="sftp://h/out/a.csv",
                      destination="inbound/acme/a.csv", status="LANDED", transfer_date=datetime.now(UTC),
                      bytes=10, sha256="00ff")
    store.add_transfer(tr)
    store.add_transfer(tr)  # idempotent on (job, transfer)
    assert store.transfers(job_id) == [tr]
    store.log(job_id, "INFO", "first")
    store.log(job_id, "ERROR", "second", trace_id="abc")
    logs = store.logs(job_id)
    assert [(entry.level.value, entry.message, entry.trace_id) for entry in logs] == [
        ("INFO", "first", ""), ("ERROR", "second", "abc")]


def test_oversized_event_data_is_refused(store: JobStoreClient) -> None:
    job_id = _created(store)
    with pytest.raises(ValueError, match="store large data in a blob"):
        store.append(job_id, EventType.NOTE, {"message": "x" * 40_000})
