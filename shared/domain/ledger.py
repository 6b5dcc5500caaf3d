"""Exactly-once ingestion: ledger entries keyed on a file's remote identity, and per-partner circuit breakers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from shared.domain.sanitize import remote_bytes


class LedgerState(StrEnum):
    """Where one remote file version is on its way in.

    CLAIMED -> LANDED -> DONE is the happy path: claimed (insert-if-absent), landed (blob committed, job,
    transfer, events and the file-landed message written), done (post-action on the source done).
    SKIPPED: refused for good (over-size) and logged once. FAILED: a transfer attempt failed; retried on a
    later poll until `attempts` reaches the limit. GONE: the file vanished or changed before it was read.
    REJECTED (mail): a message refused by the partner's rules (sender, subject, no matching attachment);
    recorded so it is logged once, not at every poll.
    """

    CLAIMED = "CLAIMED"
    LANDED = "LANDED"
    DONE = "DONE"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    GONE = "GONE"
    REJECTED = "REJECTED"


def ledger_key(channel: str, path: str | bytes, size: int, mtime: int) -> str:
    """RowKey for one file version: sha256 of (channel, exact remote path bytes, size, mtime).

    Not a time watermark: a back-dated file is a new key, an unchanged file the same key forever.
    """
    digest = hashlib.sha256()
    for part in (channel.encode(), remote_bytes(path), str(int(size)).encode(), str(int(mtime)).encode()):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True)
class LedgerEntry:
    """One row of the Ledger table (PK partner, RK `ledger_key`). `etag` is empty until stored."""

    partner: str
    key: str
    channel: str
    path: str
    size: int
    mtime: int
    state: LedgerState
    owner: str
    claimed_at: datetime
    job_id: str
    transfer_id: str
    container: str
    blob_path: str
    attempts: int = 1
    sha256: str = ""
    error: str = ""
    updated_at: datetime | None = None
    etag: str = ""

    def lease_expired(self, now: datetime, lease: timedelta) -> bool:
        return now - self.claimed_at >= lease


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


@dataclass(frozen=True)
class BreakerRecord:
    """One row of the Breakers table (PK channel, RK partner), shared by every instance through ETags."""

    channel: str
    partner: str
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: datetime | None = None
    probe_at: datetime | None = None
    last_error: str = ""
    updated_at: datetime | None = None
    etag: str = ""


#: At most this many file names in a LastPoll (the row stays small: one read per channel on the partners page).
LAST_POLL_FILES = 10


@dataclass(frozen=True)
class LastPoll:
    """One row of the LastPolls table (PK channel, RK partner): the summary of the channel's latest poll,
    overwritten by each poll (last writer wins; it is a report, not a coordination record)."""

    channel: str
    partner: str
    status: str  # PollSummary.status: ok, partial, failed, circuit_open
    started_at: datetime
    finished_at: datetime
    requested_by: str = ""
    listed: int = 0
    landed: int = 0
    skipped: int = 0
    failed: int = 0
    queued: int = 0
    bytes: int = 0
    error: str = ""
    files: tuple[str, ...] = ()  # the landed files' remote paths (at most LAST_POLL_FILES)
