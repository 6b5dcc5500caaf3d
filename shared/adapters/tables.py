"""Azure Tables adapter: JobEvents (append-only), IntegrationJob projection, FileTransfer, IntegrationLog."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared.adapters import table_batch
from shared.adapters.http import StorageLimits, storage_options
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.ids import job_id_ranges, job_partition
from shared.domain.job_index import Cursor, JobPage, JobQuery, index_key, index_time_key, months_between
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
from shared.faults import fault_point
from shared.observability.redaction import redact, redacted_json
from shared.observability.tracing import log_fields, span
from shared.resources import JOBS_BY_TIME_TABLE, TABLES

log = logging.getLogger(__name__)

_LANDED_COLUMNS = ["PartitionKey", "RowKey", "JobType", "Status", "CreatedAt", "UpdatedAt", "FileName", "BlobPath"]
# A table property holds at most 64 KiB (32K UTF-16 chars); keep event data well under it.
MAX_DATA_CHARS = 30_000
_APPEND_ATTEMPTS = 20
# One table transaction (entity group transaction): at most 100 operations on one partition, 4 MiB of payload.
MAX_BATCH = 100
MAX_BATCH_BYTES = 3 * 1024 * 1024
_ROW_OVERHEAD = 1024  # multipart headers, keys and the other properties of one operation (generous)

_T = TypeVar("_T")


def _int64(value: int) -> EntityProperty:
    """Byte counts pass 2 GiB: a plain int would be sent as Edm.Int32 and rejected."""
    return EntityProperty(int(value), EdmType.INT64)


def _int(value: Any) -> int:
    """Int32 comes back as int, Int64 as EntityProperty."""
    return int(value.value if isinstance(value, EntityProperty) else value)


def _seq_key(seq: int) -> str:
    return f"{seq:010d}"


def _row_key(prefix: str, suffix: str) -> str:
    """A job's RowKey in JobEvents, FileTransfer and IntegrationLog: `<prefix>-<suffix>` (`job_partition`)."""
    return f"{prefix}-{suffix}" if prefix else suffix


def _event_key(job_id: str, seq: int) -> tuple[str, str]:
    """(PartitionKey, RowKey) of a job's event `seq` in JobEvents."""
    pk, prefix = job_partition(job_id)
    return pk, _row_key(prefix, _seq_key(seq))


def _rows_filter(job_id: str) -> str:
    """The $filter selecting one job's rows in JobEvents, FileTransfer or IntegrationLog: the RowKeys that
    start with `<prefix>-` (`.` follows `-`). A job id without a prefix owns its whole partition; the JobId
    check keeps out rows of `<id>-<suffix>` jobs, which share that partition name."""
    pk, prefix = job_partition(job_id)
    if not prefix:
        return f"PartitionKey eq {_odata_str(pk)} and JobId eq {_odata_str(job_id)}"
    return (f"PartitionKey eq {_odata_str(pk)} and RowKey ge {_odata_str(prefix + '-')} "
            f"and RowKey lt {_odata_str(prefix + '.')}")


def _suffix(row_key: str, job_id: str) -> str:
    """The RowKey without the job's `<prefix>-`."""
    _, prefix = job_partition(job_id)
    return row_key[len(prefix) + 1:] if prefix and row_key.startswith(prefix + "-") else row_key


def _odata_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _job_to_entity(job: Job) -> dict[str, Any]:
    return {
        "PartitionKey": job.partner,
        "RowKey": job.job_id,
        "JobType": job.job_type.value,
        "Status": job.status.value,
        "CreatedAt": job.created_at,
        "UpdatedAt": job.updated_at,
        "Source": job.source,
        "FileName": job.file_name,
        "BlobPath": job.blob_path,
        "Bytes": _int64(job.bytes),
        "Sha256": job.sha256,
        "Error": job.error[:MAX_DATA_CHARS],
        "ParentJobId": job.parent_job_id,
        "ReplayedBy": job.replayed_by,
        "StepsCompleted": json.dumps(job.steps_completed),
        "Routes": job.routes,
        "EventCount": job.event_count,
        "Counts": json.dumps(job.counts),
    }


def _entity_to_job(e: Mapping[str, Any]) -> Job:
    return Job(
        job_id=e["RowKey"],
        partner=e["PartitionKey"],
        job_type=e["JobType"],
        status=e["Status"],
        created_at=e["CreatedAt"],
        updated_at=e["UpdatedAt"],
        source=e.get("Source", ""),
        file_name=e.get("FileName", ""),
        blob_path=e.get("BlobPath", ""),
        bytes=_int(e.get("Bytes", 0)),
        sha256=e.get("Sha256", ""),
        error=e.get("Error", ""),
        parent_job_id=e.get("ParentJobId", ""),
        replayed_by=e.get("ReplayedBy", ""),
        steps_completed=json.loads(e.get("StepsCompleted") or "[]"),
        routes=int(e.get("Routes", 0)),
        event_count=int(e.get("EventCount", 0)),
        counts=json.loads(e.get("Counts") or "{}"),
    )


_INDEX_ERROR_CHARS = 1000


def _index_entity(job: Job) -> dict[str, Any]:
    """The job's JobsByTime row: what a list shows, keyed newest first (shared.domain.job_index)."""
    pk, rk = index_key(job)
    return {"PartitionKey": pk, "RowKey": rk, "JobId": job.job_id, "Partner": job.partner,
            "JobType": job.job_type.value, "Status": job.status.value, "CreatedAt": job.created_at,
            "UpdatedAt": job.updated_at, "FileName": job.file_name, "Bytes": _int64(job.bytes),
            "Error": job.error[:_INDEX_ERROR_CHARS], "ParentJobId": job.parent_job_id,
            "EventCount": job.event_count}


def _index_to_job(e: Mapping[str, Any]) -> Job:
    return Job(job_id=e["JobId"], partner=e["Partner"], job_type=e["JobType"], status=e["Status"],
               created_at=e["CreatedAt"], updated_at=e["UpdatedAt"], file_name=e.get("FileName", ""),
               bytes=_int(e.get("Bytes", 0)), error=e.get("Error", ""), parent_job_id=e.get("ParentJobId", ""),
               event_count=int(e.get("EventCount", 0)))


def _index_filter(query: JobQuery, month: str, since: datetime, until: datetime, after: str | None) -> str:
    parts = [f"PartitionKey eq {_odata_str(month)}",
             f"RowKey ge {_odata_str(index_time_key(until))}",
             f"RowKey lt {_odata_str(index_time_key(since) + '.')}"]  # '.' follows '-': since itself included
    if after:
        parts.append(f"RowKey gt {_odata_str(after)}")
    for name, value in (("Partner", query.partner), ("Status", query.status), ("JobType", query.job_type)):
        if value:
            parts.append(f"{name} eq {_odata_str(value)}")
    if query.file_prefix:
        parts.append(f"FileName ge {_odata_str(query.file_prefix)} and "
                     f"FileName lt {_odata_str(query.file_prefix + chr(0xFFFF))}")
    return " and ".join(parts)


def _entity_to_event(e: Mapping[str, Any], job_id: str) -> JobEvent:
    return JobEvent(job_id=job_id, seq=int(e["RowKey"].rsplit("-", 1)[-1]), type=e["Type"], at=e["At"],
                    data=json.loads(e.get("Data") or "{}"))


def _event_entity(job_id: str, seq: int, etype: EventType, at: datetime, payload: str) -> dict[str, Any]:
    pk, rk = _event_key(job_id, seq)
    return {"PartitionKey": pk, "RowKey": rk, "JobId": job_id, "Type": etype.value, "At": at, "Data": payload}


def transfer_row(transfer: FileTransfer) -> FileTransfer:
    """A FileTransfer as stored: its texts (name, source, destination) redacted."""
    names, source, destination = (redact(t) for t in (transfer.file_name, transfer.source, transfer.destination))
    if (names, source, destination) == (transfer.file_name, transfer.source, transfer.destination):
        return transfer
    return transfer.model_copy(update={"file_name": names, "source": source, "destination": destination})


def log_message(message: str) -> str:
    """An IntegrationLog message as stored: redacted (before it is cut), at most MAX_DATA_CHARS."""
    return redact(message)[:MAX_DATA_CHARS]


def _transfer_entity(transfer: FileTransfer) -> dict[str, Any]:
    transfer = transfer_row(transfer)
    pk, prefix = job_partition(transfer.job_id)
    return {
        "PartitionKey": pk, "RowKey": _row_key(prefix, transfer.transfer_id), "JobId": transfer.job_id,
        "FileName": transfer.file_name, "Source": transfer.source, "Destination": transfer.destination,
        "Status": transfer.status, "TransferDate": transfer.transfer_date, "Bytes": _int64(transfer.bytes),
        "Sha256": transfer.sha256,
    }


def _log_entity(job_id: str, level: str, message: str, trace_id: str, at: datetime, ns: int) -> dict[str, Any]:
    pk, prefix = job_partition(job_id)
    return {
        "PartitionKey": pk, "RowKey": _row_key(prefix, f"{ns:020d}-{uuid.uuid4().hex[:8]}"), "JobId": job_id,
        "LogLevel": LogLevel(level).value, "Message": log_message(message), "LoggedAt": at, "TraceId": trace_id,
    }


def _row_bytes(entity: Mapping[str, Any]) -> int:
    """A generous estimate of one entity's share of a transaction's body (JSON; strings escaped again)."""
    return _ROW_OVERHEAD + sum(len(json.dumps(v)) for v in entity.values() if isinstance(v, str))


def _chunks(items: Sequence[_T], size: Callable[[_T], tuple[int, int]]) -> Iterator[list[_T]]:
    """Consecutive runs of `items` that fit one transaction; `size(item)` is its (rows, bytes)."""
    chunk: list[_T] = []
    rows = nbytes = 0
    for item in items:
        n, b = size(item)
        if chunk and (rows + n > MAX_BATCH or nbytes + b > MAX_BATCH_BYTES):
            yield chunk
            chunk, rows, nbytes = [], 0, 0
        chunk.append(item)
        rows += n
        nbytes += b
    if chunk:
        yield chunk


def _is_conflict(exc: TableTransactionError) -> bool:
    """The transaction failed because an entity it creates already exists (and for no other reason)."""
    code = str(getattr(exc, "error_code", "") or "")
    return exc.status_code == 409 or "AlreadyExists" in code


def event_payload(job_id: str, data: Mapping[str, Any] | None) -> str:
    """An event's `Data` as stored: sorted JSON (anything else as its string), secrets redacted (the
    redaction boundary of everything a job records), at most MAX_DATA_CHARS."""
    payload = redacted_json(dict(data or {}), sort_keys=True)
    if len(payload) > MAX_DATA_CHARS:
        raise ValueError(f"event data for job {job_id} is {len(payload)} chars; store large data in a blob")
    return payload


def new_job_payloads(jobs: Sequence[NewJob]) -> list[list[str]]:
    """Validate a `create_jobs` batch; the JSON `Data` of each job's events, as `append` would store them.

    ValueError when a job has no events, does not start with a `job.created` naming the partner, has another
    `job.created` later, has event data over MAX_DATA_CHARS, has more events than one transaction holds, or has
    a FileTransfer of another job; and when a job id appears twice. (FakeJobStore applies the same rules.)
    """
    seen: set[str] = set()
    payloads: list[list[str]] = []
    for job in jobs:
        if job.job_id in seen:
            raise ValueError(f"job {job.job_id} appears twice in one create_jobs call")
        seen.add(job.job_id)
        if not job.events or job.events[0].type is not EventType.CREATED:
            raise ValueError(f"job {job.job_id}: the first event must be {EventType.CREATED.value}")
        if "partner" not in job.events[0].data:
            raise ValueError(f"job {job.job_id}: {EventType.CREATED.value} must name the partner")
        if any(e.type is EventType.CREATED for e in job.events[1:]):
            raise ValueError(f"job {job.job_id}: only the first event may be {EventType.CREATED.value}")
        if any(t.job_id != job.job_id for t in job.transfers):
            raise ValueError(f"job {job.job_id}: a FileTransfer names another job")
        job_payloads = [event_payload(job.job_id, event.data) for event in job.events]
        size = sum(_ROW_OVERHEAD + len(json.dumps(p)) for p in job_payloads)
        if len(job_payloads) > MAX_BATCH or size > MAX_BATCH_BYTES:
            raise ValueError(f"job {job.job_id}: {len(job_payloads)} events ({size} bytes) do not fit one "
                             "table transaction; create it with fewer events and append the rest")
        payloads.append(job_payloads)
    return payloads


@dataclass
class _Pending:
    """One job of a create_jobs call, with its event rows."""

    job: NewJob
    rows: list[dict[str, Any]]
    nbytes: int


class JobStoreClient:
    """JobStore over Azure Tables. Appends are insert-if-absent on (job id, sequence); the
    projection is updated with ETag checks and re-folded from the events whenever they disagree."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "") -> None:
        self._service = service
        self._prefix = prefix
        self._partner_of: dict[str, str] = {}
        self._tables: dict[str, TableClient] = {}
        self._tables_lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "",
                               limits: StorageLimits | None = None) -> JobStoreClient:
        return cls(TableServiceClient.from_connection_string(conn, **storage_options("table", limits)), prefix=prefix)

    def table_name(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def _table(self, name: str) -> TableClient:
        """One TableClient per table, built on first use (they share the service's transport)."""
        client = self._tables.get(name)
        if client is None:
            with self._tables_lock:
                client = self._tables.get(name)
                if client is None:
                    client = self._tables[name] = self._service.get_table_client(self.table_name(name))
        return client

    def ensure_tables(self, names: Iterable[str] = TABLES) -> None:
        for name in names:
            self._service.create_table_if_not_exists(self.table_name(name))

    def ping(self) -> None:
        """Cheap call that fails when storage is unreachable (used by /api/health)."""
        next(iter(self._service.list_tables(results_per_page=1).by_page()), None)

    # --- events and projection -------------------------------------------------------------

    def _partner(self, job_id: str) -> str:
        if job_id not in self._partner_of:
            try:
                first = self._table("JobEvents").get_entity(*_event_key(job_id, 0))
            except ResourceNotFoundError as exc:
                raise NotFoundError(f"job {job_id} not found") from exc
            self._partner_of[job_id] = json.loads(first.get("Data") or "{}")["partner"]
        return self._partner_of[job_id]

    def _read_projection(self, job_id: str) -> tuple[Job | None, str | None]:
        try:
            entity = self._table("IntegrationJob").get_entity(self._partner(job_id), job_id)
        except (ResourceNotFoundError, NotFoundError):
            return None, None
        return _entity_to_job(entity), entity.metadata["etag"]

    def _write_projection(self, job: Job, etag: str | None) -> None:
        table = self._table("IntegrationJob")
        entity = _job_to_entity(job)
        if etag is None:
            table.create_entity(entity)
        else:
            table.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                match_condition=MatchConditions.IfNotModified)
        self._write_index(job)

    def _write_index(self, job: Job) -> None:
        """The job's JobsByTime row, after its projection (a crash between them: the next write or a rebuild
        catches the index up; lists may show a status one event behind until then)."""
        self._table(JOBS_BY_TIME_TABLE).upsert_entity(_index_entity(job), mode=UpdateMode.REPLACE)

    def _refold(self, job_id: str) -> Job | None:
        events = self.events(job_id)
        if not events:
            return None
        job = project(events)
        self._table("IntegrationJob").upsert_entity(_job_to_entity(job), mode=UpdateMode.REPLACE)
        self._write_index(job)
        return job

    def append(self, job_id: str, event_type: str, data: Mapping[str, Any] | None = None) -> JobEvent:
        etype = EventType(event_type)
        payload = event_payload(job_id, data)
        with span("jobstore.append", {"wharf.job_id": job_id, "wharf.event": etype.value}):
            for _ in range(_APPEND_ATTEMPTS):
                if etype is EventType.CREATED:
                    if self._event_exists(job_id, 0):
                        raise ConflictError(f"job {job_id} already exists")
                    self._partner_of[job_id] = str((data or {})["partner"])
                    job, etag, seq = None, None, 0
                else:
                    job, etag = self._read_projection(job_id)
                    if job is None:  # events exist but the projection was lost: repair, then retry
                        if self._refold(job_id) is None:
                            raise NotFoundError(f"job {job_id} not found")
                        continue
                    seq = job.event_count
                event = JobEvent(job_id=job_id, seq=seq, type=etype, at=utcnow(), data=json.loads(payload))
                try:
                    self._table("JobEvents").create_entity(_event_entity(job_id, seq, etype, event.at, payload))
                except ResourceExistsError:
                    if etype is EventType.CREATED:
                        raise ConflictError(f"job {job_id} already exists") from None
                    self._refold(job_id)  # someone appended seq first (or the projection lags)
                    continue
                fault_point("jobs.append.after_event")
                try:
                    self._write_projection(apply(job, event), etag)
                except (ResourceExistsError, ResourceModifiedError):
                    self._refold(job_id)
                return event
        raise ConflictError(f"job {job_id}: could not append {etype.value} after {_APPEND_ATTEMPTS} attempts")

    def _event_exists(self, job_id: str, seq: int) -> bool:
        try:
            self._table("JobEvents").get_entity(*_event_key(job_id, seq))
        except ResourceNotFoundError:
            return False
        return True

    def events(self, job_id: str) -> list[JobEvent]:
        rows = self._table("JobEvents").query_entities(_rows_filter(job_id))
        return sorted((_entity_to_event(r, job_id) for r in rows), key=lambda e: e.seq)

    def get_job(self, job_id: str) -> Job:
        job, _ = self._read_projection(job_id)
        if job is None:
            job = self._refold(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        return job

    def ensure_projection(self, job_id: str) -> Job | None:
        """Make the job's projection agree with its events: re-folded and written when it is missing or behind
        them (a crash between an event and its projection). Returns the projection, None when the job has no
        events. Races with `append` safely: the write is insert-if-absent or ETag-checked, a lost race re-reads."""
        with span("jobstore.ensure_projection", {"wharf.job_id": job_id}) as s:
            for _ in range(_APPEND_ATTEMPTS):
                events = self.events(job_id)
                if not events:
                    return None
                self._partner_of.setdefault(job_id, str(events[0].data["partner"]))
                job, etag = self._read_projection(job_id)
                if job is not None and job.event_count >= len(events):
                    s.set_attribute("wharf.repaired", False)
                    return job
                folded = project(events)
                try:
                    self._write_projection(folded, etag)
                except (ResourceExistsError, ResourceModifiedError):
                    continue  # someone wrote it meanwhile: look again
                s.set_attribute("wharf.repaired", True)
                log.warning("job projection %s: re-folded from %d events", "written" if job is None else "caught up",
                            len(events), extra=log_fields(job_id, partner=folded.partner))
                return folded
        raise ConflictError(f"job {job_id}: projection still moving after {_APPEND_ATTEMPTS} attempts")

    def repair_projections(self, *, since: datetime) -> list[str]:
        """`ensure_projection` for every job whose job group (its id's time) is `since` or later, drop jobs aside;
        returns the ids repaired. Reads those JobEvents partitions twice (job.created rows with their data, then
        every row's JobId) and, per partner, the projections' EventCount: cheap for a window of minutes."""
        low = f"job-{since.astimezone(UTC):%Y%m%d%H%M%S%f}"
        window = f"PartitionKey ge {_odata_str(low)} and PartitionKey lt {_odata_str('job-:')}"  # ':' follows '9'
        with span("jobstore.repair_projections", {"wharf.since": low}) as s:
            events = self._table("JobEvents")
            partners: dict[str, str] = {}
            for row in events.query_entities(f"{window} and Type eq {_odata_str(EventType.CREATED.value)}",
                                              select=["JobId", "Data"]):
                if row.get("JobId"):
                    partners[row["JobId"]] = str(json.loads(row.get("Data") or "{}").get("partner", ""))
            counts: dict[str, int] = {}
            for row in events.query_entities(window, select=["JobId"]):
                if row.get("JobId") in partners:
                    counts[row["JobId"]] = counts.get(row["JobId"], 0) + 1
            stored: dict[str, int] = {}
            for partner in sorted({p for p in partners.values() if p}):
                query = f"PartitionKey eq {_odata_str(partner)} and RowKey ge {_odata_str(low)}"
                for row in self._table("IntegrationJob").query_entities(query, select=["RowKey", "EventCount"]):
                    stored[row["RowKey"]] = int(row.get("EventCount") or 0)
            behind = sorted(jid for jid, n in counts.items() if stored.get(jid, -1) < n)
            repaired = [jid for jid in behind if self.ensure_projection(jid) is not None]
            s.set_attribute("wharf.jobs", len(counts))
            s.set_attribute("wharf.repaired", len(repaired))
            return repaired

    def landed_between(self, partner: str, since: datetime, until: datetime) -> list[Job]:
        """Two RowKey range reads inside the partner's IntegrationJob partition (polled, drop), projected."""
        table = self._table("IntegrationJob")
        found: list[Job] = []
        for low, high in job_id_ranges(since, until):
            query = (f"PartitionKey eq {_odata_str(partner)} and RowKey ge {_odata_str(low)} "
                     f"and RowKey lt {_odata_str(high)}")
            for row in table.query_entities(query, select=_LANDED_COLUMNS):
                job = _entity_to_job(row)
                if job.blob_path and job.job_type != JobType.REPLAY:
                    found.append(job)
        return sorted(found, key=lambda j: j.job_id)

    def list_jobs(self, *, partner: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        filters = []
        if partner:
            filters.append(f"PartitionKey eq {_odata_str(partner)}")
        if status:
            filters.append(f"Status eq {_odata_str(status)}")
        table = self._table("IntegrationJob")
        rows = table.query_entities(" and ".join(filters)) if filters else table.list_entities()
        jobs = sorted((_entity_to_job(r) for r in rows), key=lambda j: (j.created_at, j.job_id), reverse=True)
        return jobs[:limit]

    def query_jobs(self, query: JobQuery, *, limit: int = 50, cursor: str | None = None,
                   now: datetime | None = None) -> JobPage:
        """Newest first from JobsByTime, one month partition after another, filtered in the service; the page
        after `cursor` starts past its last key (key-seek: no rows before it are read again)."""
        since, until = query.window(now or utcnow())
        start = Cursor.decode(cursor) if cursor else None
        table = self._table(JOBS_BY_TIME_TABLE)
        jobs: list[Job] = []
        last: Cursor | None = None
        with span("jobstore.query_jobs", {"wharf.partner": query.partner or "", "wharf.limit": limit}) as s:
            for month in months_between(since, until):
                if start and month > start.month:
                    continue
                after = start.row_key if start and month == start.month else None
                flt = _index_filter(query, month, since, until, after)
                for row in table.query_entities(flt, results_per_page=min(1000, max(1, limit - len(jobs)))):
                    jobs.append(_index_to_job(row))
                    last = Cursor(month, row["RowKey"])
                    if len(jobs) >= limit:
                        break
                if len(jobs) >= limit:
                    break
            s.set_attribute("wharf.jobs", len(jobs))
        return JobPage(jobs, last.encode() if last and len(jobs) >= limit else None)

    def rebuild(self, job_id: str | None = None) -> int:
        with span("jobstore.rebuild", {"wharf.job_id": job_id}):
            if job_id:
                return 1 if self._refold(job_id) else 0
            job_ids = {e["JobId"] for e in self._table("JobEvents").query_entities(
                f"Type eq {_odata_str(EventType.CREATED.value)}", select=["JobId"]) if e.get("JobId")}
            return sum(1 for jid in sorted(job_ids) if self._refold(jid))

    # --- transfers and logs ----------------------------------------------------------------

    def add_transfer(self, transfer: FileTransfer) -> None:
        self._table("FileTransfer").upsert_entity(_transfer_entity(transfer))

    def transfers(self, job_id: str) -> list[FileTransfer]:
        rows = self._table("FileTransfer").query_entities(_rows_filter(job_id))
        return [FileTransfer(job_id=job_id, transfer_id=_suffix(r["RowKey"], job_id), file_name=r["FileName"],
                             source=r["Source"], destination=r["Destination"], status=r["Status"],
                             transfer_date=r["TransferDate"], bytes=_int(r.get("Bytes", 0)),
                             sha256=r.get("Sha256", "")) for r in rows]

    def log(self, job_id: str, level: str, message: str, *, trace_id: str = "") -> None:
        self._table("IntegrationLog").create_entity(
            _log_entity(job_id, level, message, trace_id, datetime.now(UTC), time.time_ns()))

    def logs(self, job_id: str) -> list[LogEntry]:
        rows = self._table("IntegrationLog").query_entities(_rows_filter(job_id))
        return [LogEntry(job_id=job_id, level=r["LogLevel"], message=r["Message"],
                         timestamp=r["LoggedAt"], trace_id=r.get("TraceId", ""))
                for r in sorted(rows, key=lambda r: r["RowKey"])]

    # --- bulk creation ---------------------------------------------------------------------

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[str]:
        """Create new jobs with their first events, transfers, logs and projection, in table transactions.

        Events first: per partition, runs of whole jobs (<= 100 rows, <= MAX_BATCH_BYTES) are inserted with
        "create" operations, so a run fails as a whole when any of its rows exists; such a run is retried one
        job per transaction, and a job whose own transaction conflicts already existed (returned, nothing of
        it written). Then FileTransfer (upsert) and IntegrationLog (create) rows per partition and the
        projection (upsert, replace) per partner, for the jobs created here only.
        """
        payloads = new_job_payloads(jobs)
        with span("jobstore.create_jobs", {"wharf.jobs": len(jobs)}) as s:
            if not jobs:
                s.set_attribute("wharf.existing", 0)
                return []
            now = utcnow()
            by_partition: dict[str, list[_Pending]] = {}
            for job, job_payloads in zip(jobs, payloads, strict=True):
                rows = [_event_entity(job.job_id, seq, event.type, now, payload)
                        for seq, (event, payload) in enumerate(zip(job.events, job_payloads, strict=True))]
                pending = _Pending(job=job, rows=rows, nbytes=sum(_row_bytes(r) for r in rows))
                by_partition.setdefault(job_partition(job.job_id)[0], []).append(pending)

            existing: set[str] = set()
            for pendings in by_partition.values():
                for chunk in _chunks(pendings, lambda p: (len(p.rows), p.nbytes)):
                    existing.update(self._create_events(chunk))
            fault_point("create_jobs.after_events")
            created = [(job, p) for job, p in zip(jobs, payloads, strict=True) if job.job_id not in existing]
            self._write_rows(created, now)
            result = [job.job_id for job in jobs if job.job_id in existing]
            s.set_attribute("wharf.existing", len(result))
            return result

    def _create_events(self, chunk: list[_Pending]) -> list[str]:
        """Insert the event rows of these jobs (one partition) in one transaction; on a conflict, one
        transaction per job. Returns the ids of the jobs that already existed."""
        table = self._table("JobEvents")
        try:
            table_batch.submit_transaction(table, [("create", row) for p in chunk for row in p.rows])
            return []
        except TableTransactionError as exc:
            if not _is_conflict(exc):
                raise
            if len(chunk) == 1:
                return [chunk[0].job.job_id]
        existing = []
        for p in chunk:
            try:
                table_batch.submit_transaction(table, [("create", row) for row in p.rows])
            except TableTransactionError as exc:
                if not _is_conflict(exc):
                    raise
                existing.append(p.job.job_id)
        return existing

    def _write_rows(self, created: list[tuple[NewJob, list[str]]], now: datetime) -> None:
        """Transfers, logs and projections of the jobs just created (their events are stored)."""
        transfers: dict[str, dict[str, dict[str, Any]]] = {}  # partition -> RowKey -> row (the last one wins)
        logs: dict[str, list[dict[str, Any]]] = {}
        projections: dict[str, list[dict[str, Any]]] = {}
        index: dict[str, list[dict[str, Any]]] = {}
        ns = time.time_ns()
        for job, payloads in created:
            pk = job_partition(job.job_id)[0]
            for transfer in job.transfers:
                row = _transfer_entity(transfer)
                transfers.setdefault(pk, {})[row["RowKey"]] = row
            for line in job.logs:  # consecutive nanoseconds keep a job's lines in order
                logs.setdefault(pk, []).append(
                    _log_entity(job.job_id, line.level, line.message, line.trace_id, now, ns))
                ns += 1
            events = [JobEvent(job_id=job.job_id, seq=seq, type=event.type, at=now, data=json.loads(payload))
                      for seq, (event, payload) in enumerate(zip(job.events, payloads, strict=True))]
            projection = project(events)
            projections.setdefault(projection.partner, []).append(_job_to_entity(projection))
            index.setdefault(index_key(projection)[0], []).append(_index_entity(projection))
            self._partner_of[job.job_id] = projection.partner
        for rows_by_key in transfers.values():
            self._submit("FileTransfer", "upsert", list(rows_by_key.values()))
        fault_point("create_jobs.after_transfers")
        for rows in logs.values():
            self._submit("IntegrationLog", "create", rows)
        fault_point("create_jobs.after_logs")
        for rows in projections.values():
            self._submit("IntegrationJob", "upsert", rows)
        for rows in index.values():
            self._submit(JOBS_BY_TIME_TABLE, "upsert", rows)
        fault_point("create_jobs.after_projection")

    def _submit(self, table_name: str, operation: str, rows: list[dict[str, Any]]) -> None:
        """Rows of one partition in as few transactions as fit (upserts replace)."""
        table = self._table(table_name)
        for chunk in _chunks(rows, lambda r: (1, _row_bytes(r))):
            if operation == "upsert":
                table_batch.submit_transaction(table, [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in chunk])
            else:
                table_batch.submit_transaction(table, [(operation, row) for row in chunk])
