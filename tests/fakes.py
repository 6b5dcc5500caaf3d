"""In-memory fakes of the ports. Each passes the same contract tests as its real adapter
(tests/integration/test_contracts.py), so service tests can trust them. Faults are injected explicitly."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import posixpath
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.tables import event_payload, log_message, new_job_payloads, transfer_row
from shared.domain.delivery import Delivery, delivery_keys
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.ids import job_id_ranges, job_partition
from shared.domain.job_index import Cursor, JobPage, JobQuery, index_key
from shared.domain.jobs import (
    EventType,
    FileTransfer,
    Job,
    JobEvent,
    JobType,
    LogEntry,
    LogLevel,
    NewJob,
    apply,
    project,
    utcnow,
)
from shared.domain.ledger import BreakerRecord, LedgerEntry
from shared.domain.partner_keys import PartnerKey
from shared.domain.remote import (
    HostKeyMismatchError,
    RemoteFile,
    RemoteFileChangedError,
    RemoteFileError,
    SftpAuthError,
    SourceUnavailableError,
)
from shared.domain.sla import SlaWindow
from shared.observability.redaction import redact, redact_data
from shared.observability.tracing import inject_traceparent
from shared.ports import BlobInfo, DownloadLink, QueuedMessage
from shared.resources import CONTAINERS

# --------------------------------------------------------------------------------------------------
# Blob storage


class FakeBlobStore:
    """BlobStore in memory. Like Azure: a blob appears only when the upload finished (commit once);
    unknown containers raise azure's ResourceNotFoundError; metadata must be ASCII; every write (metadata
    included) gives the blob a new ETag."""

    def __init__(self, containers: Iterable[str] = CONTAINERS) -> None:
        self._containers: set[str] = set(containers)
        self._blobs: dict[tuple[str, str], _FakeBlob] = {}
        self._lock = threading.Lock()
        self.uploads = 0
        self.fail_uploads: list[BaseException] = []  # raised (once each) by the next uploads

    def ensure_containers(self, names: Iterable[str] = CONTAINERS) -> None:
        with self._lock:
            self._containers.update(names)

    def _check_container(self, container: str) -> None:
        if container not in self._containers:
            raise ResourceNotFoundError(f"The specified container does not exist: {container}")

    @staticmethod
    def _check_metadata(metadata: Mapping[str, str] | None) -> None:
        for key, value in (metadata or {}).items():
            if not (key.isascii() and str(value).isascii()):
                raise ValueError(f"blob metadata must be ASCII ({key})")

    def _store(self, container: str, path: str, data: bytes, meta: dict[str, str], *,
               if_absent: bool = False) -> _FakeBlob:
        blob = _FakeBlob(data, meta, f'"0x{uuid.uuid4().hex[:15].upper()}"', datetime.now(UTC))
        with self._lock:
            if if_absent and (container, path) in self._blobs:  # decided at commit, like If-None-Match: *
                raise ConflictError(f"blob {container}/{path} already exists")
            self._blobs[(container, path)] = blob
        return blob

    def _info(self, container: str, path: str, blob: _FakeBlob) -> BlobInfo:
        return BlobInfo(container=container, path=path, size=len(blob.data), sha256=blob.meta.get("sha256", ""),
                        metadata=dict(blob.meta), url=f"http://fake-blob/{container}/{path}", etag=blob.etag,
                        last_modified=blob.last_modified)

    def upload_stream(self, container: str, path: str, chunks: Iterable[bytes], *,
                      metadata: Mapping[str, str] | None = None, overwrite: bool = True,
                      content_type: str | None = None,
                      before_commit: Callable[[], None] | None = None) -> BlobInfo:
        self._check_container(container)
        if not overwrite and (container, path) in self._blobs:
            raise ConflictError(f"blob {container}/{path} already exists")
        self._check_metadata(metadata)
        with self._lock:
            self.uploads += 1
            failure = self.fail_uploads.pop(0) if self.fail_uploads else None
        if failure is not None:
            raise failure
        digest = hashlib.sha256()
        parts: list[bytes] = []
        for chunk in chunks:  # an exception here leaves nothing behind, like uncommitted blocks
            digest.update(chunk)
            parts.append(bytes(chunk))
        data = b"".join(parts)
        meta = {**{k: redact(v) for k, v in (metadata or {}).items()}, "sha256": digest.hexdigest()}
        if before_commit is not None:
            before_commit()  # raising here commits nothing
        return self._info(container, path, self._store(container, path, data, meta, if_absent=not overwrite))

    def open_read(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        if (container, path) not in self._blobs:
            raise NotFoundError(f"blob {container}/{path} not found")
        data = self._blobs[(container, path)].data
        return iter([data[i:i + chunk_size] for i in range(0, len(data), chunk_size)])

    def get_info(self, container: str, path: str) -> BlobInfo:
        blob = self._blobs.get((container, path))
        if blob is None:
            raise NotFoundError(f"blob {container}/{path} not found")
        return self._info(container, path, blob)

    def copy(self, source_container: str, source_path: str, container: str, path: str, *, source_etag: str,
             metadata: Mapping[str, str] | None = None) -> BlobInfo:
        self._check_container(container)
        self._check_metadata(metadata)
        source = self._blobs.get((source_container, source_path))
        if source is None:
            raise NotFoundError(f"blob {source_container}/{source_path} not found; not copied")
        if source.etag != source_etag:
            raise ConflictError(f"blob {source_container}/{source_path} changed since version {source_etag}; "
                                "not copied")
        meta = {**{k: redact(v) for k, v in (metadata or {}).items()},
                "sha256": hashlib.sha256(source.data).hexdigest()}
        return self._info(container, path, self._store(container, path, source.data, meta))

    def open_ranges(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        return self.open_read(container, path, chunk_size=chunk_size)

    def open_stream(self, container: str, path: str) -> Iterator[bytes]:
        return self.open_read(container, path, chunk_size=256 * 1024)

    def download_link(self, container: str, path: str, *, expires_in: timedelta) -> DownloadLink:
        self.get_info(container, path)
        return DownloadLink(url=f"memory://{container}/{path}?sig=fake", expires_at=datetime.now(UTC) + expires_in,
                            kind="fake")

    def exists(self, container: str, path: str) -> bool:
        return (container, path) in self._blobs

    def list_blobs(self, container: str, prefix: str = "") -> list[BlobInfo]:
        self._check_container(container)
        return [self.get_info(c, p) for (c, p) in sorted(self._blobs) if c == container and p.startswith(prefix)]

    def delete(self, container: str, path: str, *, etag: str | None = None) -> None:
        with self._lock:
            blob = self._blobs.get((container, path))
            if blob is None:
                return
            if etag is not None and blob.etag != etag:
                raise ConflictError(f"blob {container}/{path} changed since version {etag}; not deleted")
            del self._blobs[(container, path)]

    def read(self, container: str, path: str) -> bytes:
        """Test helper: the whole blob."""
        return b"".join(self.open_read(container, path))


@dataclass(frozen=True)
class _FakeBlob:
    data: bytes
    meta: dict[str, str]
    etag: str
    last_modified: datetime


# --------------------------------------------------------------------------------------------------
# Jobs


def _roundtrip(data: Mapping[str, Any] | None, job_id: str) -> dict[str, Any]:
    return dict(json.loads(event_payload(job_id, data)))


def _as_index_row(job: Job) -> Job:
    """What a JobsByTime row holds (shared/adapters/tables.py `_index_to_job`): a list shows only these fields,
    so code that reads a listed job's blob path or steps must read the job itself, here as against Azurite."""
    return Job(job_id=job.job_id, partner=job.partner, job_type=job.job_type, status=job.status,
               created_at=job.created_at, updated_at=job.updated_at, file_name=job.file_name, bytes=job.bytes,
               error=job.error, parent_job_id=job.parent_job_id, event_count=job.event_count)


class FakeJobStore:
    """JobStore in memory, with JobStoreClient's rules: CREATED first and once, data JSON round-tripped."""

    def __init__(self) -> None:
        self._events: dict[str, list[JobEvent]] = {}
        self._jobs: dict[str, Job] = {}
        self._transfers: dict[str, dict[str, FileTransfer]] = {}
        self._logs: dict[str, list[LogEntry]] = {}
        self._lock = threading.RLock()

    def ensure_tables(self) -> None:
        pass

    def append(self, job_id: str, event_type: str, data: Mapping[str, Any] | None = None) -> JobEvent:
        etype = EventType(event_type)
        payload = _roundtrip(data, job_id)
        with self._lock:
            events = self._events.get(job_id)
            if etype is EventType.CREATED:
                if events:
                    raise ConflictError(f"job {job_id} already exists")
                str(payload["partner"])
                events = self._events[job_id] = []
            elif not events:
                raise NotFoundError(f"job {job_id} not found")
            event = JobEvent(job_id=job_id, seq=len(events), type=etype, at=utcnow(), data=payload)
            events.append(event)
            self._jobs[job_id] = apply(self._jobs.get(job_id), event)
            return event

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[str]:
        payloads = new_job_payloads(jobs)  # JobStoreClient's validation, so both refuse the same batches
        now = utcnow()
        existing: list[str] = []
        with self._lock:
            for job, job_payloads in zip(jobs, payloads, strict=True):
                if self._events.get(job.job_id):
                    existing.append(job.job_id)
                    continue
                events = [JobEvent(job_id=job.job_id, seq=seq, type=event.type, at=now, data=json.loads(payload))
                          for seq, (event, payload) in enumerate(zip(job.events, job_payloads, strict=True))]
                self._events[job.job_id] = events
                self._jobs[job.job_id] = project(events)
                for transfer in job.transfers:
                    self._transfers.setdefault(job.job_id, {})[transfer.transfer_id] = \
                        transfer_row(transfer).model_copy()
                self._logs.setdefault(job.job_id, []).extend(
                    LogEntry(job_id=job.job_id, level=line.level, message=log_message(line.message),
                             timestamp=now, trace_id=line.trace_id) for line in job.logs)
        return existing

    def events(self, job_id: str) -> list[JobEvent]:
        with self._lock:
            return list(self._events.get(job_id, []))

    def get_job(self, job_id: str) -> Job:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFoundError(f"job {job_id} not found")
            return self._jobs[job_id].model_copy(deep=True)

    def list_jobs(self, *, partner: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if (not partner or j.partner == partner)
                    and (not status or j.status.value == status)]
        return sorted(jobs, key=lambda j: (j.created_at, j.job_id), reverse=True)[:limit]

    def query_jobs(self, query: JobQuery, *, limit: int = 50, cursor: str | None = None,
                   now: datetime | None = None) -> JobPage:
        start = Cursor.decode(cursor) if cursor else None
        moment = now or utcnow()
        with self._lock:
            rows = sorted(((index_key(j), j.model_copy(deep=True)) for j in self._jobs.values()
                           if query.matches(j, moment)), key=lambda r: (-int(r[0][0]), r[0][1]))
        if start:
            rows = [r for r in rows if (-int(r[0][0]), r[0][1]) > (-int(start.month), start.row_key)]
        page = rows[:limit]
        nxt = Cursor(*page[-1][0]).encode() if len(page) >= limit else None
        return JobPage([_as_index_row(j) for _, j in page], nxt)

    def rebuild(self, job_id: str | None = None) -> int:
        with self._lock:
            ids = [job_id] if job_id else sorted(self._events)
            count = 0
            for jid in ids:
                if self._events.get(jid):
                    self._jobs[jid] = project(self._events[jid])
                    count += 1
            return count

    def ensure_projection(self, job_id: str) -> Job | None:
        with self._lock:
            events = self._events.get(job_id)
            if not events:
                return None
            job = self._jobs.get(job_id)
            if job is None or job.event_count < len(events):
                job = self._jobs[job_id] = project(events)
            return job.model_copy(deep=True)

    def repair_projections(self, *, since: datetime) -> list[str]:
        low = f"job-{since.astimezone(UTC):%Y%m%d%H%M%S%f}"
        with self._lock:
            behind = [jid for jid, events in self._events.items()
                      if low <= job_partition(jid)[0] < "job-:" and events
                      and (jid not in self._jobs or self._jobs[jid].event_count < len(events))]
            for jid in behind:
                self._jobs[jid] = project(self._events[jid])
            return sorted(behind)

    def landed_between(self, partner: str, since: datetime, until: datetime) -> list[Job]:
        ranges = job_id_ranges(since, until)
        with self._lock:
            found = [j.model_copy(deep=True) for jid, j in self._jobs.items()
                     if j.partner == partner and any(low <= jid < high for low, high in ranges)
                     and j.blob_path and j.job_type != JobType.REPLAY]
        return sorted(found, key=lambda j: j.job_id)

    def forget_projection(self, job_id: str, *, keep: int = 0) -> None:
        """Test helper: what a crash between a job's events and its projection leaves: no projection
        (`keep` 0), or one folded from its first `keep` events only."""
        with self._lock:
            if keep:
                self._jobs[job_id] = project(self._events[job_id][:keep])
            else:
                self._jobs.pop(job_id, None)

    def add_transfer(self, transfer: FileTransfer) -> None:
        with self._lock:
            self._transfers.setdefault(transfer.job_id, {})[transfer.transfer_id] = transfer_row(transfer).model_copy()

    def transfers(self, job_id: str) -> list[FileTransfer]:
        with self._lock:
            rows = self._transfers.get(job_id, {})
            return [rows[k] for k in sorted(rows)]

    def log(self, job_id: str, level: str, message: str, *, trace_id: str = "") -> None:
        entry = LogEntry(job_id=job_id, level=LogLevel(level), message=log_message(message),
                         timestamp=datetime.now(UTC), trace_id=trace_id)
        with self._lock:
            self._logs.setdefault(job_id, []).append(entry)

    def logs(self, job_id: str) -> list[LogEntry]:
        with self._lock:
            return list(self._logs.get(job_id, []))

    def job_ids(self) -> list[str]:
        """Test helper: every job id, in creation order."""
        with self._lock:
            return list(self._events)


# --------------------------------------------------------------------------------------------------
# Queues and publishing


class FakeMessageQueue:
    """MessageQueue in memory: JSON text per message, traceparent injected, the same size limit; ids, dequeue
    counts, visibility timeouts and pop receipts as the service keeps them."""

    def __init__(self, queues: Iterable[str] = (), *, clock: Callable[[], float] = time.monotonic) -> None:
        self._queues: dict[str, list[_FakeQueued]] = {name: [] for name in queues}
        self._lock = threading.Lock()
        self._clock = clock

    def ensure_queues(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                self._queues.setdefault(name, [])

    def _put(self, queue: str, body: bytes) -> str:
        with self._lock:
            if queue not in self._queues:
                raise ResourceNotFoundError(f"The specified queue does not exist: {queue}")
            item = _FakeQueued(id=str(uuid.uuid4()), body=body, inserted_at=datetime.now(UTC))
            self._queues[queue].append(item)
            return item.id

    def _visible(self, queue: str) -> list[_FakeQueued]:
        now = self._clock()
        return [m for m in self._queues.get(queue, []) if m.visible_at <= now]

    def send(self, queue: str, message: Mapping[str, Any], *, visibility_timeout: int | None = None) -> None:
        body = dict(message)
        inject_traceparent(body)
        text = json.dumps(body, default=str)
        if len(text.encode()) > 48 * 1024:
            raise ValueError(f"message for {queue} is too large ({len(text)} bytes): send references")
        message_id = self._put(queue, text.encode())
        if visibility_timeout:
            with self._lock:
                for m in self._queues[queue]:
                    if m.id == message_id:
                        m.visible_at = self._clock() + visibility_timeout

    def peek(self, queue: str, max_messages: int = 32) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(m.body) for m in self._visible(queue)[:max_messages]]

    def messages(self, queue: str) -> list[dict[str, Any]]:
        """Test helper: every message in the queue (peek stops at 32, like the service)."""
        with self._lock:
            return [json.loads(m.body) for m in self._queues.get(queue, [])]

    def receive_raw(self, queue: str, max_messages: int = 32) -> list[str]:
        with self._lock:
            taken = self._visible(queue)[:max_messages]
            self._queues[queue] = [m for m in self._queues.get(queue, []) if m not in taken]
            return [m.body.decode("utf-8", "surrogateescape") for m in taken]

    def send_raw(self, queue: str, body: bytes) -> str:
        if len(body) > 48 * 1024:
            raise ValueError(f"message for {queue} is too large ({len(body)} bytes)")
        return self._put(queue, bytes(body))

    def peek_raw(self, queue: str, max_messages: int = 32) -> list[QueuedMessage]:
        with self._lock:
            return [replace(m.snapshot(), pop_receipt="") for m in self._visible(queue)[:max(1, min(max_messages, 32))]]

    def receive(self, queue: str, *, max_messages: int = 32, visibility_timeout: int = 30) -> list[QueuedMessage]:
        with self._lock:
            taken = self._visible(queue)[:max(1, min(max_messages, 32))]
            for m in taken:
                m.dequeue_count += 1
                m.pop_receipt = uuid.uuid4().hex
                m.visible_at = self._clock() + max(1, visibility_timeout)
            return [m.snapshot() for m in taken]

    def _received(self, queue: str, message_id: str, pop_receipt: str) -> _FakeQueued:
        for m in self._queues.get(queue, []):
            if m.id == message_id and m.pop_receipt and m.pop_receipt == pop_receipt:
                return m
        raise NotFoundError(f"message {message_id} is no longer in {queue} as received "
                            "(deleted, or received again since)")

    def delete(self, queue: str, message_id: str, pop_receipt: str) -> None:
        with self._lock:
            self._queues[queue].remove(self._received(queue, message_id, pop_receipt))

    def release(self, queue: str, message_id: str, pop_receipt: str) -> None:
        with self._lock:
            m = self._received(queue, message_id, pop_receipt)
            m.visible_at, m.pop_receipt = 0.0, uuid.uuid4().hex

    def depth(self, queue: str) -> int:
        with self._lock:
            return len(self._queues.get(queue, []))


@dataclass(eq=False)
class _FakeQueued:
    id: str
    body: bytes
    inserted_at: datetime
    dequeue_count: int = 0
    visible_at: float = 0.0
    pop_receipt: str = ""

    def snapshot(self) -> QueuedMessage:
        return QueuedMessage(id=self.id, body=self.body, inserted_at=self.inserted_at,
                             dequeue_count=self.dequeue_count, pop_receipt=self.pop_receipt)


class FakePublisher:
    """Records what was published, redacted as the real publishers' envelopes are."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any], str]] = []

    def publish(self, event_type: str, data: Mapping[str, Any], *, subject: str = "") -> None:
        self.published.append((event_type, redact_data(dict(data)), redact(subject)))


# --------------------------------------------------------------------------------------------------
# Ledger and breakers


def _etag() -> str:
    return f'W/"fake-{uuid.uuid4().hex}"'


class _Tagged(Protocol):
    @property
    def etag(self) -> str: ...


_Row = TypeVar("_Row", bound=_Tagged)


class _FakeTable(Generic[_Row]):
    """One table's rows in memory, by (PartitionKey, RowKey), behind one lock: nothing to create."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], _Row] = {}
        self._lock = threading.Lock()

    def ensure_table(self) -> None:
        pass

    def _check_replace(self, key: tuple[str, str], etag: str, what: str) -> None:
        """As the adapters' ETag-conditional replace: NotFoundError when the row is gone, ConflictError when
        another instance wrote it since `etag` was read. Called with the lock held."""
        current = self._rows.get(key)
        if current is None:
            raise NotFoundError(f"{what} not found")
        if current.etag != etag:
            raise ConflictError(f"{what} was changed by another instance")


class FakeLedger(_FakeTable[LedgerEntry]):
    """Ledger in memory with the adapter's concurrency rules (insert-if-absent, ETags, batches)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    @staticmethod
    def _check_batch(batch: list[LedgerEntry]) -> None:
        if len(batch) > 100:
            raise ValueError(f"at most 100 ledger entries per batch, got {len(batch)}")
        if len({e.partner for e in batch}) != 1:
            raise ValueError("a ledger batch holds entries of one partner only")
        if len({e.key for e in batch}) != len(batch):
            raise ValueError("a ledger batch must not repeat a key")

    def _stored(self, entry: LedgerEntry) -> LedgerEntry:
        return replace(entry, etag=_etag(), updated_at=datetime.now(UTC), error=redact(entry.error))

    def get(self, partner: str, key: str) -> LedgerEntry:
        with self._lock:
            if (partner, key) not in self._rows:
                raise NotFoundError(f"ledger entry {partner}/{key} not found")
            return self._rows[(partner, key)]

    def get_many(self, partner: str, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        with self._lock:
            return {k: self._rows[(partner, k)] for k in set(keys) if (partner, k) in self._rows}

    def create(self, entry: LedgerEntry) -> LedgerEntry:
        with self._lock:
            if (entry.partner, entry.key) in self._rows:
                raise ConflictError(f"ledger entry {entry.partner}/{entry.key} already exists")
            stored = self._rows[(entry.partner, entry.key)] = self._stored(entry)
            self.writes += 1
            return stored

    def create_many(self, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        batch = list(entries)
        if not batch:
            return []
        self._check_batch(batch)
        with self._lock:
            if any((e.partner, e.key) in self._rows for e in batch):
                raise ConflictError(f"ledger batch of {len(batch)} for {batch[0].partner}: another instance "
                                    "wrote first")
            stored = [self._stored(e) for e in batch]
            for e in stored:
                self._rows[(e.partner, e.key)] = e
            self.writes += 1
            return stored

    def update(self, entry: LedgerEntry) -> LedgerEntry:
        if not entry.etag:
            raise ValueError("update needs the entry's etag (read it first)")
        with self._lock:
            self._check_replace((entry.partner, entry.key), entry.etag, f"ledger entry {entry.partner}/{entry.key}")
            stored = self._rows[(entry.partner, entry.key)] = self._stored(entry)
            self.writes += 1
            return stored

    def update_many(self, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        batch = list(entries)
        if not batch:
            return []
        self._check_batch(batch)
        if not all(e.etag for e in batch):
            raise ValueError("update needs the entry's etag (read it first)")
        with self._lock:
            for e in batch:
                current = self._rows.get((e.partner, e.key))
                if current is None:
                    raise NotFoundError(f"ledger batch update for {e.partner}: an entry is gone")
                if current.etag != e.etag:
                    raise ConflictError(f"ledger batch update for {e.partner}: another instance wrote first")
            stored = [self._stored(e) for e in batch]
            for e in stored:
                self._rows[(e.partner, e.key)] = e
            self.writes += 1
            return stored

    def entries(self, partner: str, *, state: str | None = None) -> list[LedgerEntry]:
        with self._lock:
            return [e for (p, _), e in sorted(self._rows.items()) if p == partner
                    and (state is None or e.state.value == str(state))]


class FakeBreakers(_FakeTable[BreakerRecord]):
    def get(self, channel: str, partner: str) -> BreakerRecord:
        with self._lock:
            return self._rows.get((channel, partner)) or BreakerRecord(channel=channel, partner=partner)

    def save(self, record: BreakerRecord) -> BreakerRecord:
        with self._lock:
            current = self._rows.get((record.channel, record.partner))
            if (current is None) != (not record.etag) or (current is not None and current.etag != record.etag):
                raise ConflictError(f"breaker {record.channel}/{record.partner} was changed by another instance")
            stored = self._rows[(record.channel, record.partner)] = replace(
                record, etag=_etag(), updated_at=datetime.now(UTC))
            return stored


class FakeDeliveries(_FakeTable[Delivery]):
    """Deliveries in memory (PK job group, RK job suffix + index), insert-if-absent and ETag-checked."""

    def get(self, job_id: str, index: int) -> Delivery:
        with self._lock:
            found = self._rows.get(delivery_keys(job_id, index))
        if found is None:
            raise NotFoundError(f"delivery {index} of job {job_id} not found")
        return found

    def _stored(self, delivery: Delivery) -> Delivery:
        now = datetime.now(UTC)
        stored = replace(delivery, etag=_etag(), updated_at=now, created_at=delivery.created_at or now,
                         error=redact(delivery.error)[:2000])
        self._rows[delivery.keys] = stored
        return stored

    def create(self, delivery: Delivery) -> Delivery:
        with self._lock:
            if delivery.keys in self._rows:
                raise ConflictError(f"delivery {delivery.index} of job {delivery.job_id} already exists")
            return self._stored(delivery)

    def update(self, delivery: Delivery) -> Delivery:
        if not delivery.etag:
            raise ValueError("update needs the delivery's etag (read it first)")
        with self._lock:
            self._check_replace(delivery.keys, delivery.etag, f"delivery {delivery.index} of job {delivery.job_id}")
            return self._stored(delivery)

    def for_job(self, job_id: str) -> list[Delivery]:
        with self._lock:
            return sorted((d for d in self._rows.values() if d.job_id == job_id), key=lambda d: d.index)

    def list_deliveries(self, *, state: str | None = None, partner: str | None = None,
                        limit: int = 100) -> list[Delivery]:
        with self._lock:
            found = [d for d in self._rows.values() if (state is None or d.state.value == state)
                     and (partner is None or d.partner == partner)]
        found.sort(key=lambda d: d.updated_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return found[:limit]


# --------------------------------------------------------------------------------------------------
# File sources (SFTP)


@dataclass
class _RemoteBytes:
    data: bytearray
    mtime: int


@dataclass
class _Fault:
    op: str  # "open", "list", "read", "remove", "rename"
    error: Callable[[str], BaseException]
    path: str | None = None
    times: int = 1
    after_bytes: int = 0  # for "read": fail once this many bytes were yielded


@dataclass
class FakeSftpServer:
    """The state behind FakeFileSource sessions: files by absolute path, plus injected faults.

    Paths are str; a non-UTF-8 name uses surrogate escapes, as the real adapter gives them.
    """

    files: dict[str, _RemoteBytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/"})
    host: str = "fake-sftp.example"
    port: int = 22
    down: bool = False  # connections fail (transient)
    host_key_ok: bool = True
    auth_ok: bool = True
    denied: set[str] = field(default_factory=set)  # open fails with EACCES
    faults: list[_Fault] = field(default_factory=list)
    on_read: Callable[[str, int], None] | None = None  # called after each chunk (path, bytes so far)
    chunk_size: int = 64 * 1024
    opens: int = 0
    reads: dict[str, int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    # Writing (FileSink): folders where writes fail with EACCES, the extensions offered, what was written.
    readonly: set[str] = field(default_factory=set)
    posix_rename: bool = True  # offers posix-rename@openssh.com (atomic replace)
    check_file: frozenset[str] = frozenset()  # algorithms of its check-file extension (OpenSSH: none)
    writes: dict[str, int] = field(default_factory=dict)  # path -> times opened for writing

    def mkdir(self, path: str) -> None:
        with self.lock:
            while path not in self.dirs:
                self.dirs.add(path)
                path = posixpath.dirname(path)

    def put(self, path: str, data: bytes, *, mtime: int | None = None, age: float = 3600) -> RemoteFile:
        with self.lock:
            self.mkdir(posixpath.dirname(path))
            when = int(mtime if mtime is not None else time.time() - age)
            self.files[path] = _RemoteBytes(bytearray(data), when)
            return RemoteFile(path, len(data), when)

    def append(self, path: str, data: bytes) -> None:
        with self.lock:
            f = self.files[path]
            f.data += data
            f.mtime = int(time.time())

    def fail(self, op: str, error: Callable[[str], BaseException], *, path: str | None = None, times: int = 1,
             after_bytes: int = 0) -> None:
        with self.lock:
            self.faults.append(_Fault(op, error, path, times, after_bytes))

    def _fault(self, op: str, path: str, done: int = 0) -> BaseException | None:
        with self.lock:
            for fault in self.faults:
                if fault.op == op and fault.path in (None, path) and fault.times > 0 and done >= fault.after_bytes:
                    fault.times -= 1
                    return fault.error(path)
        return None

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.files)


def unavailable(path: str) -> BaseException:
    return SourceUnavailableError("sftp fake", f"connection lost while working on {path}")


class FakeFileSource:
    """One session to a FakeSftpServer (FileSource). Usable directly: FakeFileSource({"/out/a.csv": b"x"})."""

    def __init__(self, server: FakeSftpServer | Mapping[str, bytes] | None = None) -> None:
        if server is None or not isinstance(server, FakeSftpServer):
            files = dict(server or {})
            server = FakeSftpServer()
            for path, data in files.items():
                server.put(path, data)
        self.server = server
        self.host, self.port = server.host, server.port
        self.closed = False

    def _check(self, op: str, path: str) -> None:
        if self.closed:
            raise SourceUnavailableError("sftp fake", "session closed")
        if self.server.down:
            raise SourceUnavailableError("sftp fake", "connection refused")
        fault = self.server._fault(op, path)
        if fault is not None:
            raise fault

    def _check_chunk(self, op: str, path: str, done: int) -> None:
        """Before each chunk: the connection may drop, or a fault (op, after `done` bytes) strike mid-transfer."""
        if self.server.down or self.closed:
            raise SourceUnavailableError("sftp fake", "connection lost")
        fault = self.server._fault(op, path, done)
        if fault is not None:
            raise fault

    def list_files(self, directory: str, *, recursive: bool = False,
                   skip_dirs: Iterable[str] = ()) -> list[RemoteFile]:
        self._check("list", directory)
        base = directory.rstrip("/") or "/"
        skip = {d.rstrip("/") for d in skip_dirs}
        out = []
        with self.server.lock:
            if base not in self.server.dirs:
                raise RemoteFileError(directory, errno.ENOENT)
            for path, f in sorted(self.server.files.items()):
                parent = posixpath.dirname(path)
                if parent == base or (recursive and parent.startswith(base.rstrip("/") + "/")
                                      and not any(parent == s or parent.startswith(s + "/") for s in skip)):
                    out.append(RemoteFile(path, len(f.data), f.mtime))
        return out

    def stat(self, path: str) -> RemoteFile:
        self._check("stat", path)
        with self.server.lock:
            if path not in self.server.files:
                raise RemoteFileError(path, errno.ENOENT)
            f = self.server.files[path]
            return RemoteFile(path, len(f.data), f.mtime)

    def read_chunks(self, path: str, *, expected: RemoteFile | None = None) -> Iterator[bytes]:
        self._check("open", path)
        with self.server.lock:
            self.server.opens += 1
            if path not in self.server.files:
                raise RemoteFileError(path, errno.ENOENT)
            if path in self.server.denied:
                raise RemoteFileError(path, errno.EACCES)
            self.server.reads[path] = self.server.reads.get(path, 0) + 1
        size = expected.size if expected else len(self.server.files[path].data)
        done = 0
        while done < size:
            self._check_chunk("read", path, done)
            with self.server.lock:
                f = self.server.files.get(path)
                chunk = bytes(f.data[done:min(size, done + self.server.chunk_size)]) if f else b""
            if not chunk:
                raise RemoteFileChangedError(path, "it is shorter than listed")
            done += len(chunk)
            yield chunk
            if self.server.on_read is not None:
                self.server.on_read(path, done)
        if expected is not None:
            with self.server.lock:
                f = self.server.files.get(path)
                now = RemoteFile(path, len(f.data), f.mtime) if f else None
            if now is None or not now.same_version(expected):
                raise RemoteFileChangedError(path, "size or mtime moved")

    def remove(self, path: str) -> None:
        self._check("remove", path)
        with self.server.lock:
            if self.server.files.pop(path, None) is not None:
                self.server.removed.append(path)

    def rename(self, source: str, target: str) -> None:
        self._check("rename", source)
        with self.server.lock:
            if source not in self.server.files:
                raise RemoteFileError(source, errno.ENOENT)
            if target in self.server.files or target in self.server.dirs:
                raise RemoteFileError(target, errno.EEXIST)  # never replaced, like the adapter
            self.server.mkdir(posixpath.dirname(target))
            self.server.files[target] = self.server.files.pop(source)
            self.server.renamed.append((source, target))

    # --- FileSink ---------------------------------------------------------------------------

    @property
    def atomic_replace(self) -> bool:
        return self.server.posix_rename

    def checksum_algorithms(self) -> frozenset[str]:
        return frozenset(self.server.check_file)

    def write_chunks(self, path: str, chunks: Iterable[bytes]) -> int:
        """Like the adapter: truncate, write in order; a fault ("write", after_bytes) leaves what was written."""
        self._check("write", path)
        folder = posixpath.dirname(path)
        with self.server.lock:
            if any(folder == d or folder.startswith(d.rstrip("/") + "/") for d in self.server.readonly):
                raise RemoteFileError(path, errno.EACCES)
            if path in self.server.dirs:
                raise RemoteFileError(path, errno.EISDIR)
            self.server.mkdir(folder)
            self.server.files[path] = _RemoteBytes(bytearray(), int(time.time()))
            self.server.writes[path] = self.server.writes.get(path, 0) + 1
        done = 0
        for chunk in chunks:
            self._check_chunk("write", path, done)
            with self.server.lock:
                f = self.server.files.get(path)
                if f is None:
                    raise RemoteFileError(path, errno.ENOENT)
                f.data += chunk
                f.mtime = int(time.time())
            done += len(chunk)
        return done

    def checksum(self, path: str, algorithm: str) -> str | None:
        if algorithm.lower() not in self.server.check_file:
            return None
        self._check("stat", path)
        with self.server.lock:
            if path not in self.server.files:
                raise RemoteFileError(path, errno.ENOENT)
            return hashlib.new(algorithm.lower(), bytes(self.server.files[path].data)).hexdigest()

    def replace(self, source: str, target: str) -> None:
        self._check("rename", source)
        with self.server.lock:
            if source not in self.server.files:
                raise RemoteFileError(source, errno.ENOENT)
            if target in self.server.dirs:
                raise RemoteFileError(target, errno.EISDIR)
            self.server.mkdir(posixpath.dirname(target))
            self.server.files[target] = self.server.files.pop(source)
            self.server.renamed.append((source, target))

    def close(self) -> None:
        self.closed = True

    def glob(self, pattern: str) -> list[str]:
        return [p for p in self.server.names() if fnmatch.fnmatchcase(p, pattern)]


class FakeFileSources:
    """FileSourceFactory over one FakeSftpServer: each open() is a new session (or the configured error)."""

    def __init__(self, server: FakeSftpServer) -> None:
        self.server = server
        self.opened = 0

    def open(self, partner_id: str, config: Any) -> FakeFileSource:
        with self.server.lock:
            self.opened += 1
        if self.server.down:
            raise SourceUnavailableError(f"sftp {self.server.host}:{self.server.port}", "connection refused")
        if not self.server.host_key_ok:
            raise HostKeyMismatchError(self.server.host, self.server.port, "SHA256:presented", ["SHA256:pinned"])
        if not self.server.auth_ok:
            raise SftpAuthError(f"login refused for user 'x' at {self.server.host}:{self.server.port}")
        fault = self.server._fault("connect", "")
        if fault is not None:
            raise fault
        return FakeFileSource(self.server)


def remote_error(code: int) -> Callable[[str], BaseException]:
    return lambda path: RemoteFileError(path, code)


__all__ = [
    "FakeBlobStore", "FakeBreakers", "FakeDeliveries", "FakeDurableClient", "FakeFileSource", "FakeFileSources",
    "FakeJobStore", "FakeLedger", "FakeMessageQueue", "FakePublisher", "FakeSftpServer", "remote_error", "unavailable",
]


class Clock:
    """A settable clock for services that take `clock=`."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


class Crash(BaseException):
    """A process dying mid-way: nothing in Wharf catches it."""


# --------------------------------------------------------------------------------------------------
# Durable client


class FakeDurableClient:
    """`DurableOrchestrationClient.get_status` as the jobs sweep uses it: real DurableOrchestrationStatus
    objects; an unknown instance has no runtime status and is falsy, as the library answers a 404."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[str, Any]] = {}
        self.queried: list[str] = []
        self.down: BaseException | None = None

    def set(self, instance_id: str, runtime_status: str, output: Any = None, custom_status: Any = None) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._docs[instance_id] = {"name": "process_file_orchestrator", "instanceId": instance_id,
                                   "runtimeStatus": runtime_status, "output": output,
                                   "customStatus": custom_status, "createdTime": now, "lastUpdatedTime": now}

    async def get_status(self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
                         show_input: bool = False) -> Any:
        from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

        self.queried.append(instance_id)
        if self.down is not None:
            raise self.down
        return DurableOrchestrationStatus.from_json(dict(self._docs.get(instance_id, {})))


class FakeSlaWindows(_FakeTable[SlaWindow]):
    """SlaWindows in memory (PK partner, RK expectation + opening): insert-if-absent and ETag-checked."""

    def windows(self, partner: str, expectation: str, *, since: datetime) -> list[SlaWindow]:
        with self._lock:
            rows = [w for w in self._rows.values() if w.partner == partner and w.expectation == expectation
                    and w.opens >= since]
        return sorted(rows, key=lambda w: w.opens)

    def recent(self, *, partner: str | None = None, since: datetime) -> list[SlaWindow]:
        with self._lock:
            rows = [w for w in self._rows.values() if (partner is None or w.partner == partner) and w.opens >= since]
        return sorted(rows, key=lambda w: (w.partner, w.expectation, w.opens))

    def create(self, window: SlaWindow) -> SlaWindow | None:
        key = (window.partner, window.row_key)
        with self._lock:
            if key in self._rows:
                return None
            stored = self._rows[key] = replace(window, etag=_etag())
            return stored

    def update(self, window: SlaWindow) -> SlaWindow | None:
        key = (window.partner, window.row_key)
        with self._lock:
            current = self._rows.get(key)
            if current is None or current.etag != window.etag:
                return None
            stored = self._rows[key] = replace(window, etag=_etag())
            return stored
class FakePartnerKeys:
    """PartnerKeys in memory (PK partner, RK key id); passes the same contract tests as PartnerKeysClient."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], PartnerKey] = {}
        self._lock = threading.Lock()

    def ensure_table(self) -> None:
        pass

    def get(self, partner: str, key_id: str) -> PartnerKey:
        with self._lock:
            if (partner, key_id) not in self._rows:
                raise NotFoundError(f"key {key_id} of partner {partner} not found")
            return self._rows[(partner, key_id)]

    def list(self, partner: str | None = None) -> list[PartnerKey]:
        with self._lock:
            rows = [k for (p, _), k in self._rows.items() if partner is None or p == partner]
        return sorted(rows, key=lambda k: (k.partner, k.created_at))

    def create(self, key: PartnerKey) -> PartnerKey:
        with self._lock:
            if (key.partner, key.key_id) in self._rows:
                raise ConflictError(f"key {key.key_id} already exists")
            self._rows[(key.partner, key.key_id)] = key
            return key

    def revoke(self, partner: str, key_id: str, at: datetime) -> PartnerKey:
        with self._lock:
            if (partner, key_id) not in self._rows:
                raise NotFoundError(f"key {key_id} of partner {partner} not found")
            old = self._rows[(partner, key_id)]
            new = self._rows[(partner, key_id)] = replace(old, revoked_at=old.revoked_at or at)
            return new
