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


def job_id_ranges(since: datetime, until: datetime) -> list[tuple[str, str]]:
    """RowKey ranges `[low, high)` holding the job ids whose time is in `[since, until)`: polled and replayed
    jobs (`job-<time>-...`) and drop jobs (`job-drop-<time>-...`, the blob's upload time). Digits sort before
    `d`, so the two never overlap."""
    low, high = (f"{t.astimezone(UTC):%Y%m%d%H%M%S%f}" for t in (since, until))
    return [(f"job-{low}", f"job-{high}"), (f"job-drop-{low}", f"job-drop-{high}")]


def id_time(job_id: str) -> datetime | None:
    """The UTC time in a job id (`job-<time>-...` or `job-drop-<time>-...`); None for any other shape."""
    parts = job_id.split("-")
    stamp = parts[2] if len(parts) > 3 and parts[1] == "drop" else (parts[1] if len(parts) > 2 else "")
    try:
        return datetime.strptime(stamp, "%Y%m%d%H%M%S%f").replace(tzinfo=UTC)
    except ValueError:
        return None
