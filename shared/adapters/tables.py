"""Azure Tables adapter: JobEvents (append-only), IntegrationJob projection, FileTransfer, IntegrationLog."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableClient, TableServiceClient, UpdateMode

from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.jobs import (
    EventType,
    FileTransfer,
    Job,
    JobEvent,
    LogEntry,
    LogLevel,
    apply,
    project,
    utcnow,
)
from shared.telemetry import span

TABLE_NAMES = ("IntegrationJob", "FileTransfer", "IntegrationLog", "JobEvents", "Ledger", "Breakers")
# A table property holds at most 64 KiB (32K UTF-16 chars); keep event data well under it.
MAX_DATA_CHARS = 30_000
_APPEND_ATTEMPTS = 20


def _int64(value: int) -> EntityProperty:
    """Byte counts pass 2 GiB: a plain int would be sent as Edm.Int32 and rejected."""
    return EntityProperty(int(value), EdmType.INT64)


def _int(value: Any) -> int:
    """Int32 comes back as int, Int64 as EntityProperty."""
    return int(value.value if isinstance(value, EntityProperty) else value)


def _seq_key(seq: int) -> str:
    return f"{seq:010d}"


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


def _entity_to_event(e: Mapping[str, Any]) -> JobEvent:
    return JobEvent(job_id=e["PartitionKey"], seq=int(e["RowKey"]), type=e["Type"], at=e["At"],
                    data=json.loads(e.get("Data") or "{}"))


class JobStoreClient:
    """JobStore over Azure Tables. Appends are insert-if-absent on (job id, sequence); the
    projection is updated with ETag checks and re-folded from the events whenever they disagree."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "") -> None:
        self._service = service
        self._prefix = prefix
        self._partner_of: dict[str, str] = {}

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "") -> JobStoreClient:
        return cls(TableServiceClient.from_connection_string(conn), prefix=prefix)

    def table_name(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def _table(self, name: str) -> TableClient:
        return self._service.get_table_client(self.table_name(name))

    def ensure_tables(self, names: Iterable[str] = TABLE_NAMES) -> None:
        for name in names:
            self._service.create_table_if_not_exists(self.table_name(name))

    def ping(self) -> None:
        """Cheap call that fails when storage is unreachable (used by /api/health)."""
        next(iter(self._service.list_tables(results_per_page=1).by_page()), None)

    # --- events and projection -------------------------------------------------------------

    def _partner(self, job_id: str) -> str:
        if job_id not in self._partner_of:
            try:
                first = self._table("JobEvents").get_entity(job_id, _seq_key(0))
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

    def _refold(self, job_id: str) -> Job | None:
        events = self.events(job_id)
        if not events:
            return None
        job = project(events)
        self._table("IntegrationJob").upsert_entity(_job_to_entity(job), mode=UpdateMode.REPLACE)
        return job

    def append(self, job_id: str, event_type: str, data: Mapping[str, Any] | None = None) -> JobEvent:
        etype = EventType(event_type)
        payload = json.dumps(dict(data or {}), default=str, sort_keys=True)
        if len(payload) > MAX_DATA_CHARS:
            raise ValueError(f"event data for job {job_id} is {len(payload)} chars; store large data in a blob")
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
                    self._table("JobEvents").create_entity({
                        "PartitionKey": job_id, "RowKey": _seq_key(seq), "Type": etype.value,
                        "At": event.at, "Data": payload,
                    })
                except ResourceExistsError:
                    if etype is EventType.CREATED:
                        raise ConflictError(f"job {job_id} already exists") from None
                    self._refold(job_id)  # someone appended seq first (or the projection lags)
                    continue
                try:
                    self._write_projection(apply(job, event), etag)
                except (ResourceExistsError, ResourceModifiedError):
                    self._refold(job_id)
                return event
        raise ConflictError(f"job {job_id}: could not append {etype.value} after {_APPEND_ATTEMPTS} attempts")

    def _event_exists(self, job_id: str, seq: int) -> bool:
        try:
            self._table("JobEvents").get_entity(job_id, _seq_key(seq))
        except ResourceNotFoundError:
            return False
        return True

    def events(self, job_id: str) -> list[JobEvent]:
        rows = self._table("JobEvents").query_entities(f"PartitionKey eq {_odata_str(job_id)}")
        return sorted((_entity_to_event(r) for r in rows), key=lambda e: e.seq)

    def get_job(self, job_id: str) -> Job:
        job, _ = self._read_projection(job_id)
        if job is None:
            job = self._refold(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found")
        return job

    def list_jobs(self, *, partner: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        filters = []
        if partner:
            filters.append(f"PartitionKey eq {_odata_str(partner)}")
        if status:
            filters.append(f"Status eq {_odata_str(status)}")
        table = self._table("IntegrationJob")
        rows = table.query_entities(" and ".join(filters)) if filters else table.list_entities()
        jobs = sorted((_entity_to_job(r) for r in rows), key=lambda j: j.created_at, reverse=True)
        return jobs[:limit]

    def rebuild(self, job_id: str | None = None) -> int:
        with span("jobstore.rebuild", {"wharf.job_id": job_id}):
            if job_id:
                return 1 if self._refold(job_id) else 0
            job_ids = {e["PartitionKey"] for e in self._table("JobEvents").query_entities(
                f"RowKey eq {_odata_str(_seq_key(0))}", select=["PartitionKey"])}
            return sum(1 for jid in sorted(job_ids) if self._refold(jid))

    # --- transfers and logs ----------------------------------------------------------------

    def add_transfer(self, transfer: FileTransfer) -> None:
        self._table("FileTransfer").upsert_entity({
            "PartitionKey": transfer.job_id, "RowKey": transfer.transfer_id, "FileName": transfer.file_name,
            "Source": transfer.source, "Destination": transfer.destination, "Status": transfer.status,
            "TransferDate": transfer.transfer_date, "Bytes": _int64(transfer.bytes), "Sha256": transfer.sha256,
        })

    def transfers(self, job_id: str) -> list[FileTransfer]:
        rows = self._table("FileTransfer").query_entities(f"PartitionKey eq {_odata_str(job_id)}")
        return [FileTransfer(job_id=r["PartitionKey"], transfer_id=r["RowKey"], file_name=r["FileName"],
                             source=r["Source"], destination=r["Destination"], status=r["Status"],
                             transfer_date=r["TransferDate"], bytes=_int(r.get("Bytes", 0)),
                             sha256=r.get("Sha256", "")) for r in rows]

    def log(self, job_id: str, level: str, message: str, *, trace_id: str = "") -> None:
        now = datetime.now(UTC)
        self._table("IntegrationLog").create_entity({
            "PartitionKey": job_id, "RowKey": f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}",
            "LogLevel": LogLevel(level).value, "Message": message[:MAX_DATA_CHARS], "LoggedAt": now,
            "TraceId": trace_id,
        })

    def logs(self, job_id: str) -> list[LogEntry]:
        rows = self._table("IntegrationLog").query_entities(f"PartitionKey eq {_odata_str(job_id)}")
        return [LogEntry(job_id=r["PartitionKey"], level=r["LogLevel"], message=r["Message"],
                         timestamp=r["LoggedAt"], trace_id=r.get("TraceId", ""))
                for r in sorted(rows, key=lambda r: r["RowKey"])]
