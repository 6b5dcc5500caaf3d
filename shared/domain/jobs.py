"""Jobs as an append-only event stream; IntegrationJob is the projection folded from the events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class JobStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class JobType(StrEnum):
    SFTP_INGEST = "SFTP_INGEST"
    MAIL_INGEST = "MAIL_INGEST"
    UPLOAD = "UPLOAD"
    DROP = "DROP"
    REPLAY = "REPLAY"
    OUTBOUND = "OUTBOUND"  # a file an internal system handed over for a partner (outbound/, `wharf send`)


class EventType(StrEnum):
    """What can happen to a job. Each changes the projection in `apply`."""

    CREATED = "job.created"  # data: partner, job_type, source, file_name, parent_job_id?
    FILE_LANDED = "file.landed"  # data: blob_path, bytes, sha256, transfer_id
    STARTED = "job.started"
    STEP_COMPLETED = "step.completed"  # data: step, + step results (rows, errors, ...)
    STEP_FAILED = "step.failed"  # data: step, reason
    ROUTED = "file.routed"  # data: route, destination, result
    SUPERSEDED = "file.superseded"  # on the job whose delivered blob another job overwrote: target, by_job_id
    REPLAYED = "job.replayed"  # on the old job; data: new_job_id
    REDELIVERED = "delivery.redelivered"  # an operator re-sent a delivery: index, redelivery_of, state, target/error
    COMPLETED = "job.completed"
    FAILED = "job.failed"  # data: reason
    NOTE = "job.note"  # data: message; no status change
    # An email delivery's status, from a report in the sender's inbox (no status change; counted on the job):
    # data: index, message_id, report (ledger key), recipients [{recipient, action, status, diagnostic}]
    DELIVERY_DELIVERED = "delivery.delivered"
    DELIVERY_BOUNCED = "delivery.bounced"
    DELIVERY_DELAYED = "delivery.delayed"
    STALLED = "job.stalled"  # data: minutes, status, step; no status change (shared/services/stalled.py)


class JobEvent(BaseModel):
    """One immutable fact about a job. `seq` orders the events of one job (0, 1, 2, ...)."""

    job_id: str
    seq: int
    type: EventType
    at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


class Job(BaseModel):
    """The IntegrationJob projection: what an operator reads. Always rebuildable from JobEvents."""

    job_id: str
    partner: str
    job_type: JobType
    status: JobStatus = JobStatus.PENDING
    created_at: datetime
    updated_at: datetime
    source: str = ""
    file_name: str = ""
    blob_path: str = ""
    bytes: int = 0
    sha256: str = ""
    error: str = ""
    parent_job_id: str = ""
    replayed_by: str = ""
    steps_completed: list[str] = Field(default_factory=list)
    routes: int = 0
    event_count: int = 0
    counts: dict[str, int] = Field(default_factory=dict)


def utcnow() -> datetime:
    return datetime.now(UTC)


def apply(job: Job | None, event: JobEvent) -> Job:
    """Fold one event into the projection. Pure: the same events always give the same job (`job` is not
    changed; the result is a new one)."""
    return _fold(None if job is None else job.model_copy(deep=True), event)


def _fold(job: Job | None, event: JobEvent) -> Job:
    """`apply`, changing `job` in place (a job only its caller holds)."""
    d = event.data
    if job is None:
        if event.type is not EventType.CREATED:
            raise ValueError(f"job {event.job_id}: first event must be {EventType.CREATED}, got {event.type}")
        job = Job(
            job_id=event.job_id,
            partner=str(d["partner"]),
            job_type=JobType(d.get("job_type", JobType.UPLOAD)),
            created_at=event.at,
            updated_at=event.at,
            source=str(d.get("source", "")),
            file_name=str(d.get("file_name", "")),
            parent_job_id=str(d.get("parent_job_id", "")),
        )
    job.updated_at = event.at
    job.event_count += 1
    match event.type:
        case EventType.FILE_LANDED:
            job.blob_path = str(d.get("blob_path", job.blob_path))
            job.bytes = int(d.get("bytes", job.bytes))
            job.sha256 = str(d.get("sha256", job.sha256))
            job.file_name = str(d.get("file_name", job.file_name))
        case EventType.STARTED:
            job.status = JobStatus.RUNNING
        case EventType.STEP_COMPLETED:
            step = str(d.get("step", ""))
            if step and step not in job.steps_completed:
                job.steps_completed.append(step)
            for key, value in d.get("counts", {}).items():
                job.counts[str(key)] = int(value)
        case EventType.STEP_FAILED:
            job.error = str(d.get("reason", ""))
        case EventType.ROUTED:
            job.routes += 1
        case EventType.REPLAYED:
            job.replayed_by = str(d.get("new_job_id", ""))
        case EventType.COMPLETED:
            job.status = JobStatus.COMPLETED
            job.error = ""
        case EventType.FAILED:
            job.status = JobStatus.FAILED
            job.error = str(d.get("reason", job.error))
        case EventType.DELIVERY_DELIVERED | EventType.DELIVERY_BOUNCED | EventType.DELIVERY_DELAYED:
            key = "deliveries_" + event.type.value.partition(".")[2]  # deliveries_bounced, ...
            job.counts[key] = job.counts.get(key, 0) + 1
        case _:
            pass
    return job


def project(events: Iterable[JobEvent]) -> Job:
    """Rebuild a job from its whole event stream (ordered by seq)."""
    job: Job | None = None
    for event in sorted(events, key=lambda e: e.seq):
        job = _fold(job, event)  # the job is this function's own until it returns: no copy per event
    if job is None:
        raise ValueError("no events")
    return job


class Transfer(BaseModel):
    """One file moved from a source to a destination: a FileTransfer row but its job (the API's TransferOut)."""

    transfer_id: str
    file_name: str
    source: str
    destination: str
    status: str
    transfer_date: datetime
    bytes: int = 0
    sha256: str = ""


class FileTransfer(Transfer):
    """A FileTransfer row: one file moved from a source to a destination for a job."""

    job_id: str


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogEntry(BaseModel):
    """An IntegrationLog row: operator-facing log line for a job."""

    job_id: str
    level: LogLevel
    message: str
    timestamp: datetime
    trace_id: str = ""


class NewEvent(BaseModel):
    """One event of a job being created in bulk (`JobStore.create_jobs`)."""

    type: EventType
    data: dict[str, Any] = Field(default_factory=dict)


class NewLog(BaseModel):
    level: LogLevel
    message: str
    trace_id: str = ""


class NewJob(BaseModel):
    """A job created in bulk with its first events (the first is `job.created`, whose data names the partner),
    its FileTransfer rows and its log lines: what a poll records for each file it landed."""

    job_id: str
    events: list[NewEvent]
    transfers: list[FileTransfer] = Field(default_factory=list)
    logs: list[NewLog] = Field(default_factory=list)

    @property
    def partner(self) -> str:
        return str(self.events[0].data["partner"])
