"""The repair sweep step on fakes: recent jobs without a projection become visible, older ones are left."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.bootstrap import build_services
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, NewEvent, NewJob
from shared.services.repair import repair_recent_jobs
from shared.settings import Settings
from tests.fakes import FakeJobStore


def _job(jobs: FakeJobStore, at: datetime) -> str:
    job_id = new_job_id(at)
    jobs.create_jobs([NewJob(job_id=job_id, events=[
        NewEvent(type=EventType.CREATED, data={"partner": "acme", "job_type": "SFTP_INGEST", "file_name": "a.csv"}),
        NewEvent(type=EventType.FILE_LANDED, data={"blob_path": "inbound/acme/a.csv", "bytes": 3, "sha256": "ab"})])])
    return job_id


def test_recent_invisible_jobs_are_repaired_once() -> None:
    jobs = FakeJobStore()
    services = build_services(Settings(POLL_QUEUE="p", LANDED_QUEUE="l", WHARF_EVENTS_QUEUE="e"), jobs=jobs)
    now = datetime.now(UTC)
    recent, behind, old, fine = (_job(jobs, now - timedelta(minutes=m)) for m in (5, 20, 120, 1))
    jobs.forget_projection(recent)
    jobs.forget_projection(behind, keep=1)
    jobs.forget_projection(old)
    assert repair_recent_jobs(services, now=now) == sorted([recent, behind])
    assert {j.job_id for j in jobs.list_jobs()} == {recent, behind, fine}
    assert jobs.get_job(behind).blob_path == "inbound/acme/a.csv"
    assert repair_recent_jobs(services, now=now) == []
