"""Listing jobs newest first with key-seek paging: the JobsByTime index and the query over it.

IntegrationJob is keyed (partner, job id), so a newest-first list across partners would read the whole table.
JobsByTime holds one small row per job keyed (creation month, inverted creation time + job id): a query in one
month partition comes back newest first, and the next page starts after the last key seen (never an offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.domain.jobs import Job

_MAX_TS = 10**20 - 1  # yyyymmddHHMMSSffffff as an int has 20 digits
DEFAULT_WINDOW = timedelta(days=400)  # how far back a list goes when `since` is not given


def _ts(at: datetime) -> int:
    return int(at.astimezone(UTC).strftime("%Y%m%d%H%M%S%f"))


def index_month(at: datetime) -> str:
    """The partition of a job created at `at`: `yyyyMM` (UTC)."""
    return at.astimezone(UTC).strftime("%Y%m")


def index_time_key(at: datetime) -> str:
    """Inverted creation time (20 digits): later times sort first."""
    return f"{_MAX_TS - _ts(at):020d}"


def index_key(job: Job) -> tuple[str, str]:
    """(PartitionKey, RowKey) of a job's JobsByTime row."""
    return index_month(job.created_at), f"{index_time_key(job.created_at)}-{job.job_id}"


def months_between(since: datetime, until: datetime) -> list[str]:
    """The month partitions from `until` back to `since`, newest first."""
    y, m = until.astimezone(UTC).year, until.astimezone(UTC).month
    low = since.astimezone(UTC)
    out: list[str] = []
    while (y, m) >= (low.year, low.month):
        out.append(f"{y:04d}{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return out


@dataclass(frozen=True)
class JobQuery:
    """Filters of a job list. `since`/`until` bound the creation time (inclusive); `file_prefix` is case-sensitive."""

    partner: str | None = None
    status: str | None = None
    job_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    file_prefix: str | None = None

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        until = self.until or now
        return self.since or (until - DEFAULT_WINDOW), until

    def matches(self, job: Job, now: datetime) -> bool:
        since, until = self.window(now)
        return ((not self.partner or job.partner == self.partner)
                and (not self.status or job.status.value == self.status)
                and (not self.job_type or job.job_type.value == self.job_type)
                and (not self.file_prefix or job.file_name.startswith(self.file_prefix))
                and since <= job.created_at <= until)


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after row `row_key` of month `month`."""

    month: str
    row_key: str

    def encode(self) -> str:
        return f"{self.month}|{self.row_key}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        month, sep, row_key = text.partition("|")
        if not sep or len(month) != 6 or not month.isdigit() or not row_key:
            raise ValueError("not a job list cursor")
        return cls(month, row_key)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None  # None: no more pages
