"""`expect:` a partner's expected files (the SLA): a name pattern, a cron for when each window opens (in the
partner's time zone), how long it stays open and how many matching files must land in it.

Windows are computed in local wall-clock time and converted with zoneinfo, so daylight saving time is handled:
on the spring-forward day a window opening in the missing hour opens at the same instant the clock jumps to
(02:30 Europe/Amsterdam becomes 03:30 CEST), and on the fall-back day a repeated local time opens one window,
at its first occurrence. `within` is elapsed time (2h is 7200 seconds, even across a change).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from pydantic import AfterValidator, BeforeValidator, Field

from shared.catalog.common import Glob, Number, Schedule, _between, _Model

_DURATION = re.compile(r"(?:(\d+)d)?\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?", re.IGNORECASE)
MAX_WITHIN = timedelta(days=7)
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _duration(value: Any) -> Any:
    """`2h`, `90m`, `1h30m`, `1d`, `45s`, or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError('must be a duration such as "2h", "90m" or "1h30m", not true or false')
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        match = _DURATION.fullmatch(text)
        if not text or not match or not any(match.groups()):
            raise ValueError('must be a duration such as "2h", "90m", "1h30m" or "1d"')
        days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
        return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    return value


def _within_bounds(value: timedelta) -> timedelta:
    if not timedelta(minutes=1) <= value <= MAX_WITHIN:
        raise ValueError("must be at least 1 minute and at most 7 days")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        near = difflib.get_close_matches(value.strip(), sorted(available_timezones()), n=1, cutoff=0.8)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError("must be an IANA time zone such as Europe/Amsterdam or UTC" + hint) from exc
    return value


def _key(value: str) -> str:
    if not _KEY.fullmatch(value):
        raise ValueError("must be 1-64 letters, digits, dots, dashes and underscores, starting with a letter or digit")
    return value


Within = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_within_bounds)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Key = Annotated[str, AfterValidator(_key)]


class Expectation(_Model):
    """At least `min_count` files matching `name` land within `within` of each time `every` fires."""

    name: Glob
    every: Schedule
    within: Within
    min_count: Annotated[int, Number, _between(1, 10_000)] = 1
    timezone: TimeZone = "UTC"
    id: Key | None = Field(default=None, description="the expectation's key; default: the name pattern")

    @property
    def key(self) -> str:
        """What windows are recorded under (with the partner): `id`, else the name pattern."""
        return self.id or self.name

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def opens_between(self, low: datetime, high: datetime) -> Iterator[datetime]:
        """Each window's opening (UTC) in `[low, high)`: the cron run in local time, converted with zoneinfo."""
        zone = self.zone
        seconds_first = len(self.every.split()) == 6
        # Local naive bounds with a day of slack either side (offsets and DST shifts stay well inside it).
        start = low.astimezone(zone).replace(tzinfo=None) - timedelta(days=1)
        stop = high.astimezone(zone).replace(tzinfo=None) + timedelta(days=1)
        runs = croniter(self.every, start, second_at_beginning=seconds_first)
        seen: set[datetime] = set()
        while True:
            local: datetime = runs.get_next(datetime)
            if local > stop:
                return
            # fold=0: a repeated local time (fall back) is its first occurrence; a missing one (spring forward)
            # reads with the offset before the change, which is the instant the clock jumped to.
            opens = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if low <= opens < high and opens not in seen:
                seen.add(opens)
                yield opens

    def window_at(self, opens: datetime) -> tuple[datetime, datetime]:
        return opens, opens + self.within

    def next_open(self, opens: datetime) -> datetime:
        """The next window's opening after the one that opened at `opens` (UTC)."""
        for later in self.opens_between(opens + timedelta(seconds=1), opens + timedelta(days=400)):
            return later
        return opens + timedelta(days=400)  # a cron that fires once a year at most: far enough
