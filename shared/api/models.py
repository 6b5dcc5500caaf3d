"""Pydantic models of the API: what routes take (query models) and give (responses). The OpenAPI document is
generated from these same classes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.delivery import DeliveryState
from shared.domain.jobs import JobStatus, JobType, Transfer
from shared.domain.ledger import LedgerState


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str = ""
    parameter: str | None = Field(default=None, description="the query or path parameter that was wrong")


class JobsQuery(_Query):
    partner: str | None = Field(default=None, max_length=64)
    status: JobStatus | None = None
    type: JobType | None = None
    since: datetime | None = Field(default=None, description="created at or after (ISO 8601 with offset)")
    until: datetime | None = Field(default=None, description="created at or before (ISO 8601 with offset)")
    file_prefix: str | None = Field(default=None, max_length=256, description="file name starts with")
    limit: int = Field(default=50, ge=1, le=500)
    continuation: str | None = Field(default=None, max_length=2048, description="a page's `continuation`")


class ConsoleJobsQuery(JobsQuery):
    refresh: int | None = Field(default=None, ge=2, le=3600, description="reload the page every N seconds")


class LegacyJobsQuery(_Query):
    partner: str | None = Field(default=None, max_length=64)
    status: JobStatus | None = None
    limit: int = Field(default=50, ge=1, le=500)


class JobSummary(BaseModel):
    job_id: str
    partner: str
    type: JobType
    status: JobStatus
    file_name: str
    bytes: int
    created_at: datetime
    updated_at: datetime
    error: str = ""
    parent_job_id: str = ""
    stalled: bool = False


class JobPage(BaseModel):
    items: list[JobSummary]
    continuation: str | None = Field(description="pass as ?continuation= for the next page; null: last page")


class JobEventOut(BaseModel):
    seq: int
    type: str
    at: datetime
    data: dict[str, Any]


class TransferOut(Transfer):
    """One of the job's file transfers (shared/domain/jobs.py's fields)."""


class LogOut(BaseModel):
    timestamp: datetime
    level: str
    message: str
    trace_id: str = ""


class ValidationErrorOut(BaseModel):
    row: int | None = None
    line: int | None = None
    column: int | str | None = None
    field: str | None = None
    message: str = ""


class DeliveryOut(BaseModel):
    job_id: str
    index: int
    partner: str
    kind: str
    target: str
    route: str
    state: str
    remote_path: str
    bytes: int
    attempts: int
    error: str
    created_at: datetime | None
    updated_at: datetime | None
    sent_at: datetime | None
    redelivery_of: int | None = Field(default=None, description="the delivery index this one re-sends on purpose")


class JobDetail(BaseModel):
    job: dict[str, Any]
    stalled: bool = False
    events: list[JobEventOut]
    validation_errors: list[ValidationErrorOut]
    transfers: list[TransferOut]
    deliveries: list[DeliveryOut]
    logs: list[LogOut]
    links: dict[str, str]


class ContentQuery(_Query):
    which: Literal["raw", "output"] = "raw"


class ReplayAccepted(BaseModel):
    job_id: str
    replay_of: str


class ResumeAccepted(BaseModel):
    job_id: str
    status: str
    from_step: str


class BreakerOut(BaseModel):
    channel: str
    state: str
    failures: int
    opened_at: datetime | None
    last_error: str


class LastPollOut(BaseModel):
    """The channel's latest poll (LastPolls), overwritten by each poll."""

    channel: str
    status: str = Field(description="ok, partial (some files failed), failed (the poll could not run), circuit_open")
    started_at: datetime
    finished_at: datetime
    requested_by: str
    listed: int
    landed: int
    skipped: int
    failed: int
    queued: int = Field(description="files claimed and put on the transfer-batches queue")
    bytes: int
    error: str
    files: list[str] = Field(description="the landed files' remote paths (at most 10)")


class ChannelOut(BaseModel):
    channel: Literal["sftp", "mail"]
    schedule: str
    next_due: datetime | None
    breaker: BreakerOut
    last_poll: LastPollOut | None = Field(description="the channel's latest poll, None before the first")


class PartnerSummary(BaseModel):
    id: str
    name: str
    enabled: bool
    channels: list[ChannelOut]


class PartnerList(BaseModel):
    items: list[PartnerSummary]


class LastFile(BaseModel):
    job_id: str
    file_name: str
    status: JobStatus
    created_at: datetime


class PartnerDetail(PartnerSummary):
    jobs_24h: dict[str, int] = Field(description="jobs created in the last 24 hours, by status")
    last_file: LastFile | None
    last_poll: LastPollOut | None = Field(description="the latest poll of any of its channels, when one is recorded")


class PollQuery(_Query):
    channel: Literal["sftp", "mail"] | None = None


class PollAccepted(BaseModel):
    status: Literal["queued"]
    partner: str
    channel: str


class LedgerQuery(_Query):
    state: LedgerState | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class LedgerEntryOut(BaseModel):
    key: str
    channel: str
    path: str
    size: int
    state: str
    attempts: int
    job_id: str
    error: str
    claimed_at: datetime
    updated_at: datetime | None


class LedgerPage(BaseModel):
    items: list[LedgerEntryOut]


class UploadQuery(_Query):
    name: str = Field(min_length=1, max_length=1024, description="the file's name")


class UploadAccepted(BaseModel):
    partner: str
    blob_path: str
    bytes: int
    sha256: str


class PrepareUpload(BaseModel):
    upload_url: str
    method: Literal["PUT"]
    headers: dict[str, str]
    blob_path: str
    expires_at: datetime
    kind: Literal["user_delegation_sas", "local_account_sas"]


class DeliveriesQuery(_Query):
    state: DeliveryState | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
