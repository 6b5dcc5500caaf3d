"""Drop intake through devhost: a file dropped at drop/{partner}/{name} is first made immutable (a copy in
inbound/ with its sha256), and only that copy is processed and replayed."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.domain.jobs import EventType, Job, JobStatus
from shared.observability.setup import for_tests
from tests.e2e.conftest import E2E, job_trace
from tests.e2e.test_processing import GOOD, catalog_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]

SECOND = GOOD.replace(b"Globex", b"Initech")  # the same file name, new content, still valid


def _partner(e2e: E2E) -> str:
    partner = f"p{uuid.uuid4().hex[:8]}"
    # One output per job: the same file name lands more than once here (re-sends, replays).
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD").replace('{stem}.jsonl"', '{job_id}/{stem}.jsonl"'))
    return partner


def _drop(e2e: E2E, path: str, data: bytes) -> None:
    e2e.services.blobs.upload_stream(e2e.drop_container, path, [data])


def _finished(e2e: E2E, partner: str, count: int = 1, timeout: float = 90.0) -> list[Job]:
    def done() -> list[Job] | None:
        jobs = [j for j in e2e.services.jobs.list_jobs(partner=partner)
                if j.status in (JobStatus.COMPLETED, JobStatus.FAILED)]
        return jobs if len(jobs) >= count else None

    found: list[Job] = e2e.wait_for(f"{count} finished job(s) of {partner}", done, timeout)
    return sorted(found, key=lambda j: j.created_at)


def _raw(e2e: E2E, job: Job) -> bytes:
    container, _, path = job.blob_path.partition("/")
    return b"".join(e2e.services.blobs.open_read(container, path))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _replay(e2e: E2E, job_id: str) -> dict[str, Any]:
    code, body = e2e.request("POST", f"/jobs/{job_id}/replay")
    assert code == 202, body
    detail: dict[str, Any] = e2e.wait_job(body["job_id"])
    return detail


def test_a_new_upload_under_the_same_name_never_changes_the_first_jobs_raw_file(e2e: E2E) -> None:
    partner = _partner(e2e)
    _drop(e2e, f"{partner}/daily.csv", GOOD)
    # The partner re-sends under the same name as soon as the first job exists (it may still be running).
    e2e.wait_for("the first job", lambda: e2e.services.jobs.list_jobs(partner=partner))
    _drop(e2e, f"{partner}/daily.csv", SECOND)

    first, second = _finished(e2e, partner, count=2)
    assert (first.status, second.status) == (JobStatus.COMPLETED, JobStatus.COMPLETED), (first.error, second.error)
    assert first.blob_path != second.blob_path
    assert first.blob_path.startswith(f"inbound/{partner}/") and first.blob_path.endswith("/daily.csv")
    assert (_raw(e2e, first), first.sha256) == (GOOD, _sha(GOOD))
    assert (_raw(e2e, second), second.sha256) == (SECOND, _sha(SECOND))
    transfers = e2e.services.jobs.transfers(first.job_id)
    assert [(t.destination, t.sha256, t.bytes) for t in transfers] == [(first.blob_path, _sha(GOOD), len(GOOD))]

    # A replay of the first job processes the first bytes again, not what sits under that name now.
    replayed = _replay(e2e, first.job_id)["job"]
    assert replayed["status"] == "COMPLETED", replayed["error"]
    assert (replayed["blob_path"], replayed["sha256"]) == (first.blob_path, _sha(GOOD))
    assert _raw(e2e, first) == GOOD
    # Both versions were taken off the drop folder once copied.
    assert not e2e.services.blobs.exists(e2e.drop_container, f"{partner}/daily.csv")


def test_a_retry_after_a_partial_first_attempt_records_the_landed_file(
        e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    partner = _partner(e2e)
    jobs = e2e.services.jobs
    append = jobs.append
    failed: list[str] = []

    def flaky(job_id: str, event_type: str, data: Any = None) -> Any:
        if event_type == EventType.FILE_LANDED and partner in str((data or {}).get("blob_path")) and not failed:
            failed.append(job_id)
            raise ServiceRequestError("table storage went away")  # after job.created was written
        return append(job_id, event_type, data)

    monkeypatch.setattr(jobs, "append", flaky)
    _drop(e2e, f"{partner}/partial.csv", GOOD)
    [job] = _finished(e2e, partner)
    assert failed == [job.job_id]
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.blob_path and (_raw(e2e, job), job.sha256) == (GOOD, _sha(GOOD))
    types = [e.type for e in jobs.events(job.job_id)]
    assert types.count(EventType.CREATED) == 1 and types.count(EventType.FILE_LANDED) == 1
    assert _replay(e2e, job.job_id)["job"]["status"] == "COMPLETED"


def test_a_nested_name_is_processed_under_its_sanitised_file_name(e2e: E2E) -> None:
    partner = _partner(e2e)
    _drop(e2e, f"{partner}/2026/batch 7/in:voices?.csv", GOOD)
    [job] = _finished(e2e, partner, timeout=60)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.file_name == "in_voices_.csv" and job.blob_path.endswith("/in_voices_.csv")
    created = e2e.services.jobs.events(job.job_id)[0]
    assert created.data["original_name"] == "2026/batch 7/in:voices?.csv"
    assert not e2e.services.blobs.list_blobs(e2e.drop_container, f"{partner}/")


def test_a_file_for_a_partner_not_in_the_catalogue_is_quarantined_and_not_run(e2e: E2E) -> None:
    _partner(e2e)  # a catalogue that does not know the partner below
    ghost = f"ghost{uuid.uuid4().hex[:8]}"
    capture = for_tests()
    _drop(e2e, f"{ghost}/orders.csv", GOOD)
    [job] = _finished(e2e, ghost)
    assert job.status is JobStatus.FAILED
    assert f"partner '{ghost}' is not in the catalogue" in job.error and "quarantine/_unknown/" in job.error
    e2e.host.wait_idle(30)
    types = [e.type for e in e2e.services.jobs.events(job.job_id)]
    assert EventType.STARTED not in types, types  # no orchestration ran
    quarantined = e2e.services.blobs.list_blobs("quarantine", "_unknown/")
    [copy] = [b for b in quarantined if b.metadata.get("job_id") == job.job_id]
    assert (copy.path.endswith("/orders.csv"), copy.sha256, copy.size) == (True, _sha(GOOD), len(GOOD))
    assert "not in the catalogue" in copy.metadata["reason"]
    assert not e2e.services.blobs.exists(e2e.drop_container, f"{ghost}/orders.csv")
    failures = [p.attributes for p in capture.metric_points("wharf.failures")
                if p.attributes.get("channel") == "drop"]
    assert {"partner": "_unknown", "channel": "drop", "reason": "configuration"} in failures, failures


def test_a_dropped_file_is_one_connected_trace(e2e: E2E) -> None:
    partner = _partner(e2e)
    capture = for_tests()
    _drop(e2e, f"{partner}/traced.csv", GOOD)
    [job] = _finished(e2e, partner)
    assert job.status is JobStatus.COMPLETED, job.error
    e2e.host.wait_idle(30)
    job_trace(capture, job.job_id, ("intake.drop", "intake.start", "activity.validate_and_transform",
                                    "activity.route_file", "activity.archive_file", "activity.complete_job"))
