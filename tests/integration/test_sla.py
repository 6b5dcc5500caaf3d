"""SLA windows on Azurite: the SlaWindows adapter and the fake keep one contract, landed_between reads the
partner's IntegrationJob ranges, and two instances racing on one window record and alert it once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.sla import SlaWindowsClient
from shared.bootstrap import build_services
from shared.catalog import parse_catalog
from shared.domain.ids import new_job_id
from shared.domain.sla import SlaWindow, WindowState
from shared.ports import JobStore, SlaWindows
from shared.resources import SLA_TABLE
from shared.services.sla import check_expectations
from shared.settings import Settings
from tests.fakes import FakeJobStore, FakePublisher, FakeSlaWindows
from tests.table_stores import drop_tables, job_store, table_prefix, table_store

pytestmark = pytest.mark.azurite

OPENS = datetime(2026, 12, 1, 6, tzinfo=UTC)


@pytest.fixture(params=["fake", "azurite"])
def windows(request: pytest.FixtureRequest) -> Iterator[SlaWindows]:
    yield from table_store(request, FakeSlaWindows, SlaWindowsClient)


@pytest.fixture(params=["fake", "azurite"])
def jobs(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    yield from job_store(request)


def window(expectation: str = "orders_*.csv", opens: datetime = OPENS, **kw: Any) -> SlaWindow:
    values: dict[str, Any] = {"partner": "acme", "expectation": expectation, "opens": opens,
                              "closes": opens + timedelta(hours=2), "state": WindowState.MISSED, "count": 0,
                              "min_count": 1, "evaluated_at": opens + timedelta(hours=2, minutes=5)}
    values.update(kw)
    return SlaWindow(**values)


def test_create_is_insert_if_absent_and_update_is_etag_checked(windows: SlaWindows) -> None:
    first = windows.create(window())
    assert first is not None and first.etag
    assert windows.create(window(state=WindowState.MET, count=3)) is None
    (stored,) = windows.windows("acme", "orders_*.csv", since=OPENS)
    assert (stored.state, stored.count, stored.closes, stored.expectation) == (
        WindowState.MISSED, 0, OPENS + timedelta(hours=2), "orders_*.csv")
    recovered = windows.update(replace(stored, state=WindowState.RECOVERED, late_count=1,
                                       recovered_at=OPENS + timedelta(hours=3)))
    assert recovered is not None and recovered.etag != stored.etag
    assert windows.update(replace(stored, late_count=9)) is None  # stale ETag: another instance wrote first
    (now,) = windows.windows("acme", "orders_*.csv", since=OPENS)
    assert (now.state, now.late_count, now.recovered_at) == (WindowState.RECOVERED, 1, OPENS + timedelta(hours=3))


def test_windows_are_read_by_expectation_and_opening(windows: SlaWindows) -> None:
    for key in ("orders_*.csv", "orders_*.csv2", "orders_?#.csv"):
        for day in range(3):
            assert windows.create(window(key, OPENS + timedelta(days=day))) is not None
    assert windows.create(window(partner="other")) is not None
    got = windows.windows("acme", "orders_*.csv", since=OPENS + timedelta(days=1))
    assert [(w.expectation, w.opens) for w in got] == [
        ("orders_*.csv", OPENS + timedelta(days=1)), ("orders_*.csv", OPENS + timedelta(days=2))]
    assert len(windows.windows("acme", "orders_?#.csv", since=OPENS)) == 3
    assert len(windows.recent(partner="acme", since=OPENS + timedelta(days=2))) == 3
    assert {w.partner for w in windows.recent(since=OPENS)} == {"acme", "other"}


def _land(jobs: JobStore, partner: str, name: str, at: datetime, *, job_type: str = "SFTP_INGEST",
          job_id: str | None = None, landed: bool = True) -> str:
    job_id = job_id or new_job_id(at)
    jobs.append(job_id, "job.created", {"partner": partner, "job_type": job_type, "file_name": name})
    if landed:
        jobs.append(job_id, "file.landed", {"blob_path": f"{partner}/{name}", "bytes": 1, "sha256": "x"})
    return job_id


def test_landed_between_reads_polled_and_dropped_jobs_of_one_partner(jobs: JobStore) -> None:
    inside = _land(jobs, "acme", "a.csv", OPENS + timedelta(minutes=1))
    drop = _land(jobs, "acme", "b.csv", OPENS, job_id=f"job-drop-{OPENS:%Y%m%d%H%M%S%f}-0123456789ab")
    _land(jobs, "acme", "early.csv", OPENS - timedelta(microseconds=1))
    _land(jobs, "acme", "late.csv", OPENS + timedelta(hours=2))  # the window's end is exclusive
    _land(jobs, "acme", "replayed.csv", OPENS + timedelta(minutes=2), job_type="REPLAY")
    _land(jobs, "acme", "never.csv", OPENS + timedelta(minutes=3), landed=False)  # no blob: did not land
    _land(jobs, "other", "a.csv", OPENS + timedelta(minutes=1))
    found = jobs.landed_between("acme", OPENS, OPENS + timedelta(hours=2))
    assert sorted(j.job_id for j in found) == sorted([inside, drop])
    assert {j.file_name for j in found} == {"a.csv", "b.csv"}


class RacingClient(SlaWindowsClient):
    """An instance that reads "nothing recorded", then waits until the other has read too."""

    barrier: threading.Barrier

    def windows(self, partner: str, expectation: str, *, since: datetime) -> list[SlaWindow]:
        found = super().windows(partner, expectation, since=since)
        self.barrier.wait()
        return found


def test_two_instances_racing_on_azurite_record_and_alert_a_window_once(azurite: str) -> None:
    prefix = table_prefix()
    RacingClient.barrier = threading.Barrier(2, timeout=20)
    catalog = parse_catalog('partners:\n  - id: acme\n    name: Acme\n    expect:\n'
                            '      - {name: "orders_*.csv", every: "0 0 7 * * 1-5", within: 2h, '
                            'timezone: Europe/Amsterdam}\n')
    jobs = FakeJobStore()
    instances = []
    for _ in range(2):  # separate clients, separate connections: two hosts on one storage account
        client = RacingClient.from_connection_string(azurite, prefix=prefix)
        client.ensure_table()
        instances.append(build_services(Settings(), catalog=catalog, jobs=jobs, sla_windows=client,
                                        publisher=FakePublisher()))
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: reports.append(
        check_expectations(s, now=OPENS + timedelta(hours=2, minutes=5)))) for s in instances]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted((len(r.missed), r.already) for r in reports) == [(0, 1), (1, 0)]
        published = [e for s in instances for e in s.publisher.published]  # type: ignore[attr-defined]
        assert [(kind, data["window"]) for kind, data, _ in published] == [
            ("sla.missed", "2026-12-01T06:00:00Z/2026-12-01T08:00:00Z")]
        stored = SlaWindowsClient.from_connection_string(azurite, prefix=prefix).windows("acme", "orders_*.csv",
                                                                                         since=OPENS)
        assert [(w.state, w.count) for w in stored] == [(WindowState.MISSED, 0)]
    finally:
        drop_tables(azurite, prefix, [SLA_TABLE])
