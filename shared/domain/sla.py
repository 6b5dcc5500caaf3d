"""SLA windows: one record per (partner, expectation, window), written once when the window is evaluated.

The record's keys are the claim: PartitionKey the partner, RowKey `<expectation key, percent-encoded>|<window
opening, UTC, yyyymmddTHHMMSSZ>`. Creating it is insert-if-absent, so of two instances (or a restart) that
evaluate the same closed window exactly one records it and alerts; the other finds it recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote, unquote


class WindowState(StrEnum):
    MET = "met"  # enough matching files landed inside the window
    MISSED = "missed"  # too few when it closed: sla.missed
    RECOVERED = "recovered"  # missed, then enough (late) files before the next window opened: sla.recovered


SLA_MISSED = "sla.missed"
SLA_RECOVERED = "sla.recovered"
_STAMP = "%Y%m%dT%H%M%SZ"


def window_row_key(expectation: str, opens: datetime) -> str:
    return f"{quote(expectation, safe='')}|{opens.astimezone(UTC):{_STAMP}}"


def expectation_prefix(expectation: str) -> str:
    """Every RowKey of one expectation starts with this (`|` sorts after the encoded key's characters)."""
    return quote(expectation, safe="") + "|"


def parse_row_key(row_key: str) -> tuple[str, datetime]:
    key, _, stamp = row_key.rpartition("|")
    return unquote(key), datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)


@dataclass(frozen=True)
class SlaWindow:
    partner: str
    expectation: str
    opens: datetime
    closes: datetime
    state: WindowState
    count: int  # matching files that landed inside the window when it was evaluated
    min_count: int
    evaluated_at: datetime
    late_count: int = 0  # matching files that landed after it closed, before the next window (recovery)
    recovered_at: datetime | None = None
    etag: str = ""

    @property
    def row_key(self) -> str:
        return window_row_key(self.expectation, self.opens)

    @property
    def window(self) -> str:
        """The window as an operator reads it: `2026-12-01T06:00:00Z/2026-12-01T08:00:00Z`."""
        return f"{self.opens:%Y-%m-%dT%H:%M:%SZ}/{self.closes:%Y-%m-%dT%H:%M:%SZ}"

    def to_dict(self) -> dict[str, object]:
        return {
            "partner": self.partner, "expectation": self.expectation, "window": self.window,
            "opens": self.opens.isoformat(), "closes": self.closes.isoformat(), "state": self.state.value,
            "count": self.count, "min_count": self.min_count, "late_count": self.late_count,
            "evaluated_at": self.evaluated_at.isoformat(),
            "recovered_at": self.recovered_at.isoformat() if self.recovered_at else None,
        }
