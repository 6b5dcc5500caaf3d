"""The jobs sweep and replay against the fakes: no job stays PENDING or RUNNING once its work has ended."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.bootstrap import Services, build_services
from shared.domain.errors import DependencyUnavailableError
from shared.domain.ids import new_job_id
from shared.domain.job_index import JobPage, JobQuery
from shared.domain.jobs import EventType, JobEvent, JobStatus, utcnow
from shared.domain.messages import FileLanded
from shared.services.intake import replay
from shared.services.sweep import SweepSummary, sweep_jobs
from shared.settings import Settings
from tests.fakes import FakeBlobStore, FakeDurableClient, FakeJobStore, FakeMessageQueue, FakePublisher

LANDED = "file-landed"
FAILED_OUTPUT = "Orchestrator function 'process_file_orchestrator' failed: boom"


class DownQueue(FakeMessageQueue):
    """A queue service that refuses sends while `down` (connection refused)."""

    down = False

    def send(self, queue: str, message: Any, *, visibility_timeout: int | None = None) -> None:
        if self.down:
            raise ServiceRequestError("<urlopen error [Errno 111] Connection refused>")
        super().send(queue, message, visibility_timeout=visibility_timeout)


class World:
    def __init__(self, **settings: Any) -> None:
        self.jobs, self.blobs, self.queues = FakeJobStore(), FakeBlobStore(), DownQueue()
        self.publisher, self.client = FakePublisher(), FakeDurableClient()
        self.services: Services = build_services(
            Settings(LANDED_QUEUE=LANDED, POLL_QUEUE="poll-requests", WHARF_EVENTS_QUEUE="events", **settings),
            jobs=self.jobs, blobs=self.blobs, queues=self.queues, publisher=self.publisher)
        self.queues.ensure_queues(self.services.queue_names())

    def job(self, status: JobStatus = JobStatus.PENDING, *, routed: int = 0, archived: bool = False,
            landed: bool = True) -> str:
        job_id = new_job_id()
        self.jobs.append(job_id, EventType.CREATED, {"partner": "acme", "job_type": "UPLOAD", "source": "test",
                                                     "file_name": "a.csv"})
        if landed:
            info = self.blobs.upload_stream("inbound", f"acme/{job_id}/a.csv", [b"id\n1\n"])
            self.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/acme/{job_id}/a.csv",
                                                             "bytes": info.size, "sha256": info.sha256,
                                                             "file_name": "a.csv"})
        if status is JobStatus.RUNNING:
            self.jobs.append(job_id, EventType.STARTED, {"instance_id": job_id})
        for index in range(routed):
            self.jobs.append(job_id, EventType.ROUTED, {"route": "r", "index": index, "kind": "blob"})
        if archived:
            self.jobs.append(job_id, EventType.STEP_COMPLETED, {"step": "archive", "archive": "archive/x"})
        return job_id

    def sweep(self, minutes: float) -> SweepSummary:
        return asyncio.run(sweep_jobs(self.services, self.client, now=utcnow() + timedelta(minutes=minutes)))

    def status(self, job_id: str) -> JobStatus:
        return self.jobs.get_job(job_id).status

    def landed(self) -> list[dict[str, Any]]:
        return self.queues.messages(LANDED)

    def last(self, job_id: str) -> Any:
        return self.jobs.events(job_id)[-1]

    def failed_published(self) -> list[str]:
        return [data["job_id"] for kind, data, _ in self.publisher.published if kind == "job.failed"]


def test_pending_job_without_orchestration_is_resent_then_failed_after_the_bound() -> None:
    w = World(WHARF_PENDING_RESEND_MAX="2")
    job_id = w.job()
    assert w.sweep(minutes=5).resent == [] and w.landed() == []  # younger than WHARF_PENDING_RESEND_MINUTES

    assert w.sweep(minutes=11).resent == [job_id]
    message = FileLanded.model_validate(w.landed()[0])
    assert (message.job_id, message.container, message.blob_path) == (job_id, "inbound", f"acme/{job_id}/a.csv")
    note = w.last(job_id)
    assert note.type is EventType.NOTE and note.data["sweep"] == "resend" and note.data["attempt"] == 1
    assert "re-sent to file-landed (attempt 1 of 2)" in note.data["reason"]
    assert w.status(job_id) is JobStatus.PENDING
    # The next re-send waits for the age again, counted from the last one.
    assert w.sweep(minutes=5).resent == []
    assert w.sweep(minutes=11).resent == [job_id] and len(w.landed()) == 2

    summary = w.sweep(minutes=11)
    assert summary.resent == [] and summary.failed == [job_id] and len(w.landed()) == 2
    job = w.jobs.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error.startswith("not started: re-sent to the file-landed queue 2 time(s)")
    assert w.last(job_id).data["recorded_by"] == "sweep"
    assert w.failed_published() == [job_id]
    assert w.blobs.list_blobs("quarantine", "acme/")  # the raw file is quarantined, as on any failure


def test_pending_job_with_no_landed_file_is_failed_with_the_reason() -> None:
    w = World()
    job_id = w.job(landed=False)
    assert w.sweep(minutes=11).failed == [job_id]
    assert w.jobs.get_job(job_id).error.startswith("no landed file recorded")
    assert w.landed() == []


def test_jobs_whose_orchestration_still_runs_are_left_alone() -> None:
    w = World()
    pending, running = w.job(), w.job(JobStatus.RUNNING)
    w.client.set(pending, "Pending")
    w.client.set(running, "Running", custom_status={"step": "route"})
    events = {j: len(w.jobs.events(j)) for j in (pending, running)}
    summary = w.sweep(minutes=600)
    assert summary.alive == 2 and summary.resent == summary.completed == summary.failed == []
    # Left alone: only the report that they are stalled (10 h open, over WHARF_STALLED_MINUTES) is recorded.
    assert sorted(summary.stalled) == sorted([pending, running])
    acted = {j: len([e for e in w.jobs.events(j) if e.type is not EventType.STALLED]) for j in (pending, running)}
    assert acted == events and w.landed() == []


def test_running_job_is_checked_only_once_it_is_older_than_the_running_age() -> None:
    w = World()
    job_id = w.job(JobStatus.RUNNING)
    assert w.sweep(minutes=20).examined == 0 and w.client.queried == []
    assert w.sweep(minutes=31).failed == [job_id]


def test_completion_that_could_not_be_recorded_is_completed_by_the_sweep_never_failed() -> None:
    w = World()
    job_id = w.job(JobStatus.RUNNING, routed=2, archived=True)
    w.client.set(job_id, "Completed", {"job_id": job_id, "status": "COMPLETED", "completion_pending": True,
                                       "routes": [{"kind": "blob"}, {"kind": "event"}], "rows": 3,
                                       "reason": "complete_job failed: table unavailable"})
    assert w.sweep(minutes=31).completed == [job_id]
    job = w.jobs.get_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.error == ""
    completed = w.last(job_id)
    assert completed.type is EventType.COMPLETED and completed.data["recorded_by"] == "sweep"
    assert (completed.data["routes"], completed.data["rows"]) == (2, 3)
    assert "complete_job failed: table unavailable" in completed.data["note"]
    assert w.failed_published() == [] and w.blobs.list_blobs("quarantine", "acme/") == []
    # Idempotent: the next run finds nothing to do.
    events = len(w.jobs.events(job_id))
    assert w.sweep(minutes=31).examined == 0 and len(w.jobs.events(job_id)) == events


def test_completed_orchestration_whose_deliveries_are_not_all_recorded_is_failed() -> None:
    w = World()
    job_id = w.job(JobStatus.RUNNING, routed=1, archived=True)
    w.client.set(job_id, "Completed", {"status": "COMPLETED", "completion_pending": True,
                                       "routes": [{"kind": "blob"}, {"kind": "event"}]})
    assert w.sweep(minutes=31).failed == [job_id]
    assert "record 1 of 2 deliveries" in w.jobs.get_job(job_id).error


@pytest.mark.parametrize("runtime", ["Failed", "Terminated"])
def test_orchestration_that_ended_abnormally_fails_the_job_with_its_output(runtime: str) -> None:
    w = World()
    job_id = w.job(JobStatus.RUNNING, routed=1)
    w.client.set(job_id, runtime, FAILED_OUTPUT, custom_status={"step": "route"})
    assert w.sweep(minutes=31).failed == [job_id]
    job = w.jobs.get_job(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == f"orchestration ended as {runtime}: {FAILED_OUTPUT}"
    assert w.last(job_id).data["step"] == "route"
    step_failed = [e for e in w.jobs.events(job_id) if e.type is EventType.STEP_FAILED]
    assert step_failed and step_failed[0].data["quarantine"].endswith(f"/{job_id}/a.csv")
    assert w.failed_published() == [job_id]


def test_running_job_whose_orchestration_is_gone_is_failed_as_lost() -> None:
    w = World()
    job_id = w.job(JobStatus.RUNNING)
    assert w.sweep(minutes=31).failed == [job_id]
    assert w.jobs.get_job(job_id).error.startswith("orchestration lost")


def test_failure_the_orchestration_could_not_record_is_recorded_from_its_output() -> None:
    w = World()
    job_id = w.job()  # start_job never got through: the job is still PENDING
    reason = "Activity function 'start_job' failed: down; quarantine failed: down; fail_job failed: down"
    w.client.set(job_id, "Completed", {"job_id": job_id, "status": "FAILED", "step": "start", "reason": reason,
                                       "fail_pending": True})
    assert w.sweep(minutes=11).failed == [job_id]
    job = w.jobs.get_job(job_id)
    assert (job.status, job.error) == (JobStatus.FAILED, reason)
    assert w.last(job_id).data["step"] == "start" and w.landed() == []


def test_sweep_is_bounded_oldest_first_and_survives_a_failing_durable_client() -> None:
    w = World(WHARF_SWEEP_MAX_JOBS="2")
    ids = [w.job() for _ in range(4)]
    summary = w.sweep(minutes=11)
    assert summary.due == 4 and summary.resent == ids[:2]
    w.client.down = RuntimeError("durable task hub unreachable")
    summary = w.sweep(minutes=11)
    assert summary.resent == [] and summary.errors == ids[2:]
    assert [w.status(j) for j in ids] == [JobStatus.PENDING] * 4


def test_old_running_orchestrations_do_not_keep_the_sweep_from_the_orphans_behind_them() -> None:
    w = World(WHARF_SWEEP_MAX_JOBS="1")
    alive = [w.job(JobStatus.RUNNING) for _ in range(3)]
    for job_id in alive:
        w.client.set(job_id, "Running")
    orphan = w.job()
    summary = w.sweep(minutes=31)
    assert (summary.alive, summary.resent, summary.examined) == (3, [orphan], 4)
    # The checks are bounded too (CHECKS_PER_ACTION per job a run may act on).
    many = World(WHARF_SWEEP_MAX_JOBS="1")
    for _ in range(12):
        many.client.set(many.job(), "Pending")
    assert many.sweep(minutes=11).examined == 10


def test_replay_whose_send_fails_answers_a_clear_error_and_the_sweep_runs_it() -> None:
    w = World()
    old = w.job(JobStatus.RUNNING)
    w.jobs.append(old, EventType.FAILED, {"reason": "bad row", "step": "validate"})
    w.queues.down = True
    with pytest.raises(DependencyUnavailableError) as err:
        replay(w.services, old)
    message = str(err.value)
    assert "\n" not in message and "Connection refused" in message
    new_id = w.jobs.get_job(old).replayed_by
    assert new_id and f"recorded as job {new_id}" in message and "sweep" in message
    new = w.jobs.get_job(new_id)
    assert new.status is JobStatus.PENDING and new.parent_job_id == old
    assert "Connection refused" in w.last(new_id).data["reason"]

    w.queues.down = False
    assert w.sweep(minutes=11).resent == [new_id]
    assert [m["job_id"] for m in w.landed()] == [new_id]


def test_sweep_makes_a_job_a_crash_left_out_of_the_lists_visible_again() -> None:
    world = World()
    job_id = world.job(JobStatus.PENDING)
    world.jobs.forget_projection(job_id)  # a poll killed between the events and the projection
    assert job_id not in [j.job_id for j in world.jobs.list_jobs()]
    summary = world.sweep(minutes=1)
    assert summary.repaired == [job_id]
    assert [j.job_id for j in world.jobs.list_jobs()] == [job_id]
    assert world.status(job_id) is JobStatus.PENDING


def test_a_sweep_run_reads_each_jobs_events_once_the_stalled_marking_included(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stalled-job marking after the sweep's own work takes the events the sweep read (a PENDING job re-sent
    and still open is stalled too), and reads only the others' (an orchestration still running)."""
    w = World()
    resent, alive = w.job(), w.job(JobStatus.RUNNING)
    w.client.set(alive, "Running")
    reads: Counter[str] = Counter()
    read_events = w.jobs.events

    def counted(job_id: str) -> list[JobEvent]:
        reads[job_id] += 1
        return read_events(job_id)

    monkeypatch.setattr(w.jobs, "events", counted)
    summary = w.sweep(minutes=31)  # older than WHARF_PENDING_RESEND_MINUTES and WHARF_STALLED_MINUTES
    assert summary.resent == [resent] and summary.alive == 1
    assert sorted(summary.stalled) == sorted([resent, alive])
    assert reads == {resent: 1, alive: 1}
    monkeypatch.undo()
    assert [e.type for e in w.jobs.events(resent)][-2:] == [EventType.NOTE, EventType.STALLED]


def test_sweep_reads_open_jobs_of_its_window_through_the_index_never_the_whole_table(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """#14: the sweep asks the JobsByTime query for PENDING and RUNNING jobs created within WHARF_SWEEP_WINDOW_DAYS
    and before each status's age; it never lists the job table. Old and terminal jobs are not among what it reads."""
    w = World(WHARF_SWEEP_WINDOW_DAYS="7")
    old_open, old_done = w.job(), w.job(JobStatus.RUNNING)
    w.jobs.append(old_done, EventType.FAILED, {"reason": "bad row", "step": "validate"})
    queries: list[tuple[JobQuery, int]] = []
    read: list[str] = []
    query_jobs = w.jobs.query_jobs

    def counted(query: JobQuery, **kw: Any) -> JobPage:
        queries.append((query, kw["limit"]))
        page = query_jobs(query, **kw)
        read.extend(j.job_id for j in page.jobs)
        return page

    def full_scan(**_: Any) -> Any:
        raise AssertionError("the sweep listed the whole job table")

    monkeypatch.setattr(w.jobs, "query_jobs", counted)
    monkeypatch.setattr(w.jobs, "list_jobs", full_scan)
    later = utcnow() + timedelta(days=8)  # both jobs are now older than the window
    summary = asyncio.run(sweep_jobs(w.services, w.client, now=later))
    assert summary.due == 0 and summary.examined == 0 and w.client.queried == []
    assert old_open not in read and old_done not in read
    # The sweep's two queries and the stalled marking's two: open statuses, a bounded window, a limit.
    assert {(q.status, q.until) for q, _ in queries} >= {("PENDING", later - timedelta(minutes=10)),
                                                         ("RUNNING", later - timedelta(minutes=30))}
    assert all(q.status in ("PENDING", "RUNNING") and q.since == later - timedelta(days=7) and 0 < limit <= 10_000
               for q, limit in queries)

    # Inside the window the open job is due and the terminal one is still not read.
    read.clear()
    summary = w.sweep(minutes=11)
    assert summary.resent == [old_open] and read.count(old_open) >= 1 and old_done not in read


def test_a_job_touched_after_its_index_row_was_listed_is_left_for_a_later_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing comes from JobsByTime rows; the sweep acts only once the job's projection is old enough too."""
    w = World()
    job_id = w.job()
    summary_now = utcnow() + timedelta(minutes=11)
    get_job = w.jobs.get_job

    def touched(jid: str) -> Any:
        return get_job(jid).model_copy(update={"updated_at": summary_now})  # an event since the index row

    monkeypatch.setattr(w.jobs, "get_job", touched)
    summary = asyncio.run(sweep_jobs(w.services, w.client, now=summary_now))
    assert summary.examined == 1 and summary.resent == summary.failed == [] and w.landed() == []
    assert w.status(job_id) is JobStatus.PENDING and w.last(job_id).type is EventType.FILE_LANDED
