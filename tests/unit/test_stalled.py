"""Stuck jobs: job.stalled recorded once by the sweep for a job still open WHARF_STALLED_MINUTES after its creation,
counted, shown by the API; resume re-queues the landed file and refuses finished jobs."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from shared.domain.jobs import EventType, utcnow
from shared.services.stalled import mark_stalled, resume
from shared.services.sweep import sweep_jobs
from tests.api_world import ApiWorld
from tests.fakes import FakeDurableClient


def _landed(w: ApiWorld, status: str = "RUNNING") -> str:
    job_id = w.job(status=status)
    w.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": "inbound/acme/a.csv", "bytes": 3, "file_name": "a.csv"})
    return job_id


def test_the_sweep_marks_stalled_jobs_once(monkeypatch: object) -> None:
    w = ApiWorld()
    running, done = _landed(w), _landed(w, "COMPLETED")
    for step in ("validate", "transform"):
        w.jobs.append(running, EventType.STEP_COMPLETED, {"step": step})
    later = utcnow() + timedelta(minutes=31)
    assert mark_stalled(w.services, now=utcnow()) == []  # young: not stalled
    client = FakeDurableClient()
    client.set(running, "Running", custom_status={"step": "route"})  # alive, but open for 31 minutes
    summary = asyncio.run(sweep_jobs(w.services, client, now=later))
    assert running in summary.stalled and done not in summary.stalled
    stalled = [e for e in w.jobs.events(running) if e.type is EventType.STALLED]
    assert len(stalled) == 1 and stalled[0].data["status"] == "RUNNING"
    assert stalled[0].data["last_step"] == "transform"  # from the events: a listed job (index row) has no steps
    assert mark_stalled(w.services, now=later) == []  # recorded once


def test_the_api_shows_stalled_and_resumes(monkeypatch: object) -> None:
    w = ApiWorld()
    running = _landed(w)
    code, body = w.json("GET", f"/jobs/{running}")
    assert code == 200 and body["stalled"] is False
    w.services.settings.stalled_minutes = 1
    w.jobs._jobs[running] = w.jobs._jobs[running].model_copy(
        update={"created_at": utcnow() - timedelta(minutes=5)})
    code, body = w.json("GET", "/jobs", {"status": "RUNNING"})
    assert body["items"][0]["stalled"] is True
    code, body = w.json("POST", f"/jobs/{running}/resume")
    assert code == 202 and body["status"] == "queued"
    [message] = w.queues.peek("file-landed")
    assert message["job_id"] == running and message["blob_path"] == "acme/a.csv" and message["restart_before"]
    assert w.jobs.events(running)[-1].data["action"] == "resume"
    done = _landed(w, "COMPLETED")
    code, body = w.json("POST", f"/jobs/{done}/resume")
    assert code == 409 and "replay" in body["detail"]


def test_resume_of_a_job_without_a_landed_file_is_refused() -> None:
    w = ApiWorld()
    job_id = w.job(status="RUNNING")
    try:
        resume(w.services, job_id, by="t")
    except Exception as exc:  # noqa: BLE001 - the type is asserted below
        assert "no landed file" in str(exc)
    else:
        raise AssertionError("resume accepted a job with no landed file")
    assert w.json("POST", f"/jobs/{job_id}/resume")[0] == 404
