"""The same contract, run against each fake and its real adapter (Azurite): fakes that pass it are safe
to use in service tests. Ledger, Breakers, BlobStore, JobStore (events, projection, rebuild, transfers,
logs), MessageQueue, and FileSource (against the private OpenSSH server)."""

from __future__ import annotations

import errno
import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import UpdateMode
from azure.storage.blob import BlobServiceClient

from shared.adapters.blobs import BlobStoreClient
from shared.adapters.deliveries import DeliveriesClient
from shared.adapters.ledger import BreakersClient, LedgerClient
from shared.adapters.queues import QueueClientAdapter
from shared.adapters.tables import JobStoreClient, _job_to_entity
from shared.domain.delivery import Delivery, DeliveryState, DeliveryStep
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.ids import job_partition, new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobStatus, LogLevel, NewEvent, NewJob, NewLog, project
from shared.domain.ledger import BreakerRecord, BreakerState, LedgerEntry, LedgerState, ledger_key
from shared.domain.remote import RemoteFileError
from shared.ports import BlobStore, Breakers, Deliveries, FileSink, FileSource, JobStore, Ledger, MessageQueue
from tests.fakes import (
    FakeBlobStore,
    FakeBreakers,
    FakeDeliveries,
    FakeFileSource,
    FakeJobStore,
    FakeLedger,
    FakeMessageQueue,
    FakeSftpServer,
)
from tests.table_stores import job_store, table_store

KINDS = ["fake", "azurite"]
GIB = 1024**3
BLOB_BLOCK = 64 * 1024  # small blocks: the adapter's multi-block path runs on small test data


@pytest.fixture(params=KINDS)
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    yield from table_store(request, FakeLedger, LedgerClient)


@pytest.fixture(params=KINDS)
def breakers(request: pytest.FixtureRequest) -> Iterator[Breakers]:
    yield from table_store(request, FakeBreakers, BreakersClient)


@pytest.fixture(params=KINDS)
def blobs(request: pytest.FixtureRequest) -> Iterator[tuple[BlobStore, str]]:
    container = f"c{uuid.uuid4().hex[:20]}"
    if request.param == "fake":
        store = FakeBlobStore(containers=[])
        store.ensure_containers([container])
        yield store, container
        return
    conn = request.getfixturevalue("azurite")
    real = BlobStoreClient.from_connection_string(conn, block_size=BLOB_BLOCK)
    real.ensure_containers([container])
    yield real, container
    BlobServiceClient.from_connection_string(conn).delete_container(container)


@pytest.fixture(params=KINDS)
def jobs(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    yield from job_store(request)


@pytest.fixture(params=KINDS)
def queues(request: pytest.FixtureRequest) -> Iterator[tuple[MessageQueue, str]]:
    name = f"q{uuid.uuid4().hex[:20]}"
    if request.param == "fake":
        fake = FakeMessageQueue()
        fake.ensure_queues([name])
        yield fake, name
        return
    conn = request.getfixturevalue("azurite")
    real = QueueClientAdapter.from_connection_string(conn)
    real.ensure_queues([name])
    yield real, name
    real._service.delete_queue(name)


# --- Ledger ----------------------------------------------------------------------------------------


def entry(partner: str = "acme", n: int = 0, **kw: Any) -> LedgerEntry:
    path = kw.pop("path", f"/out/f{n}\udce9.csv")  # a non-UTF-8 byte, as listings carry them
    size = kw.pop("size", 5 * GIB + n)  # past Int32
    values: dict[str, Any] = {
        "partner": partner, "key": ledger_key("sftp", path, size, 1_700_000_000), "channel": "sftp", "path": path,
        "size": size, "mtime": 1_700_000_000, "state": LedgerState.CLAIMED, "owner": "host:1:abc",
        "claimed_at": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "job_id": new_job_id(),
        "transfer_id": new_transfer_id(), "container": "inbound", "blob_path": f"{partner}/2025/01/02/tr/f{n}.csv"}
    values.update(kw)
    return LedgerEntry(**values)


def same(a: LedgerEntry, b: LedgerEntry) -> bool:
    return replace(a, etag="", updated_at=None) == replace(b, etag="", updated_at=None)


def test_ledger_create_is_insert_if_absent(ledger: Ledger) -> None:
    e = entry()
    stored = ledger.create(e)
    assert stored.etag and same(stored, e)
    assert same(ledger.get("acme", e.key), e) and ledger.get("acme", e.key).etag == stored.etag
    with pytest.raises(ConflictError):
        ledger.create(replace(e, owner="someone else"))
    assert ledger.get("acme", e.key).owner == "host:1:abc"


def test_ledger_get_of_a_missing_key_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(NotFoundError):
        ledger.get("acme", "0" * 64)
    assert ledger.get_many("acme", ["0" * 64]) == {}


def test_ledger_update_is_etag_conditional(ledger: Ledger) -> None:
    stored = ledger.create(entry())
    landed = ledger.update(replace(stored, state=LedgerState.LANDED, sha256="ab" * 32))
    assert landed.etag != stored.etag and ledger.get("acme", stored.key).state is LedgerState.LANDED
    with pytest.raises(ConflictError):
        ledger.update(replace(stored, state=LedgerState.DONE))  # stale etag: someone moved it
    with pytest.raises(NotFoundError):
        ledger.update(replace(entry(n=9), etag=landed.etag))
    with pytest.raises(ValueError, match="etag"):
        ledger.update(replace(stored, etag=""))


def test_ledger_only_one_of_racing_updates_wins(ledger: Ledger) -> None:
    stored = ledger.create(replace(entry(), claimed_at=datetime.now(UTC) - timedelta(hours=1)))
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def take_over(owner: str) -> None:
        barrier.wait(timeout=10)
        try:
            ledger.update(replace(stored, owner=owner, attempts=2))
            wins.append(owner)
        except ConflictError:
            pass

    threads = [threading.Thread(target=take_over, args=(f"o{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and ledger.get("acme", stored.key).owner == wins[0]


def test_ledger_batches_are_all_or_nothing(ledger: Ledger) -> None:
    batch = [entry(n=i) for i in range(20)]
    stored = ledger.create_many(batch)
    assert [s.key for s in stored] == [e.key for e in batch] and all(s.etag for s in stored)
    clash = [entry(n=i) for i in range(19, 25)]  # one key exists
    with pytest.raises(ConflictError):
        ledger.create_many(clash)
    assert set(ledger.get_many("acme", [e.key for e in clash])) == {clash[0].key}
    assert ledger.create_many([]) == []
    with pytest.raises(ValueError):
        ledger.create_many([entry(n=i) for i in range(101, 202)])
    with pytest.raises(ValueError):
        ledger.create_many([entry(n=300), entry("other", n=301)])


def test_ledger_batch_updates_are_etag_checked_all_or_nothing(ledger: Ledger) -> None:
    stored = ledger.create_many([entry(n=i) for i in range(30)])
    done = ledger.update_many([replace(e, state=LedgerState.DONE) for e in stored[:20]])
    assert all(d.etag and d.etag != s.etag for d, s in zip(done, stored, strict=False))
    assert len(ledger.entries("acme", state="DONE")) == 20
    stale = [replace(e, state=LedgerState.FAILED) for e in stored[15:25]]  # 15-19 moved since
    with pytest.raises(ConflictError):
        ledger.update_many(stale)
    assert len(ledger.entries("acme", state="FAILED")) == 0 and len(ledger.entries("acme", state="DONE")) == 20
    assert ledger.update_many([]) == []
    with pytest.raises(ValueError, match="etag"):
        ledger.update_many([replace(stored[29], etag="")])


def test_ledger_get_many_and_entries(ledger: Ledger) -> None:
    batch = [entry(n=i) for i in range(40)]
    ledger.create_many(batch)
    ledger.create(entry("other", n=0))
    wanted = [entry(n=i).key for i in range(0, 60, 2)]  # more than one query's worth of keys
    found = ledger.get_many("acme", wanted)
    assert set(found) == {e.key for e in batch[::2]}
    assert all(same(found[e.key], e) for e in batch[::2])
    first = ledger.get("acme", entry(n=0).key)
    ledger.update(replace(first, state=LedgerState.DONE))
    assert len(ledger.entries("acme")) == 40 and len(ledger.entries("other")) == 1
    assert [e.key for e in ledger.entries("acme", state="DONE")] == [first.key]


# --- Breakers --------------------------------------------------------------------------------------


def test_breaker_absent_is_closed(breakers: Breakers) -> None:
    record = breakers.get("sftp", "acme")
    assert (record.state, record.failures, record.etag) == (BreakerState.CLOSED, 0, "")


def test_breaker_save_is_insert_then_etag_conditional(breakers: Breakers) -> None:
    opened = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
    first = breakers.save(BreakerRecord("sftp", "acme", BreakerState.OPEN, 3, opened_at=opened, last_error="down"))
    assert first.etag
    read = breakers.get("sftp", "acme")
    assert (read.state, read.failures, read.opened_at, read.probe_at, read.last_error) == (
        BreakerState.OPEN, 3, opened, None, "down")
    with pytest.raises(ConflictError):
        breakers.save(BreakerRecord("sftp", "acme"))  # a second insert
    probing = breakers.save(replace(read, state=BreakerState.HALF_OPEN, probe_at=opened))
    assert breakers.get("sftp", "acme").state is BreakerState.HALF_OPEN
    with pytest.raises(ConflictError):
        breakers.save(replace(read, state=BreakerState.CLOSED))  # stale etag
    assert breakers.get("mail", "acme").state is BreakerState.CLOSED  # channels are separate
    assert probing.etag != first.etag


# --- BlobStore -------------------------------------------------------------------------------------


def test_blob_upload_stream_commits_whole_with_sha256(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    chunks = [b"a" * 70_000, b"", b"b" * 100_000, b"c"]
    info = store.upload_stream(container, "p/2025/x.csv", iter(chunks), metadata={"partner": "acme"})
    import hashlib

    data = b"".join(chunks)
    assert (info.size, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert info.metadata["sha256"] == info.sha256 and info.metadata["partner"] == "acme"
    got = store.get_info(container, "p/2025/x.csv")
    assert (got.size, got.sha256, got.metadata["partner"]) == (len(data), info.sha256, "acme")
    assert b"".join(store.open_read(container, "p/2025/x.csv", chunk_size=50_000)) == data
    assert store.exists(container, "p/2025/x.csv") and not store.exists(container, "p/2025/y.csv")


def test_blob_open_ranges_reads_in_bounded_ranges_and_stops_on_a_replaced_blob(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    data = bytes(range(256)) * 1000 + b"tail"
    store.upload_stream(container, "r.bin", iter([data]))
    chunks = list(store.open_ranges(container, "r.bin", chunk_size=50_000))
    assert b"".join(chunks) == data and max(len(c) for c in chunks) <= 50_000 and len(chunks) == 6
    store.upload_stream(container, "empty.bin", iter([]))
    assert b"".join(store.open_ranges(container, "empty.bin")) == b""
    with pytest.raises(NotFoundError):
        list(store.open_ranges(container, "missing.bin"))
    if isinstance(store, BlobStoreClient):  # the fake reads a snapshot; the real one each range from storage
        reading = store.open_ranges(container, "r.bin", chunk_size=50_000)
        next(reading)
        store.upload_stream(container, "r.bin", iter([b"replaced" * 10_000]))
        with pytest.raises(ConflictError, match="changed while it was read"):
            list(reading)


def test_blob_open_stream_reads_the_whole_blob_and_stops_on_a_replaced_blob(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    data = bytes(range(256)) * 1000 + b"tail"
    store.upload_stream(container, "s.bin", iter([data]))
    assert b"".join(store.open_stream(container, "s.bin")) == data
    store.upload_stream(container, "empty.bin", iter([]))
    assert b"".join(store.open_stream(container, "empty.bin")) == b""
    with pytest.raises(NotFoundError):
        store.open_stream(container, "missing.bin")
    if isinstance(store, BlobStoreClient):  # several ranges, each after the first conditional on the ETag
        assert b"".join(store.open_stream(container, "s.bin", range_size=50_000)) == data
        assert b"".join(store.open_stream(container, "s.bin", range_size=len(data))) == data
        reading = store.open_stream(container, "s.bin", range_size=50_000)
        next(reading)
        store.upload_stream(container, "s.bin", iter([b"replaced" * 10_000]))
        with pytest.raises(ConflictError, match="changed while it was read"):
            list(reading)


def test_blob_a_failed_stream_leaves_no_blob(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs

    def broken() -> Iterator[bytes]:
        yield b"x" * 200_000
        raise OSError("source dropped")

    with pytest.raises(OSError, match="source dropped"):
        store.upload_stream(container, "partial.bin", broken())
    assert not store.exists(container, "partial.bin") and store.list_blobs(container) == []


def test_blob_zero_bytes_overwrite_and_missing(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    empty = store.upload_stream(container, "empty", iter([]))
    assert empty.size == 0 and list(store.open_read(container, "empty")) in ([], [b""])
    store.upload_stream(container, "f", iter([b"one"]))
    store.upload_stream(container, "f", iter([b"two"]))
    assert b"".join(store.open_read(container, "f")) == b"two"
    with pytest.raises(ConflictError):
        store.upload_stream(container, "f", iter([b"three"]), overwrite=False)
    with pytest.raises(NotFoundError):
        store.get_info(container, "nope")
    with pytest.raises(NotFoundError):
        store.open_read(container, "nope")
    store.delete(container, "nope")  # succeeds when absent
    store.delete(container, "f")
    assert not store.exists(container, "f")


@pytest.mark.parametrize("size", [10, 3 * BLOB_BLOCK + 5])  # one Put Blob; staged blocks + Put Block List
def test_blob_create_if_absent_is_decided_at_commit(blobs: tuple[BlobStore, str], size: int) -> None:
    # Another writer commits between the start of our upload and its commit: ours must not replace it.
    store, container = blobs

    def someone_else_writes() -> None:
        store.upload_stream(container, "race", iter([b"theirs"]), metadata={"job_id": "job-theirs"})

    with pytest.raises(ConflictError, match="race"):
        store.upload_stream(container, "race", iter([b"o" * size]), overwrite=False,
                            before_commit=someone_else_writes)
    info = store.get_info(container, "race")
    assert b"".join(store.open_read(container, "race")) == b"theirs" and info.metadata["job_id"] == "job-theirs"
    created = store.upload_stream(container, "fresh", iter([b"n" * size]), overwrite=False)
    assert created.size == size and store.get_info(container, "fresh").sha256 == created.sha256


@pytest.mark.parametrize("size", [0, 10, BLOB_BLOCK, 3 * BLOB_BLOCK + 5])
def test_before_commit_runs_once_after_the_last_byte(blobs: tuple[BlobStore, str], size: int) -> None:
    store, container = blobs
    seen: list[str] = []
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 10_000):
            seen.append("chunk")
            yield data[start:start + 10_000]
        seen.append("end")

    info = store.upload_stream(container, "gate/ok.bin", chunks(), before_commit=lambda: seen.append("gate"))
    assert seen[-2:] == ["end", "gate"] and seen.count("gate") == 1
    assert (info.size, info.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert b"".join(store.open_read(container, "gate/ok.bin")) == data


@pytest.mark.parametrize("size", [10, 3 * BLOB_BLOCK + 5])
def test_a_refusing_gate_commits_nothing(blobs: tuple[BlobStore, str], size: int) -> None:
    store, container = blobs

    def refuse() -> None:
        raise RuntimeError("changed since the first look")

    with pytest.raises(RuntimeError, match="changed since"):
        store.upload_stream(container, "gate/no.bin", iter([b"y" * size]), before_commit=refuse)
    assert not store.exists(container, "gate/no.bin") and store.list_blobs(container, "gate/") == []


def test_one_block_bodies_go_up_in_one_request(azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:
    container = f"c{uuid.uuid4().hex[:20]}"
    real = BlobStoreClient.from_connection_string(azurite, block_size=BLOB_BLOCK)
    real.ensure_containers([container])
    sent: list[str] = []  # every blob write on the wire: Put Blob, Put Block or Put Block List
    original = RequestsTransport.send

    def send(self: RequestsTransport, request: Any, **kwargs: Any) -> Any:
        if request.method == "PUT":
            comp = parse_qs(urlsplit(request.url).query).get("comp", [""])[0]
            sent.append({"": "put_blob", "block": "put_block", "blocklist": "put_block_list"}.get(comp, comp))
        return original(self, request, **kwargs)

    monkeypatch.setattr(RequestsTransport, "send", send)
    real.upload_stream(container, "small", iter([b"a" * 1000, b"b" * (BLOB_BLOCK - 1000)]))
    assert sent == ["put_blob"]
    real.upload_stream(container, "big", iter([b"c" * (2 * BLOB_BLOCK + 1)]))
    assert sent == ["put_blob", "put_block", "put_block", "put_block", "put_block_list"]
    sizes = (real.get_info(container, "small").size, real.get_info(container, "big").size)
    assert sizes == (BLOB_BLOCK, 2 * BLOB_BLOCK + 1)
    BlobServiceClient.from_connection_string(azurite).delete_container(container)


def test_blob_listing_by_prefix_in_name_order(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    for name in ("b/2.csv", "a/1.csv", "b/1.csv", "bb/1.csv"):
        store.upload_stream(container, name, iter([name.encode()]), metadata={"n": name.replace("/", "_")})
    assert [b.path for b in store.list_blobs(container, "b/")] == ["b/1.csv", "b/2.csv"]
    listed = store.list_blobs(container)
    assert [b.path for b in listed] == ["a/1.csv", "b/1.csv", "b/2.csv", "bb/1.csv"]
    assert all(b.sha256 and b.metadata["n"] for b in listed)


def test_blob_info_has_a_version_that_every_write_changes(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    first = store.upload_stream(container, "v/f.csv", iter([b"one"]))
    got = store.get_info(container, "v/f.csv")
    assert got.etag and got.etag == first.etag and got.last_modified is not None
    second = store.upload_stream(container, "v/f.csv", iter([b"two"]))
    assert second.etag and second.etag != first.etag == got.etag
    assert store.get_info(container, "v/f.csv").etag == second.etag


@pytest.mark.parametrize("size", [0, 10, 3 * BLOB_BLOCK + 5])
def test_blob_copy_is_of_the_pinned_version_with_its_sha256(blobs: tuple[BlobStore, str], size: int) -> None:
    store, container = blobs
    data = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    source = store.upload_stream(container, "drop/p/a.csv", iter([data]), metadata={"from": "partner"})
    copied = store.copy(container, "drop/p/a.csv", container, "inbound/p/tr/a.csv", source_etag=source.etag,
                        metadata={"job_id": "job-1"})
    sha = hashlib.sha256(data).hexdigest()
    assert (copied.size, copied.sha256, copied.etag != "") == (size, sha, True)
    got = store.get_info(container, "inbound/p/tr/a.csv")
    assert (got.size, got.sha256, got.etag) == (size, sha, copied.etag)
    assert got.metadata["job_id"] == "job-1" and "from" not in got.metadata  # the given metadata, not the source's
    assert b"".join(store.open_read(container, "inbound/p/tr/a.csv")) == data
    assert store.get_info(container, "drop/p/a.csv").etag == source.etag  # the source is left as it was


def test_blob_copy_of_a_changed_or_missing_source_writes_nothing(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    old = store.upload_stream(container, "drop/p/b.csv", iter([b"first"]))
    store.upload_stream(container, "drop/p/b.csv", iter([b"second"]))  # a new version under the same name
    with pytest.raises(ConflictError):
        store.copy(container, "drop/p/b.csv", container, "inbound/b.csv", source_etag=old.etag)
    with pytest.raises(NotFoundError):
        store.copy(container, "drop/p/none.csv", container, "inbound/none.csv", source_etag=old.etag)
    assert not store.exists(container, "inbound/b.csv") and not store.exists(container, "inbound/none.csv")


def test_blob_delete_of_one_version_keeps_a_newer_one(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    old = store.upload_stream(container, "drop/p/c.csv", iter([b"first"]))
    new = store.upload_stream(container, "drop/p/c.csv", iter([b"second"]))
    with pytest.raises(ConflictError):
        store.delete(container, "drop/p/c.csv", etag=old.etag)
    assert b"".join(store.open_read(container, "drop/p/c.csv")) == b"second"
    store.delete(container, "drop/p/c.csv", etag=new.etag)
    assert not store.exists(container, "drop/p/c.csv")
    store.delete(container, "drop/p/c.csv", etag=new.etag)  # succeeds when already absent


# --- JobStore --------------------------------------------------------------------------------------


def created(store: JobStore, partner: str = "acme", **data: Any) -> str:
    job_id = new_job_id()
    store.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "SFTP_INGEST",
                                             "source": "sftp://h:22/out/a.csv", "file_name": "a.csv", **data})
    return job_id


def test_jobs_append_events_and_projection(jobs: JobStore) -> None:
    job_id = created(jobs, at=datetime(2025, 1, 1, tzinfo=UTC))
    jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": "inbound/acme/a.csv", "bytes": 5 * GIB, "sha256": "ab"})
    jobs.append(job_id, "job.started")
    jobs.append(job_id, EventType.STEP_COMPLETED, {"step": "validate", "counts": {"rows": 3}})
    events = jobs.events(job_id)
    assert [e.seq for e in events] == [0, 1, 2, 3]
    assert [e.type for e in events] == [EventType.CREATED, EventType.FILE_LANDED, EventType.STARTED,
                                        EventType.STEP_COMPLETED]
    assert events[0].data["at"] == "2025-01-01 00:00:00+00:00"  # data goes through JSON
    job = jobs.get_job(job_id)
    assert (job.status, job.bytes, job.blob_path, job.counts, job.event_count) == (
        JobStatus.RUNNING, 5 * GIB, "inbound/acme/a.csv", {"rows": 3}, 4)


def test_jobs_creation_rules(jobs: JobStore) -> None:
    job_id = created(jobs)
    with pytest.raises(ConflictError):
        created_again = {"partner": "acme"}
        jobs.append(job_id, EventType.CREATED, created_again)
    with pytest.raises(NotFoundError):
        jobs.append(new_job_id(), EventType.FILE_LANDED, {"bytes": 1})
    with pytest.raises(NotFoundError):
        jobs.get_job(new_job_id())
    with pytest.raises(ValueError):
        jobs.append(job_id, "job.exploded")
    with pytest.raises(ValueError):
        jobs.append(job_id, EventType.NOTE, {"message": "x" * 40_000})
    assert jobs.events(new_job_id()) == []


def test_jobs_list_newest_first_with_filters(jobs: JobStore) -> None:
    a = created(jobs, "acme")
    b = created(jobs, "acme")
    c = created(jobs, "other")
    jobs.append(b, EventType.FAILED, {"reason": "bad"})
    assert [j.job_id for j in jobs.list_jobs(partner="acme")] == [b, a]
    assert [j.job_id for j in jobs.list_jobs(status="FAILED")] == [b]
    assert [j.job_id for j in jobs.list_jobs(limit=2)] == [c, b]


def test_jobs_rebuild_refolds_from_events(jobs: JobStore) -> None:
    a = created(jobs)
    jobs.append(a, EventType.COMPLETED)
    b = created(jobs)
    assert jobs.rebuild(a) == 1 and jobs.get_job(a).status is JobStatus.COMPLETED
    assert jobs.rebuild(new_job_id()) == 0
    assert jobs.rebuild() >= 2 and jobs.get_job(b).status is JobStatus.PENDING


def test_jobs_transfers_are_upserted_and_keep_big_sizes(jobs: JobStore) -> None:
    job_id = created(jobs)
    when = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
    t1, t2 = sorted([new_transfer_id(), new_transfer_id()])
    jobs.add_transfer(FileTransfer(job_id=job_id, transfer_id=t1, file_name="a.csv", source="sftp://h/a.csv",
                                   destination="inbound/acme/a.csv", status="CLAIMED", transfer_date=when, bytes=0))
    jobs.add_transfer(FileTransfer(job_id=job_id, transfer_id=t1, file_name="a.csv", source="sftp://h/a.csv",
                                   destination="inbound/acme/a.csv", status="LANDED", transfer_date=when,
                                   bytes=3 * GIB, sha256="cd"))
    jobs.add_transfer(FileTransfer(job_id=job_id, transfer_id=t2, file_name="b.csv", source="s", destination="d",
                                   status="LANDED", transfer_date=when, bytes=1))
    rows = jobs.transfers(job_id)
    assert [(r.transfer_id, r.status, r.bytes, r.sha256) for r in rows] == [
        (t1, "LANDED", 3 * GIB, "cd"), (t2, "LANDED", 1, "")]
    assert rows[0].transfer_date == when and jobs.transfers(new_job_id()) == []


def test_jobs_logs_keep_their_order_and_levels(jobs: JobStore) -> None:
    job_id = created(jobs)
    for i, level in enumerate(["INFO", "WARNING", "ERROR", "DEBUG"]):
        jobs.log(job_id, level, f"line {i}", trace_id="0af7651916cd43dd8448eb211c80319c" if i == 1 else "")
    logs = jobs.logs(job_id)
    assert [(e.level.value, e.message) for e in logs] == [("INFO", "line 0"), ("WARNING", "line 1"),
                                                          ("ERROR", "line 2"), ("DEBUG", "line 3")]
    assert logs[1].trace_id == "0af7651916cd43dd8448eb211c80319c"
    with pytest.raises(ValueError):
        jobs.log(job_id, "LOUD", "x")


def new_job(partner: str = "acme", now: datetime | None = None, *, name: str = "a.csv", job_id: str = "",
            extra: list[NewEvent] | None = None, note: str = "") -> NewJob:
    """A job as a poll records a landed file: created + file.landed, one FileTransfer, two log lines."""
    job_id = job_id or new_job_id(now)
    transfer = FileTransfer(job_id=job_id, transfer_id=new_transfer_id(now), file_name=name,
                            source=f"sftp://h:22/out/{name}", destination=f"inbound/{partner}/{name}",
                            status="LANDED", transfer_date=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC), bytes=5 * GIB,
                            sha256="ab" * 32)
    events = [
        NewEvent(type=EventType.CREATED, data={"partner": partner, "job_type": "SFTP_INGEST",
                                               "source": transfer.source, "file_name": name}),
        NewEvent(type=EventType.FILE_LANDED, data={"blob_path": transfer.destination, "bytes": 5 * GIB,
                                                   "sha256": "ab" * 32, "transfer_id": transfer.transfer_id,
                                                   **({"note": note} if note else {})}),
        *(extra or []),
    ]
    logs = [NewLog(level=LogLevel.INFO, message=f"landed {name}", trace_id="0af7651916cd43dd8448eb211c80319c"),
            NewLog(level=LogLevel.DEBUG, message=f"claimed {name}")]
    return NewJob(job_id=job_id, events=events, transfers=[transfer], logs=logs)


def assert_created(jobs: JobStore, job: NewJob) -> None:
    events = jobs.events(job.job_id)
    assert [(e.seq, e.type) for e in events] == [(i, e.type) for i, e in enumerate(job.events)]
    assert [e.data for e in events] == [e.data for e in job.events]
    got = jobs.get_job(job.job_id)
    landed = job.events[1].data
    assert (got.partner, got.status, got.blob_path, got.bytes, got.sha256, got.file_name, got.event_count) == (
        job.partner, JobStatus.PENDING, landed["blob_path"], landed["bytes"], landed["sha256"],
        job.events[0].data["file_name"], len(job.events))
    assert jobs.transfers(job.job_id) == job.transfers
    assert [(e.level, e.message, e.trace_id) for e in jobs.logs(job.job_id)] == [
        (line.level, line.message, line.trace_id) for line in job.logs]


def test_jobs_create_jobs_are_readable_like_appended_ones(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    batch = [new_job(now=now, name=f"f{i}.csv") for i in range(3)] + [new_job("globex", name="g.csv")]
    assert jobs.create_jobs(batch) == []
    for job in batch:
        assert_created(jobs, job)
    assert {j.job_id for j in jobs.list_jobs()} == {j.job_id for j in batch}
    assert {j.job_id for j in jobs.list_jobs(partner="acme", status="PENDING")} == {j.job_id for j in batch[:3]}
    assert jobs.create_jobs([]) == []


def test_jobs_create_jobs_again_returns_every_id_and_changes_nothing(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    batch = [new_job(now=now, name=f"f{i}.csv") for i in range(5)]
    assert jobs.create_jobs(batch) == []
    before = {j.job_id: (jobs.get_job(j.job_id), jobs.events(j.job_id), jobs.logs(j.job_id)) for j in batch}
    again = [new_job(job_id=j.job_id, name="other.csv", extra=[NewEvent(type=EventType.STARTED)]) for j in batch]
    assert jobs.create_jobs(list(reversed(again))) == [j.job_id for j in reversed(batch)]
    for job in batch:
        assert (jobs.get_job(job.job_id), jobs.events(job.job_id), jobs.logs(job.job_id)) == before[job.job_id]
        assert_created(jobs, job)


def test_jobs_create_jobs_reports_only_the_job_that_exists(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    batch = [new_job(now=now, name=f"f{i}.csv") for i in range(4)]
    old = batch[2]
    jobs.append(old.job_id, EventType.CREATED, {"partner": "acme", "job_type": "UPLOAD", "file_name": "old.csv"})
    jobs.append(old.job_id, EventType.NOTE, {"message": "before"})
    assert jobs.create_jobs(batch) == [old.job_id]
    for job in batch[:2] + batch[3:]:
        assert_created(jobs, job)
    assert [e.type for e in jobs.events(old.job_id)] == [EventType.CREATED, EventType.NOTE]
    got = jobs.get_job(old.job_id)
    assert (got.file_name, got.blob_path, got.event_count) == ("old.csv", "", 2)
    assert jobs.transfers(old.job_id) == [] and jobs.logs(old.job_id) == []
    assert len(jobs.list_jobs()) == 4


def lose_projection(jobs: JobStore, job_id: str, *, keep: int = 0) -> None:
    """What a crash between a job's events and its projection leaves: no IntegrationJob row (`keep` 0), or
    one folded from the job's first `keep` events."""
    if isinstance(jobs, FakeJobStore):
        jobs.forget_projection(job_id, keep=keep)
        return
    assert isinstance(jobs, JobStoreClient)
    table = jobs._table("IntegrationJob")
    events = jobs.events(job_id)
    if keep:
        table.upsert_entity(_job_to_entity(project(events[:keep])), mode=UpdateMode.REPLACE)
    else:
        table.delete_entity(str(events[0].data["partner"]), job_id)


def test_jobs_ensure_projection_writes_a_missing_or_behind_one_and_leaves_a_current_one(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    missing, behind, current = (new_job(now=now, name=f"f{i}.csv") for i in range(3))
    jobs.create_jobs([missing, behind, current])
    lose_projection(jobs, missing.job_id)
    lose_projection(jobs, behind.job_id, keep=1)
    assert {j.job_id for j in jobs.list_jobs()} == {behind.job_id, current.job_id}  # `missing` is invisible
    assert jobs.get_job(behind.job_id).blob_path == ""  # folded from job.created only
    for job in (missing, behind, current):
        got = jobs.ensure_projection(job.job_id)
        assert got is not None and got == jobs.get_job(job.job_id)
        assert_created(jobs, job)
    assert {j.job_id for j in jobs.list_jobs()} == {missing.job_id, behind.job_id, current.job_id}
    assert jobs.ensure_projection(new_job_id()) is None


def test_jobs_repair_projections_fixes_the_jobs_created_since(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    old = new_job(now=now - timedelta(hours=2), name="old.csv")
    missing, behind, current = (new_job(now=now, name=f"f{i}.csv") for i in range(3))
    jobs.create_jobs([old])
    jobs.create_jobs([missing, behind, current])
    for job in (old, missing):
        lose_projection(jobs, job.job_id)
    lose_projection(jobs, behind.job_id, keep=1)
    assert jobs.repair_projections(since=now - timedelta(minutes=5)) == sorted([missing.job_id, behind.job_id])
    for job in (missing, behind, current):
        assert_created(jobs, job)
    assert old.job_id not in {j.job_id for j in jobs.list_jobs()}  # outside the window: left as it is
    assert jobs.repair_projections(since=now - timedelta(minutes=5)) == []
    assert jobs.repair_projections(since=now - timedelta(hours=3)) == [old.job_id]
    assert_created(jobs, old)


def test_jobs_append_after_create_jobs_continues_the_sequence(jobs: JobStore) -> None:
    job = new_job()
    jobs.create_jobs([job])
    assert jobs.append(job.job_id, EventType.STARTED).seq == 2
    assert jobs.append(job.job_id, EventType.COMPLETED).seq == 3
    got = jobs.get_job(job.job_id)
    assert (got.status, got.event_count, got.blob_path) == (JobStatus.COMPLETED, 4, job.events[1].data["blob_path"])
    assert [e.seq for e in jobs.events(job.job_id)] == [0, 1, 2, 3]
    jobs.log(job.job_id, "ERROR", "after")
    assert [e.message for e in jobs.logs(job.job_id)] == ["landed a.csv", "claimed a.csv", "after"]
    with pytest.raises(ConflictError):
        jobs.append(job.job_id, EventType.CREATED, {"partner": "acme"})


def test_jobs_create_jobs_many_sharing_a_partition(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    # Two or three events each, so the 100-row transactions do not line up with the jobs.
    batch = [new_job(now=now, name=f"f{i}.csv", extra=[NewEvent(type=EventType.STARTED)] if i % 3 == 0 else None)
             for i in range(250)]
    assert len({job_partition(j.job_id)[0] for j in batch}) == 1
    assert jobs.create_jobs(batch) == []
    listed = {j.job_id: j for j in jobs.list_jobs(limit=1000)}
    assert set(listed) == {j.job_id for j in batch}
    for i, job in enumerate(batch):
        assert listed[job.job_id].event_count == len(job.events)
        assert listed[job.job_id].status is (JobStatus.RUNNING if i % 3 == 0 else JobStatus.PENDING)
    for job in (batch[0], batch[99], batch[100], batch[249]):
        assert [e.seq for e in jobs.events(job.job_id)] == list(range(len(job.events)))
        assert len(jobs.logs(job.job_id)) == 2 and len(jobs.transfers(job.job_id)) == 1
    fresh = new_job(now=now, name="late.csv")
    assert jobs.create_jobs([*batch[:150], fresh]) == [j.job_id for j in batch[:150]]
    assert_created(jobs, fresh)
    assert len(jobs.list_jobs(limit=1000)) == 251


def test_jobs_create_jobs_with_large_data_split_by_size(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    batch = [new_job(now=now, name=f"f{i}.csv", note=f"{i}" + '"' * 14_000) for i in range(60)]  # ~1.7 MB of JSON
    batch += [new_job(now=now, name=f"g{i}.csv", note="x" * 28_000) for i in range(60)]
    assert jobs.create_jobs(batch) == []
    assert len(jobs.list_jobs(limit=1000)) == 120
    for job in (batch[0], batch[59], batch[60], batch[119]):
        assert_created(jobs, job)


def test_jobs_create_jobs_for_two_partners_in_one_partition(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    batch = [new_job("acme" if i % 2 else "globex", now=now, name=f"f{i}.csv") for i in range(10)]
    assert jobs.create_jobs(batch) == []
    assert {j.job_id for j in jobs.list_jobs(partner="acme")} == {j.job_id for j in batch[1::2]}
    assert {j.job_id for j in jobs.list_jobs(partner="globex")} == {j.job_id for j in batch[::2]}
    for job in batch:
        assert_created(jobs, job)
    jobs.append(batch[0].job_id, EventType.FAILED, {"reason": "no route"})
    assert jobs.get_job(batch[0].job_id).partner == "globex"
    assert [j.job_id for j in jobs.list_jobs(status="FAILED")] == [batch[0].job_id]


def test_jobs_rebuild_after_create_jobs(jobs: JobStore) -> None:
    now = datetime.now(UTC)
    batch = [new_job(now=now, name=f"f{i}.csv") for i in range(3)] + [new_job("globex")]
    jobs.create_jobs(batch)
    appended = created(jobs)
    jobs.append(batch[1].job_id, EventType.COMPLETED)
    before = {j.job_id: j for j in jobs.list_jobs()}
    assert jobs.rebuild() == 5
    assert {j.job_id: j for j in jobs.list_jobs()} == before
    assert jobs.rebuild(batch[1].job_id) == 1 and jobs.get_job(batch[1].job_id).status is JobStatus.COMPLETED
    assert jobs.rebuild(appended) == 1 and jobs.rebuild(new_job_id(now)) == 0


def test_jobs_create_jobs_refuses_invalid_input(jobs: JobStore) -> None:
    good = new_job()
    not_created_first = new_job()
    not_created_first.events.reverse()
    no_partner = new_job()
    no_partner.events[0].data.pop("partner")
    twice_created = new_job(extra=[NewEvent(type=EventType.CREATED, data={"partner": "acme"})])
    oversize = new_job(note="x" * 40_000)
    foreign_transfer = new_job()
    foreign_transfer.transfers[0].job_id = new_job_id()
    bad: list[list[NewJob]] = [
        [good, not_created_first], [good, NewJob(job_id=new_job_id(), events=[])], [good, no_partner],
        [good, twice_created], [good, oversize], [good, foreign_transfer], [good, new_job(job_id=good.job_id)],
        [good, new_job(extra=[NewEvent(type=EventType.NOTE) for _ in range(100)])],
    ]
    for batch in bad:
        with pytest.raises(ValueError):
            jobs.create_jobs(batch)
    assert jobs.events(good.job_id) == [] and jobs.list_jobs() == []  # nothing of a refused batch is written
    assert jobs.create_jobs([good]) == []


# --- MessageQueue ----------------------------------------------------------------------------------


def test_queue_messages_round_trip_as_json(queues: tuple[MessageQueue, str]) -> None:
    queue, name = queues
    queue.send(name, {"job_id": "j1", "bytes": 5 * GIB, "when": datetime(2025, 1, 1, tzinfo=UTC)})
    queue.send(name, {"job_id": "j2"})
    peeked = queue.peek(name)
    assert [m["job_id"] for m in peeked] == ["j1", "j2"]
    assert peeked[0]["bytes"] == 5 * GIB and peeked[0]["when"] == "2025-01-01 00:00:00+00:00"
    with pytest.raises(ValueError, match="too large"):
        queue.send(name, {"blob": "x" * 60_000})


def test_raw_messages_are_peeked_received_released_and_deleted_by_id(queues: tuple[MessageQueue, str]) -> None:
    queue, name = queues
    first = queue.send_raw(name, b"\xff\xfe not text")
    queue.send(name, {"job_id": "j2"})
    peeked = queue.peek_raw(name)
    assert len(peeked) == 2 and peeked[0].id == first and peeked[0].body == b"\xff\xfe not text"
    assert json.loads(peeked[1].body)["job_id"] == "j2"
    assert all(m.dequeue_count == 0 and not m.pop_receipt and m.inserted_at for m in peeked)
    assert queue.depth(name) == 2

    taken = queue.receive(name, max_messages=1, visibility_timeout=30)
    assert [(m.id, m.dequeue_count) for m in taken] == [(first, 1)] and taken[0].pop_receipt
    assert [m.id for m in queue.peek_raw(name)] == [peeked[1].id]  # hidden while received
    queue.release(name, first, taken[0].pop_receipt)
    with pytest.raises(NotFoundError):  # released: that receipt is spent
        queue.delete(name, first, taken[0].pop_receipt)
    again = {m.id: m for m in queue.receive(name, visibility_timeout=30)}
    assert again[first].dequeue_count == 2 and set(again) == {first, peeked[1].id}
    queue.delete(name, first, again[first].pop_receipt)
    with pytest.raises(NotFoundError):
        queue.delete(name, first, again[first].pop_receipt)
    with pytest.raises(NotFoundError):
        queue.release(name, first, again[first].pop_receipt)
    assert queue.depth(name) == 1
    missing = f"{name}absent"
    assert queue.peek_raw(missing) == [] and queue.receive(missing) == [] and queue.depth(missing) == 0


# --- FileSource (SFTP): the fake against the real adapter on OpenSSH -----------------------------


@pytest.fixture(params=["fake", "sshd"])
def file_source(request: pytest.FixtureRequest) -> Iterator[tuple[FileSource, str, Callable[[str, bytes], None]]]:
    """(a session, a folder of its own, put(path, bytes)) on the fake server or the private sshd."""
    if request.param == "fake":
        server = FakeSftpServer()

        def put_fake(path: str, data: bytes) -> None:
            server.put(path, data)

        yield FakeFileSource(server), "/contract", put_fake
        return
    from shared.adapters.sftp import SftpClient, load_private_key

    sshd = request.getfixturevalue("sshd_server")
    folder = sshd.folder(f"contract-{uuid.uuid4().hex[:8]}")

    def put(path: str, data: bytes) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)

    source = SftpClient(sshd.host, sshd.username, port=sshd.port, pkey=load_private_key(sshd.client_key.text),
                        host_keys=[sshd.known_hosts_line], connect_timeout=5.0, op_timeout=10.0)
    try:
        yield source.connect(), str(folder), put
    finally:
        source.close()


def _read(source: FileSource, path: str) -> bytes:
    return b"".join(source.read_chunks(path))


def test_file_source_rename_never_replaces_the_target(
        file_source: tuple[FileSource, str, Callable[[str, bytes], None]]) -> None:
    source, base, put = file_source
    put(f"{base}/a.csv", b"today")
    put(f"{base}/archive/a.csv", b"yesterday")
    with pytest.raises(RemoteFileError) as exists:
        source.rename(f"{base}/a.csv", f"{base}/archive/a.csv")
    assert exists.value.errno == errno.EEXIST and exists.value.path == f"{base}/archive/a.csv"
    assert _read(source, f"{base}/a.csv") == b"today" and _read(source, f"{base}/archive/a.csv") == b"yesterday"
    source.rename(f"{base}/a.csv", f"{base}/new/folder/a.csv")  # a missing folder is created
    assert _read(source, f"{base}/new/folder/a.csv") == b"today"
    with pytest.raises(RemoteFileError) as gone:
        source.rename(f"{base}/a.csv", f"{base}/new/folder/a.csv")  # done already: the source is missing
    assert gone.value.missing


def test_file_sink_writes_whole_files_stats_and_replaces(
        file_source: tuple[FileSource, str, Callable[[str, bytes], None]]) -> None:
    sink = file_source[0]
    base = file_source[1]
    assert isinstance(sink, FileSink)
    data = bytes(range(256)) * 3000  # several write requests
    assert sink.write_chunks(f"{base}/out/sub/a.csv.part", [data[:1000], b"", data[1000:]]) == len(data)
    assert sink.stat(f"{base}/out/sub/a.csv.part").size == len(data)  # the missing folders were made
    assert sink.write_chunks(f"{base}/out/sub/a.csv.part", [b"short"]) == 5  # truncated, not appended
    assert _read(sink, f"{base}/out/sub/a.csv.part") == b"short"
    assert sink.write_chunks(f"{base}/out/empty", []) == 0 and sink.stat(f"{base}/out/empty").size == 0
    with pytest.raises(RemoteFileError) as missing:
        sink.stat(f"{base}/out/none")
    assert missing.value.missing
    sink.write_chunks(f"{base}/out/b.csv", [b"old"])
    assert sink.atomic_replace  # OpenSSH offers posix-rename@openssh.com; the fake does by default
    sink.replace(f"{base}/out/sub/a.csv.part", f"{base}/out/b.csv")
    assert _read(sink, f"{base}/out/b.csv") == b"short"
    with pytest.raises(RemoteFileError) as gone:
        sink.stat(f"{base}/out/sub/a.csv.part")
    assert gone.value.missing
    with pytest.raises(RemoteFileError) as no_source:
        sink.replace(f"{base}/out/sub/a.csv.part", f"{base}/out/b.csv")
    assert no_source.value.missing


def test_file_sink_checksums_only_what_the_server_offers(
        file_source: tuple[FileSource, str, Callable[[str, bytes], None]]) -> None:
    sink, base, _ = file_source
    assert isinstance(sink, FileSink)
    sink.write_chunks(f"{base}/c.bin", [b"abc"])
    assert "sha256" not in sink.checksum_algorithms()  # OpenSSH has no check-file extension
    assert sink.checksum(f"{base}/c.bin", "sha256") is None


@pytest.fixture(params=KINDS)
def deliveries(request: pytest.FixtureRequest) -> Iterator[Deliveries]:
    yield from table_store(request, FakeDeliveries, DeliveriesClient)


def _delivery(job_id: str, index: int = 0, **kw: Any) -> Delivery:
    return Delivery(job_id=job_id, index=index, partner="acme", kind="sftp", target="bank", route="pay", **kw)


def test_deliveries_create_is_insert_if_absent_and_update_etag_conditional(deliveries: Deliveries) -> None:
    job_id = new_job_id()
    with pytest.raises(NotFoundError):
        deliveries.get(job_id, 0)
    created = deliveries.create(_delivery(job_id, bytes=5 * GIB, remote_path="/to-bank/zahlung-ä.csv"))
    assert created.etag and created.state is DeliveryState.PENDING
    with pytest.raises(ConflictError):
        deliveries.create(_delivery(job_id))
    sending = deliveries.update(replace(created, state=DeliveryState.SENDING, step=DeliveryStep.RENAMING,
                                        attempts=1, temp_path="/to-bank/x.part", verified="size"))
    assert sending.etag != created.etag
    with pytest.raises(ConflictError):
        deliveries.update(replace(created, state=DeliveryState.FAILED))  # a stale ETag
    now = datetime.now(UTC)
    deliveries.update(replace(sending, state=DeliveryState.SENT, step=DeliveryStep.NONE, sent_at=now,
                              sha256="ab" * 32))
    got = deliveries.get(job_id, 0)
    assert (got.state, got.step, got.attempts, got.bytes, got.remote_path, got.temp_path, got.verified) == (
        DeliveryState.SENT, DeliveryStep.NONE, 1, 5 * GIB, "/to-bank/zahlung-ä.csv", "/to-bank/x.part", "size")
    assert got.sent_at is not None and abs((got.sent_at - now).total_seconds()) < 1 and got.sha256 == "ab" * 32
    assert (got.partner, got.kind, got.target, got.route) == ("acme", "sftp", "bank", "pay")


def test_deliveries_of_a_job_and_by_state(deliveries: Deliveries) -> None:
    job_id, other = new_job_id(), new_job_id()
    for index in (2, 0, 1):
        deliveries.create(_delivery(job_id, index, state=DeliveryState.FAILED if index == 1 else
                                    DeliveryState.PENDING))
    deliveries.create(_delivery(other, 0))
    assert [d.index for d in deliveries.for_job(job_id)] == [0, 1, 2]
    assert [(d.job_id, d.index) for d in deliveries.list_deliveries(state="FAILED")] == [(job_id, 1)]
    assert deliveries.for_job(new_job_id()) == []


# --- Redaction: what the writers store carries no secret ---------------------------------------------------


def _planted() -> str:
    from shared.observability.redaction import register_secret

    return register_secret(f"Planted-{uuid.uuid4().hex}")


def test_jobs_store_events_logs_transfers_and_projection_redacted(jobs: JobStore) -> None:
    secret = _planted()
    job_id = created(jobs)
    jobs.append(job_id, EventType.FAILED, {"reason": f"route failed: {secret}", "detail": {"why": [secret]}})
    jobs.log(job_id, "ERROR", f"route failed: {secret}")
    when = datetime(2025, 2, 3, tzinfo=UTC)
    jobs.add_transfer(FileTransfer(job_id=job_id, transfer_id=new_transfer_id(), file_name="a.csv",
                                   source=f"sftp://svc:{secret}@h/out/a.csv", destination="inbound/acme/a.csv",
                                   status="FAILED", transfer_date=when))
    batch = new_job(name="b.csv")
    batch.events[1].data["note"] = f"quoted {secret}"
    batch.logs[0].message = f"landed with {secret}"
    jobs.create_jobs([batch])
    stored = repr([jobs.events(job_id), jobs.logs(job_id), jobs.transfers(job_id), jobs.get_job(job_id),
                   jobs.events(batch.job_id), jobs.logs(batch.job_id), jobs.get_job(batch.job_id)])
    assert secret not in stored
    assert jobs.get_job(job_id).error == "route failed: ***"
    assert jobs.events(batch.job_id)[1].data["note"] == "quoted ***"


def test_ledger_errors_are_stored_redacted(ledger: Ledger) -> None:
    secret = _planted()
    first = ledger.create(entry(error=f"read failed: {secret}"))
    assert first.error == "read failed: ***" and ledger.get(first.partner, first.key).error == "read failed: ***"
    again = ledger.update(replace(first, state=LedgerState.FAILED, error=f"again: {secret}"))
    assert again.error == "again: ***" and ledger.get(first.partner, first.key).error == "again: ***"
    (batched,) = ledger.create_many([entry(n=1, error=secret)])
    assert batched.error == "***" and ledger.get(batched.partner, batched.key).error == "***"


def test_blob_metadata_is_stored_redacted_and_urls_carry_no_query(blobs: tuple[BlobStore, str]) -> None:
    store, container = blobs
    secret = _planted()
    info = store.upload_stream(container, "q/a.csv", [b"abc"], metadata={"reason": f"failed: {secret}"})
    assert info.metadata["reason"] == "failed: ***"
    assert store.get_info(container, "q/a.csv").metadata["reason"] == "failed: ***"
    assert "?" not in info.url and "?" not in store.get_info(container, "q/a.csv").url


def test_deliveries_by_partner_and_a_redelivery_keeps_its_link(deliveries: Deliveries) -> None:
    job_id, other = new_job_id(), new_job_id()
    deliveries.create(_delivery(job_id, 0, state=DeliveryState.FAILED))
    deliveries.create(_delivery(job_id, 100, redelivery_of=0, state=DeliveryState.SENT))
    deliveries.create(replace(_delivery(other, 0, state=DeliveryState.FAILED), partner="globex"))
    assert deliveries.get(job_id, 100).redelivery_of == 0 and deliveries.get(job_id, 0).redelivery_of is None
    assert sorted((d.job_id, d.index) for d in deliveries.list_deliveries(partner="acme")) == [
        (job_id, 0), (job_id, 100)]
    assert [(d.job_id, d.index) for d in deliveries.list_deliveries(partner="globex", state="FAILED")] == [(other, 0)]
    assert deliveries.list_deliveries(partner="acme", state="PENDING") == []
