"""Expected files (the SLA): after each window of a partner's `expect:` closes, count the matching files that
landed in it; too few is `sla.missed` (a SlaWindows row, an event, the metric wharf.sla.missed, a warning), and
enough late files before the next window opens is `sla.recovered`.

Each window is evaluated once across instances and restarts: its SlaWindows row is created insert-if-absent,
and only the instance whose insert wins publishes, counts and logs. A recovery is an ETag-conditional update,
so it too is announced once. Files are counted from the partner's IntegrationJob rows by job-id time (claim
time for polls, upload time for drops): two RowKey range reads per expectation and run (`landed_between`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.domain.globs import glob_match
from shared.domain.ids import id_time
from shared.domain.sla import SLA_MISSED, SLA_RECOVERED, SlaWindow, WindowState
from shared.metrics import record_sla_missed, record_sla_recovered
from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.catalog.expect import Expectation

log = logging.getLogger(__name__)

#: A new expectation (no recorded window in the lookback) is evaluated only for windows that closed this
#: recently, and later runs only from its first recorded window on: adding one to the catalogue does not
#: alert on the days before it existed. Gaps after that first window (an outage) are caught up.
FIRST_CHECK_SLACK = timedelta(minutes=15)
_TINY = timedelta(microseconds=1)


@dataclass
class SlaReport:
    """What one run did: windows recorded (met or missed), recovered, and those another instance had."""

    met: list[SlaWindow] = field(default_factory=list)
    missed: list[SlaWindow] = field(default_factory=list)
    recovered: list[SlaWindow] = field(default_factory=list)
    already: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"met": [w.to_dict() for w in self.met], "missed": [w.to_dict() for w in self.missed],
                "recovered": [w.to_dict() for w in self.recovered], "already_recorded": self.already}


def check_expectations(services: Services, *, now: datetime) -> SlaReport:
    """Evaluate every enabled partner's closed windows and recover missed ones; safe on any number of instances."""
    report = SlaReport()
    settings = services.settings
    grace = timedelta(seconds=settings.sla_grace_seconds)
    lookback = timedelta(hours=settings.sla_lookback_hours)
    with span("sla.check", {"wharf.now": now.isoformat()}) as s:
        for partner in services.catalog.partners:
            if not partner.enabled:
                continue
            for expectation in partner.expect:
                _check(services, partner.id, expectation, now=now, grace=grace, lookback=lookback, report=report)
        s.set_attribute("wharf.sla.met", len(report.met))
        s.set_attribute("wharf.sla.missed", len(report.missed))
        s.set_attribute("wharf.sla.recovered", len(report.recovered))
    return report


def _check(services: Services, partner: str, exp: Expectation, *, now: datetime, grace: timedelta,
           lookback: timedelta, report: SlaReport) -> None:
    key = exp.key
    with span("sla.expectation", {"wharf.partner": partner, "wharf.sla.expectation": key}):
        horizon = now - grace  # a window is due once it has been closed this long
        earliest = now - lookback
        recorded = {w.opens: w for w in services.sla_windows.windows(partner, key, since=earliest - exp.within)}
        if recorded:  # windows before the first one recorded predate the expectation (see FIRST_CHECK_SLACK)
            first = min(recorded)
        else:
            earliest = max(earliest, horizon - FIRST_CHECK_SLACK)
            first = earliest - exp.within
        due = [o for o in exp.opens_between(earliest - exp.within, horizon - exp.within + _TINY)
               if o >= first and o not in recorded]
        open_misses = [w for w in recorded.values() if w.state is WindowState.MISSED]
        starts = due + [w.opens for w in open_misses]
        if not starts:
            return
        landed = _landed_times(services, partner, exp, since=min(starts), until=now)
        for opens in due:
            closes = opens + exp.within
            count = sum(1 for t in landed if opens <= t < closes)
            state = WindowState.MET if count >= exp.min_count else WindowState.MISSED
            window = SlaWindow(partner=partner, expectation=key, opens=opens, closes=closes, state=state,
                               count=count, min_count=exp.min_count, evaluated_at=now)
            stored = services.sla_windows.create(window)
            if stored is None:
                report.already += 1
                continue
            if state is WindowState.MET:
                report.met.append(stored)
            else:
                report.missed.append(stored)
                _announce_missed(services, stored, exp)
                open_misses.append(stored)
        for window in open_misses:
            _try_recover(services, window, exp, landed, now=now, report=report)


def _landed_times(services: Services, partner: str, exp: Expectation, *, since: datetime,
                  until: datetime) -> list[datetime]:
    times = []
    for job in services.jobs.landed_between(partner, since, until):
        when = id_time(job.job_id)
        if when is not None and glob_match(job.file_name, exp.name):
            times.append(when)
    return sorted(times)


def _try_recover(services: Services, window: SlaWindow, exp: Expectation, landed: list[datetime], *,
                 now: datetime, report: SlaReport) -> None:
    next_open = exp.next_open(window.opens)
    late = sum(1 for t in landed if window.closes <= t < next_open)
    if window.count + late < window.min_count:
        return
    recovered = services.sla_windows.update(replace(window, state=WindowState.RECOVERED, late_count=late,
                                                    recovered_at=now))
    if recovered is None:  # another instance recovered it (or the row changed): it announces
        return
    report.recovered.append(recovered)
    record_sla_recovered(window.partner, window.expectation)
    log.info("sla recovered: partner %s, expectation %s, window %s: %d late file(s)", window.partner,
             window.expectation, window.window, late,
             extra=log_fields(partner=window.partner, expectation=window.expectation, window=window.window))
    services.publisher.publish(SLA_RECOVERED, _event_data(recovered, exp),
                               subject=f"{window.partner}/{window.expectation}")


def _announce_missed(services: Services, window: SlaWindow, exp: Expectation) -> None:
    record_sla_missed(window.partner, window.expectation)
    log.warning("sla missed: partner %s, expectation %s, window %s: %d of %d file(s) matching %s",
                window.partner, window.expectation, window.window, window.count, window.min_count, exp.name,
                extra=log_fields(partner=window.partner, expectation=window.expectation, window=window.window,
                                 count=window.count))
    services.publisher.publish(SLA_MISSED, _event_data(window, exp), subject=f"{window.partner}/{window.expectation}")


def _event_data(window: SlaWindow, exp: Expectation) -> dict[str, Any]:
    return {**window.to_dict(), "name": exp.name, "timezone": exp.timezone,
            "opens_local": window.opens.astimezone(exp.zone).isoformat()}


# --- status (wharf sla status) -----------------------------------------------------------------------------


def sla_status(services: Services, *, now: datetime, partner: str | None = None,
               hours: float = 48) -> list[dict[str, Any]]:
    """Per expectation: its settings, the window open now (if any), the next one, and the recorded windows of
    the last `hours`, newest first."""
    since = now - timedelta(hours=hours)
    catalog = services.catalog
    partners = [catalog.get(partner)] if partner else list(catalog.partners)
    rows: list[dict[str, Any]] = []
    for p in partners:
        if not p.expect:
            continue
        recorded = services.sla_windows.recent(partner=p.id, since=since - timedelta(days=7))
        for exp in p.expect:
            windows = [w for w in recorded if w.expectation == exp.key and w.closes >= since]
            current = next((o for o in exp.opens_between(now - exp.within + _TINY, now + _TINY)), None)
            upcoming = next(iter(exp.opens_between(now + _TINY, now + timedelta(days=400))), None)
            rows.append({
                "partner": p.id, "expectation": exp.key, "name": exp.name, "every": exp.every,
                "within": str(exp.within), "min_count": exp.min_count, "timezone": exp.timezone,
                "enabled": p.enabled,
                "open_window": _window_text(current, exp) if current else None,
                "next_window": _window_text(upcoming, exp) if upcoming else None,
                "missed": sum(1 for w in windows if w.state is WindowState.MISSED),
                "windows": [w.to_dict() for w in sorted(windows, key=lambda w: w.opens, reverse=True)],
            })
    return rows


def _window_text(opens: datetime, exp: Expectation) -> str:
    local = opens.astimezone(exp.zone)
    return f"{local:%Y-%m-%d %H:%M %Z} ({opens.astimezone(UTC):%H:%M}Z) + {exp.within}"
