"""Queue messages between Wharf's functions: small references, never file bytes (a message is <= 64 KiB)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.jobs import utcnow

Channel = Literal["sftp", "mail"]


class _Message(BaseModel):
    # Transport fields (traceparent, tracestate) are added by the queue adapter; unknown keys are ignored
    # so that an older worker reads a newer message.
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_message(self) -> dict[str, Any]:
        """JSON-ready dict for `MessageQueue.send` (None fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class PollRequest(_Message):
    """`poll-requests` queue: poll one partner's source now (from the timer, the HTTP API or the CLI)."""

    partner: str = Field(min_length=1, max_length=64)
    channel: Channel = "sftp"
    requested_by: str = Field(default="timer", max_length=200)
    requested_at: datetime = Field(default_factory=utcnow)


class FileLanded(_Message):
    """`file-landed` queue: a whole file is in Blob Storage and its job exists; processing may start.

    Delivered at least once; the job id is the idempotency key (process_file's instance id).
    `blob_path` is relative to `container`; `file_name` is the sanitised name (safe in paths and templates).
    """

    job_id: str
    partner: str
    container: str
    blob_path: str
    file_name: str
    bytes: int = Field(ge=0)
    sha256: str
    transfer_id: str
    source: str
    traceparent: str | None = None
