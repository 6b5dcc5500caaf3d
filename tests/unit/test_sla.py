"""Expected files (the SLA): catalogue `expect:`, windows in local time across DST, once-only evaluation,
misses and recoveries, on fakes with a fake clock (`now=` is the clock; nothing reads the wall clock)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import metrics
from shared.bootstrap import Services, build_services
from shared.catalog import CatalogError, parse_catalog
from shared.cli import main as wharf
from shared.domain.ids import id_time, new_job_id
from shared.domain.sla import WindowState, parse_row_key, window_row_key
from shared.observability import setup
from shared.services.sla import check_expectations, sla_status
from shared.settings import Settings
from tests.fakes import FakeJobStore, FakePublisher, FakeSlaWindows

PARTNER = "acme-sla"
AMS = "Europe/Amsterdam"


def catalog(*expect: str, partner: str = PARTNER) -> Any:
    items = "\n".join(f"      - {e}" for e in expect)
    return parse_catalog(f"partners:\n  - id: {partner}\n    name: Acme\n    expect:\n{items}\n")


WEEKDAYS_7 = f'{{name: "orders_*.csv", every: "0 0 7 * * 1-5", within: 2h, min_count: 1, timezone: {AMS}}}'


class World:
    """Fake jobs, windows and publisher behind one Services; `land` records a file at a given instant."""

    def __init__(self, *expect: str, sla: FakeSlaWindows | None = None, jobs: FakeJobStore | None = None) -> None:
        self.jobs = jobs or FakeJobStore()
        self.sla = sla or FakeSlaWindows()
        self.publisher = FakePublisher()
        self.services: Services = build_services(Settings(WHARF_SLA_GRACE_SECONDS=300), catalog=catalog(*expect),
                                                 jobs=self.jobs, sla_windows=self.sla, publisher=self.publisher)

    def land(self, name: str, at: datetime, *, drop: bool = False, partner: str = PARTNER) -> str:
        job_id = new_job_id(at)
        if drop:
            job_id = f"job-drop-{at.astimezone(UTC):%Y%m%d%H%M%S%f}-{job_id[-12:]}"
        self.jobs.append(job_id, "job.created", {"partner": partner, "job_type": "SFTP_INGEST", "file_name": name})
        self.jobs.append(job_id, "file.landed", {"blob_path": f"{partner}/{name}", "bytes": 1, "sha256": "x"})
        return job_id

    def check(self, now: datetime) -> Any:
        return check_expectations(self.services, now=now)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data, _ in self.publisher.published if k == kind]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- catalogue -----------------------------------------------------------------------------------------------


def test_the_readme_example_parses_with_its_defaults() -> None:
    (exp,) = catalog(WEEKDAYS_7).get(PARTNER).expect
    assert (exp.name, exp.every, exp.within, exp.min_count, exp.timezone, exp.key) == (
        "orders_*.csv", "0 0 7 * * 1-5", timedelta(hours=2), 1, AMS, "orders_*.csv")
    (plain,) = catalog('{name: "x*.txt", every: "0 6 * * *", within: 1h30m}').get(PARTNER).expect
    assert plain.timezone == "UTC" and plain.within == timedelta(minutes=90) and plain.min_count == 1


@pytest.mark.parametrize(("item", "field", "message"), [
    ('{name: "a*", every: "0 0 7 * * 1-9", within: 2h}', "every", "not a valid cron expression"),
    ('{name: "a*", every: "every day", within: 2h}', "every", "cron expression with 6 fields"),
    ('{name: "a*", every: "0 0 7 * * *", within: 2 hours}', "within", 'duration such as "2h"'),
    ('{name: "a*", every: "0 0 7 * * *", within: 30s}', "within", "at least 1 minute and at most 7 days"),
    ('{name: "a*", every: "0 0 7 * * *", within: 8d}', "within", "at least 1 minute and at most 7 days"),
    ('{name: "a*", every: "0 0 7 * * *", within: true}', "within", "not true or false"),
    ('{name: "a*", every: "0 0 7 * * *", within: 2h, timezone: Europe/Amsterdm}', "timezone",
     "did you mean 'Europe/Amsterdam'"),
    ('{name: "a*", every: "0 0 7 * * *", within: 2h, timezone: "CET+1"}', "timezone", "IANA time zone"),
    ('{name: "a*", every: "0 0 7 * * *", within: 2h, min_count: 0}', "min_count", "between 1 and 10000"),
    ('{name: "in/a*", every: "0 0 7 * * *", within: 2h}', "name", "must not contain /"),
    ('{name: "a*", every: "0 0 7 * * *", within: 2h, after: 1}', "after", "unknown key; expected one of name, every"),
])
def test_a_bad_expectation_is_one_clear_catalogue_error(item: str, field: str, message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        catalog(item)
    text = str(caught.value)
    assert f"partners[{PARTNER}].expect[0].{field}" in text and message in text, text


def test_two_expectations_with_one_key_are_refused() -> None:
    with pytest.raises(CatalogError, match=r"expect\[1\]\.name: is already used by expect\[0\]"):
        catalog('{name: "a*", every: "0 0 7 * * *", within: 2h}', '{name: "a*", every: "0 0 9 * * *", within: 1h}')
    both = catalog('{name: "a*", every: "0 0 7 * * *", within: 2h}',
                   '{name: "a*", every: "0 0 9 * * *", within: 1h, id: late-a}')
    assert [e.key for e in both.get(PARTNER).expect] == ["a*", "late-a"]


def test_window_keys_round_trip_odd_pattern_characters() -> None:
    opens = utc(2026, 12, 1, 6)
    key = window_row_key("orders_?#[0-9]*.csv", opens)
    assert "#" not in key and "?" not in key and "/" not in key
    assert parse_row_key(key) == ("orders_?#[0-9]*.csv", opens)
    assert id_time(new_job_id(opens)) == opens
    assert id_time(f"job-drop-{opens:%Y%m%d%H%M%S%f}-abcdef012345") == opens
    assert id_time("not-a-job") is None


# --- windows and DST -------------------------------------------------------------------------------------------


def test_windows_follow_local_time_across_both_dst_changes() -> None:
    (exp,) = catalog(f'{{name: "a*", every: "0 0 7 * * *", within: 2h, timezone: {AMS}}}').get(PARTNER).expect
    spring = list(exp.opens_between(utc(2026, 3, 28), utc(2026, 3, 30)))  # CET -> CEST on 29 March
    assert spring == [utc(2026, 3, 28, 6), utc(2026, 3, 29, 5)]
    autumn = list(exp.opens_between(utc(2026, 10, 24), utc(2026, 10, 26)))  # CEST -> CET on 25 October
    assert autumn == [utc(2026, 10, 24, 5), utc(2026, 10, 25, 6)]


def test_a_window_in_the_missing_hour_opens_when_the_clock_jumps_and_a_repeated_hour_opens_once() -> None:
    (exp,) = catalog(f'{{name: "a*", every: "0 30 2 * * *", within: 1h, timezone: {AMS}}}').get(PARTNER).expect
    # 29 March 2026 02:30 does not exist in Amsterdam: the window opens at 01:30Z (= 03:30 CEST).
    assert list(exp.opens_between(utc(2026, 3, 29), utc(2026, 3, 30))) == [utc(2026, 3, 29, 1, 30)]
    # 25 October 2026 02:30 happens twice (00:30Z CEST, 01:30Z CET): one window, at the first.
    assert list(exp.opens_between(utc(2026, 10, 24, 12), utc(2026, 10, 25, 12))) == [utc(2026, 10, 25, 0, 30)]
    assert exp.next_open(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_spring_forward_day_counts_the_file_that_came_at_local_seven() -> None:
    world = World(f'{{name: "orders_*.csv", every: "0 0 7 * * *", within: 1h, timezone: {AMS}}}')
    world.land("orders_1.csv", utc(2026, 3, 29, 5, 10))  # 07:10 CEST: in the window (05:00Z-06:00Z)
    report = world.check(utc(2026, 3, 29, 6, 10))
    assert [(w.opens, w.state, w.count) for w in report.met] == [(utc(2026, 3, 29, 5), WindowState.MET, 1)]
    assert report.missed == []


def test_fall_back_day_misses_a_file_at_the_old_offset() -> None:
    world = World(f'{{name: "orders_*.csv", every: "0 0 7 * * *", within: 1h, timezone: {AMS}}}')
    world.check(utc(2026, 10, 24, 6, 10))  # the day before: first check, records 24 October (missed)
    world.land("orders_1.csv", utc(2026, 10, 25, 5, 10))  # 06:10 CET: before the window (06:00Z-07:00Z)
    report = world.check(utc(2026, 10, 25, 7, 10))
    assert [(w.opens, w.count) for w in report.missed] == [(utc(2026, 10, 25, 6), 0)]


# --- on time, late, missing ------------------------------------------------------------------------------------


def test_on_time_records_a_met_window_and_alerts_nothing(caplog: pytest.LogCaptureFixture) -> None:
    otel = setup.for_tests()
    world = World(WEEKDAYS_7)
    world.land("orders_20261201.csv", utc(2026, 12, 1, 6, 30))  # Tuesday 07:30 CET
    world.land("invoices.csv", utc(2026, 12, 1, 6, 31))  # another name: not counted
    assert world.check(utc(2026, 12, 1, 7, 59)).met == []  # still open (closes 08:00Z)
    assert world.check(utc(2026, 12, 1, 8, 4)).met == []  # closed, within the grace
    with caplog.at_level(logging.WARNING, logger="shared.services.sla"):
        report = world.check(utc(2026, 12, 1, 8, 5))
    assert [(w.window, w.state, w.count) for w in report.met] == [
        ("2026-12-01T06:00:00Z/2026-12-01T08:00:00Z", WindowState.MET, 1)]
    assert world.publisher.published == [] and caplog.records == []
    assert otel.metric_points(metrics.SLA_MISSED) == []
    assert world.check(utc(2026, 12, 1, 8, 10)).met == []  # evaluated once


def test_missing_file_records_sla_missed_once_with_event_metric_and_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    otel = setup.for_tests()
    world = World(WEEKDAYS_7)
    world.land("orders_early.csv", utc(2026, 12, 1, 5, 59))  # before the window opened: not counted
    with caplog.at_level(logging.WARNING, logger="shared.services.sla"):
        report = world.check(utc(2026, 12, 1, 8, 5))
        again = world.check(utc(2026, 12, 1, 8, 10))
    (window,) = report.missed
    assert (window.partner, window.expectation, window.count, window.state) == (
        PARTNER, "orders_*.csv", 0, WindowState.MISSED)
    assert again.missed == [] and again.met == []
    (event,) = world.events("sla.missed")
    assert (event["partner"], event["expectation"], event["window"], event["count"], event["min_count"]) == (
        PARTNER, "orders_*.csv", "2026-12-01T06:00:00Z/2026-12-01T08:00:00Z", 0, 1)
    assert event["opens_local"] == "2026-12-01T07:00:00+01:00"
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "sla missed" in record.getMessage() and vars(record)["partner"] == PARTNER
    (point,) = otel.metric_points(metrics.SLA_MISSED)
    assert point.attributes == {"partner": PARTNER, "expectation": "orders_*.csv"} and point.value == 1


def test_a_late_file_after_a_miss_records_sla_recovered_once() -> None:
    otel = setup.for_tests()
    world = World(WEEKDAYS_7)
    assert len(world.check(utc(2026, 12, 1, 8, 5)).missed) == 1
    world.land("orders_late.csv", utc(2026, 12, 1, 9, 40))
    report = world.check(utc(2026, 12, 1, 9, 45))
    (window,) = report.recovered
    assert (window.state, window.count, window.late_count) == (WindowState.RECOVERED, 0, 1)
    assert world.check(utc(2026, 12, 1, 9, 50)).recovered == []
    (event,) = world.events("sla.recovered")
    assert event["state"] == "recovered" and event["late_count"] == 1
    assert [p.value for p in otel.metric_points(metrics.SLA_RECOVERED)] == [1]
    assert [p.value for p in otel.metric_points(metrics.SLA_MISSED)] == [1]


def test_a_file_after_the_next_window_opened_does_not_recover_the_old_one() -> None:
    world = World(WEEKDAYS_7)
    world.check(utc(2026, 12, 1, 8, 5))  # Tuesday missed
    world.land("orders_wed.csv", utc(2026, 12, 2, 6, 30))  # Wednesday's file
    report = world.check(utc(2026, 12, 2, 8, 5))
    assert report.recovered == [] and [w.opens for w in report.met] == [utc(2026, 12, 2, 6)]


def test_min_count_drop_files_and_weekends() -> None:
    world = World('{name: "batch_*.dat", every: "0 0 6 * * 1-5", within: 3h, min_count: 2}')
    world.land("batch_1.dat", utc(2026, 12, 4, 6, 5))  # Friday
    world.land("BATCH_2.DAT", utc(2026, 12, 4, 7, 0), drop=True)  # globs are case-insensitive; drops count
    world.check(utc(2026, 12, 4, 9, 0))  # first check: 15 minutes of slack only, Friday is not due yet
    report = world.check(utc(2026, 12, 4, 9, 5))
    assert [(w.state, w.count) for w in report.met] == [(WindowState.MET, 2)]
    assert world.check(utc(2026, 12, 7, 5, 0)).missed == []  # Saturday and Sunday have no window


def test_replays_and_other_partners_do_not_count() -> None:
    world = World(WEEKDAYS_7)
    world.land("orders_x.csv", utc(2026, 12, 1, 6, 30), partner="someone-else")
    job_id = new_job_id(utc(2026, 12, 1, 6, 40))
    world.jobs.append(job_id, "job.created", {"partner": PARTNER, "job_type": "REPLAY", "file_name": "orders_x.csv"})
    world.jobs.append(job_id, "file.landed", {"blob_path": "p/orders_x.csv", "bytes": 1, "sha256": "x"})
    assert [w.count for w in world.check(utc(2026, 12, 1, 8, 5)).missed] == [0]


def test_a_restart_catches_up_closed_windows_and_a_new_expectation_does_not_alert_on_the_past() -> None:
    world = World(WEEKDAYS_7)
    # First ever check, a day after Tuesday's window closed: nothing recorded, so only the last 15 minutes count.
    assert world.check(utc(2026, 12, 2, 12)).missed == []
    assert len(world.check(utc(2026, 12, 3, 8, 5)).missed) == 1  # Thursday: the first window recorded
    assert world.check(utc(2026, 12, 3, 8, 10)).missed == []  # Wednesday predates it: never evaluated
    # The timer was down from Thursday morning to Saturday: Friday is caught up, once.
    report = world.check(utc(2026, 12, 5, 5))
    assert [w.opens for w in report.missed] == [utc(2026, 12, 4, 6)]
    assert world.check(utc(2026, 12, 5, 5, 5)).missed == []


class RacingWindows(FakeSlaWindows):
    """Both instances read "nothing recorded" before either writes: the insert-if-absent decides."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def windows(self, partner: str, expectation: str, *, since: datetime) -> list[Any]:
        found = super().windows(partner, expectation, since=since)
        self.barrier.wait()
        return found


def test_two_instances_racing_on_one_window_alert_once() -> None:
    otel = setup.for_tests()
    sla, jobs = RacingWindows(2), FakeJobStore()
    a, b = World(WEEKDAYS_7, sla=sla, jobs=jobs), World(WEEKDAYS_7, sla=sla, jobs=jobs)
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda w=w: reports.append(w.check(utc(2026, 12, 1, 8, 5))))
               for w in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((len(r.missed), r.already) for r in reports) == [(0, 1), (1, 0)]
    assert len(a.events("sla.missed")) + len(b.events("sla.missed")) == 1
    assert [p.value for p in otel.metric_points(metrics.SLA_MISSED)] == [1]


# --- status and CLI --------------------------------------------------------------------------------------------


def test_status_lists_open_next_and_recorded_windows() -> None:
    world = World(WEEKDAYS_7)
    world.check(utc(2026, 12, 1, 8, 5))
    rows = sla_status(world.services, now=utc(2026, 12, 2, 6, 30))
    (row,) = rows
    assert row["missed"] == 1 and row["windows"][0]["state"] == "missed"
    assert row["open_window"].startswith("2026-12-02 07:00 CET (06:00Z)")
    assert row["next_window"].startswith("2026-12-03 07:00 CET")


def test_cli_status_prints_the_miss(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    world = World(WEEKDAYS_7)
    world.check(utc(2026, 12, 1, 8, 5))
    monkeypatch.setattr("shared.cli.sla.services", lambda: world.services)
    monkeypatch.setattr("shared.domain.jobs.utcnow", lambda: utc(2026, 12, 1, 9))
    assert wharf(["sla", "status", "--partner", PARTNER]) == 0
    out = capsys.readouterr().out
    assert f"{PARTNER} / orders_*.csv" in out and "1 missed" in out
    assert "2026-12-01T06:00:00Z/2026-12-01T08:00:00Z  missed    0/1" in out
