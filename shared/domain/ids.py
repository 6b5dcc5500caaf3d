"""Identifiers: time-ordered so table scans and listings come out in creation order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def new_id(prefix: str, now: datetime | None = None) -> str:
    """`<prefix>-<UTC yyyymmddHHMMSSffffff>-<12 hex>`: sortable by time, unique without coordination."""
    ts = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    return f"{prefix}-{ts}-{uuid.uuid4().hex[:12]}"


def new_job_id(now: datetime | None = None) -> str:
    """Jobs created with the same `now` (one claim batch of a poll) share their time part, and with it their
    partition in JobEvents, FileTransfer and IntegrationLog: their rows can be written in one transaction."""
    return new_id("job", now)


def job_partition(job_id: str) -> tuple[str, str]:
    """(PartitionKey, RowKey prefix) of a job's rows in JobEvents, FileTransfer and IntegrationLog.

    `job-<time>-<12 hex>` -> (`job-<time>`, `<12 hex>`). An id without a `-` is its own partition, with no prefix.
    """
    head, sep, tail = job_id.rpartition("-")
    if not sep or not head or not tail:
        return job_id, ""
    return head, tail


def new_transfer_id(now: datetime | None = None) -> str:
    return new_id("tr", now)
