"""Identifiers: time-ordered so table scans and listings come out in creation order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def new_id(prefix: str, now: datetime | None = None) -> str:
    """`<prefix>-<UTC yyyymmddHHMMSSffffff>-<12 hex>`: sortable by time, unique without coordination."""
    ts = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    return f"{prefix}-{ts}-{uuid.uuid4().hex[:12]}"


def new_job_id(now: datetime | None = None) -> str:
    return new_id("job", now)


def new_transfer_id(now: datetime | None = None) -> str:
    return new_id("tr", now)
