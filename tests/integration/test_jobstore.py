"""JobStore against real Azurite: events, projection, concurrency, rebuild, transfers, logs."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.data.tables import TableClient

from shared.adapters import table_batch
from shared.adapters.tables import MAX_BATCH, MAX_BATCH_BYTES, JobStoreClient, _row_bytes
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.ids import job_partition, new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobStatus, LogLevel, NewEvent, NewJob, NewLog
from shared.observability import setup
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
    partition, prefix = job_partition(job_id)
    store._table("JobEvents").create_entity({"PartitionKey": partition, "RowKey": f"{prefix}-{1:010d}",
                                             "JobId": job_id, "Type": "job.started", "At": datetime.now(UTC),
                                             "Data": "{}"})
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


# --- keys and bulk creation ------------------------------------------------------------------------


def _new_job(now: datetime, i: int, partner: str = "acme", note: str = "") -> NewJob:
    job_id = new_job_id(now)
    transfer = FileTransfer(job_id=job_id, transfer_id=new_transfer_id(now), file_name=f"f{i}.csv",
                            source=f"sftp://h/out/f{i}.csv", destination=f"inbound/{partner}/f{i}.csv",
                            status="LANDED", transfer_date=now, bytes=i, sha256="ab")
    return NewJob(job_id=job_id, transfers=[transfer],
                  events=[NewEvent(type=EventType.CREATED, data={"partner": partner, "job_type": "SFTP_INGEST",
                                                                 "file_name": f"f{i}.csv"}),
                          NewEvent(type=EventType.FILE_LANDED, data={"blob_path": transfer.destination, "bytes": i,
                                                                     "note": note})],
                  logs=[NewLog(level=LogLevel.INFO, message=f"landed f{i}.csv")])


class _Calls:
    """Counts the storage calls made through TableClient (per method and table), and each transaction's size."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: JobStoreClient) -> None:
        self._prefix = store.table_name("")
        self.calls: Counter[tuple[str, str]] = Counter()
        self.transactions: list[tuple[str, int, int]] = []  # (table, operations, estimated bytes)
        for name in ("submit_transaction", "create_entity", "upsert_entity", "update_entity", "get_entity",
                     "query_entities", "list_entities", "delete_entity"):
            monkeypatch.setattr(TableClient, name, self._wrap(name, getattr(TableClient, name)))
        # The adapter's transactions take the lean `$batch` body (the SDK's submit_transaction only as a fallback).
        lean = self._wrap("submit_transaction", table_batch.submit_transaction)
        monkeypatch.setattr(table_batch, "submit_transaction", lambda table, ops: lean(table, ops))

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(client: TableClient, *args: Any, **kwargs: Any) -> Any:
            table = client.table_name.removeprefix(self._prefix)
            self.calls[(name, table)] += 1
            if name == "submit_transaction":
                ops = list(args[0])
                self.transactions.append((table, len(ops), sum(_row_bytes(op[1]) for op in ops)))
                args = (ops, *args[1:])
            return method(client, *args, **kwargs)
        return counted

    def total(self, name: str | None = None) -> int:
        return sum(n for (method, _), n in self.calls.items() if name in (None, method))


def test_rows_are_keyed_by_the_job_partition(store: JobStoreClient) -> None:
    job_id = _created(store)
    store.append(job_id, EventType.STARTED)
    store.add_transfer(FileTransfer(job_id=job_id, transfer_id="tr-1", file_name="a.csv", source="s",
                                    destination="d", status="LANDED", transfer_date=datetime.now(UTC)))
    store.log(job_id, "INFO", "hello")
    partition, prefix = job_partition(job_id)
    assert partition.startswith("job-") and len(prefix) == 12 and job_id == f"{partition}-{prefix}"
    rows = {name: list(store._table(name).list_entities()) for name in ("JobEvents", "FileTransfer", "IntegrationLog")}
    assert [(r["PartitionKey"], r["RowKey"], r["JobId"]) for r in rows["JobEvents"]] == [
        (partition, f"{prefix}-0000000000", job_id), (partition, f"{prefix}-0000000001", job_id)]
    assert [(r["PartitionKey"], r["RowKey"], r["JobId"]) for r in rows["FileTransfer"]] == [
        (partition, f"{prefix}-tr-1", job_id)]
    [log] = rows["IntegrationLog"]
    assert (log["PartitionKey"], log["JobId"]) == (partition, job_id) and log["RowKey"].startswith(f"{prefix}-")
    assert store.transfers(job_id)[0].transfer_id == "tr-1"


def test_jobs_sharing_a_partition_keep_their_rows_apart(store: JobStoreClient) -> None:
    now = datetime.now(UTC)
    a, b = new_job_id(now), new_job_id(now)
    plain = job_partition(a)[0]  # an id without a prefix: its partition is the one a and b share
    for job_id in (a, b, plain):
        store.append(job_id, EventType.CREATED, {"partner": "acme"})
        store.log(job_id, "INFO", f"log of {job_id}")
    store.append(b, EventType.STARTED)
    assert [e.seq for e in store.events(a)] == [0] and [e.seq for e in store.events(b)] == [0, 1]
    assert [e.seq for e in store.events(plain)] == [0] and store.events(plain)[0].job_id == plain
    for job_id in (a, b, plain):
        assert [entry.message for entry in store.logs(job_id)] == [f"log of {job_id}"]
    assert store.get_job(b).status is JobStatus.RUNNING and store.get_job(plain).event_count == 1


def test_create_jobs_writes_a_shared_partition_in_a_few_transactions(store: JobStoreClient,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    batch = [_new_job(now, i) for i in range(100)]
    store._table("JobEvents")  # (clients are built once; counting starts with the requests)
    calls = _Calls(monkeypatch, store)
    otel = setup.for_tests()
    assert store.create_jobs(batch) == []
    # 200 events: 2 transactions; 100 transfers, 100 logs, 100 projections (one partner), 100 JobsByTime rows
    # (one creation month): 1 each.
    assert calls.total() == calls.total("submit_transaction") == 6, calls.calls
    assert sorted(t[:2] for t in calls.transactions) == [
        ("FileTransfer", 100), ("IntegrationJob", 100), ("IntegrationLog", 100), ("JobEvents", 100),
        ("JobEvents", 100), ("JobsByTime", 100)]
    span = otel.span("jobstore.create_jobs")
    assert span.attributes is not None
    assert (span.attributes["wharf.jobs"], span.attributes["wharf.existing"]) == (100, 0)
    assert store.get_job(batch[57].job_id).blob_path == "inbound/acme/f57.csv"

    # The same jobs again, one new: one failed transaction, then one per job of that run (none is written).
    calls.calls.clear()
    fresh = _new_job(now, 100)
    assert store.create_jobs([*batch[:40], fresh]) == [j.job_id for j in batch[:40]]
    assert calls.total() == calls.total("submit_transaction") == 1 + 41 + 4, calls.calls
    assert otel.spans_named("jobstore.create_jobs")[-1].attributes == {"wharf.jobs": 41, "wharf.existing": 40}
    assert store.get_job(fresh.job_id).event_count == 2 and len(store.logs(batch[0].job_id)) == 1


def test_create_jobs_splits_transactions_by_size(store: JobStoreClient, monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    batch = [_new_job(now, i, note='"' * 14_000) for i in range(80)]  # each ~29 KB once escaped twice
    calls = _Calls(monkeypatch, store)
    assert store.create_jobs(batch) == []
    events = [t for t in calls.transactions if t[0] == "JobEvents"]
    assert len(events) >= 2 and sum(t[1] for t in events) == 160
    assert all(ops <= MAX_BATCH and size <= MAX_BATCH_BYTES for _, ops, size in calls.transactions)
    assert all(ops % 2 == 0 for _, ops, _ in events)  # a job's events never span two transactions
    assert store.events(batch[79].job_id)[1].data["note"] == '"' * 14_000


def test_create_jobs_per_partition_and_partner(store: JobStoreClient, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    batch = [_new_job(first if i % 2 else second, i, "acme" if i < 10 else "globex") for i in range(20)]
    calls = _Calls(monkeypatch, store)
    assert store.create_jobs(batch) == []
    by_table = Counter(t[0] for t in calls.transactions)
    # JobsByTime: one transaction, the jobs being created now (one creation month).
    assert by_table == {"JobEvents": 2, "FileTransfer": 2, "IntegrationLog": 2, "IntegrationJob": 2, "JobsByTime": 1}
    assert calls.total() == 9


def test_rebuild_finds_jobs_created_in_bulk(store: JobStoreClient) -> None:
    now = datetime.now(UTC)
    batch = [_new_job(now, i, "acme" if i % 2 else "globex") for i in range(30)]
    store.create_jobs(batch)
    single = _created(store)
    store.append(batch[3].job_id, EventType.COMPLETED)
    before = {j.job_id: j for j in store.list_jobs(limit=100)}
    store._service.delete_table(store.table_name("IntegrationJob"))
    store.ensure_tables()
    assert store.rebuild() == 31
    assert {j.job_id: j for j in store.list_jobs(limit=100)} == before
    assert before[batch[3].job_id].status is JobStatus.COMPLETED and single in before


def test_table_clients_are_built_once(store: JobStoreClient) -> None:
    assert store._table("JobEvents") is store._table("JobEvents")
    assert store._table("JobEvents") is not store._table("IntegrationLog")
