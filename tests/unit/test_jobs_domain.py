"""The IntegrationJob projection as a pure fold over JobEvents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.jobs import EventType, JobEvent, JobStatus, apply, project

T0 = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def ev(seq: int, type_: EventType, **data: object) -> JobEvent:
    return JobEvent(job_id="job-1", seq=seq, type=type_, at=T0 + timedelta(seconds=seq), data=data)


def test_fold_follows_the_lifecycle() -> None:
    events = [
        ev(0, EventType.CREATED, partner="acme", job_type="SFTP_INGEST", file_name="a.csv"),
        ev(1, EventType.FILE_LANDED, blob_path="inbound/acme/a.csv", bytes=10, sha256="ff"),
        ev(2, EventType.STARTED),
        ev(3, EventType.STEP_COMPLETED, step="validate", counts={"rows": 3}),
        ev(4, EventType.ROUTED, route="main"),
        ev(5, EventType.COMPLETED),
    ]
    job = project(reversed(events))  # order comes from seq, not from arrival
    assert job.status is JobStatus.COMPLETED
    assert (job.partner, job.bytes, job.routes, job.counts, job.event_count) == ("acme", 10, 1, {"rows": 3}, 6)
    assert job.created_at == T0 and job.updated_at == T0 + timedelta(seconds=5)


def test_failure_keeps_reason_and_replay_links() -> None:
    job = project([ev(0, EventType.CREATED, partner="acme"), ev(1, EventType.FAILED, reason="bad row 3"),
                   ev(2, EventType.REPLAYED, new_job_id="job-2")])
    assert (job.status, job.error, job.replayed_by) == (JobStatus.FAILED, "bad row 3", "job-2")


def test_first_event_must_be_created() -> None:
    with pytest.raises(ValueError, match=r"first event must be job\.created"):
        apply(None, ev(0, EventType.STARTED))


def test_apply_does_not_mutate_its_input() -> None:
    job = project([ev(0, EventType.CREATED, partner="acme")])
    apply(job, ev(1, EventType.STEP_COMPLETED, step="validate"))
    assert job.steps_completed == []


def test_project_folds_in_place_to_what_apply_gives_step_by_step() -> None:
    events = [
        ev(0, EventType.CREATED, partner="acme", job_type="SFTP_INGEST", file_name="a.csv"),
        ev(1, EventType.FILE_LANDED, blob_path="inbound/acme/a.csv", bytes=10, sha256="ff"),
        ev(2, EventType.STEP_COMPLETED, step="validate", counts={"rows": 3}),
        ev(3, EventType.STEP_COMPLETED, step="transform", counts={"rows": 4, "bad": 1}),
        ev(4, EventType.DELIVERY_BOUNCED), ev(5, EventType.DELIVERY_BOUNCED), ev(6, EventType.ROUTED),
        ev(7, EventType.STEP_FAILED, reason="late"), ev(8, EventType.FAILED),
    ]
    steps = []
    job = None
    for event in events:
        job = apply(job, event)
        steps.append(job)
    assert project(events) == steps[-1]
    # Each step's job stayed as it was when made: nothing later changed it.
    assert steps[2].steps_completed == ["validate"] and steps[2].counts == {"rows": 3}
    assert steps[4].counts == {"rows": 4, "bad": 1, "deliveries_bounced": 1} and steps[6].routes == 1
    first, second = project(events), project(events)
    first.steps_completed.append("x")
    first.counts["rows"] = 0
    assert second.steps_completed == ["validate", "transform"] and second.counts["rows"] == 4
    assert events[2].data == {"step": "validate", "counts": {"rows": 3}}  # the events are not changed
