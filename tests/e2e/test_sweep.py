"""Work that never finished, through devhost: a failing quarantine or completion, a replay that was not queued."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared import bootstrap, workflows
from shared.workflows import RetryPolicy
from tests.e2e.conftest import E2E
from tests.e2e.test_processing import GOOD, catalog_yaml, land

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]


class LandedQueueDown:
    """The app's MessageQueue with the file-landed queue refusing sends (everything else passes through)."""

    def __init__(self, real: Any, landed: str) -> None:
        self._real, self._landed = real, landed

    def send(self, queue: str, message: Mapping[str, Any], *, visibility_timeout: int | None = None) -> None:
        if queue == self._landed:
            raise ServiceRequestError("<urlopen error [Errno 111] Connection refused>")
        self._real.send(queue, message, visibility_timeout=visibility_timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_replay_whose_send_failed_answers_503_and_the_sweep_runs_it(e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR"))
    job_id = land(e2e, partner, "invoices-sweep.csv", GOOD)
    assert e2e.wait_job(job_id)["job"]["status"] == "FAILED"  # USD is refused; the operator fixes that
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))

    services = bootstrap.get_services()  # the very Services the app's functions use (cached per process)
    with monkeypatch.context() as patch:
        patch.setitem(services.__dict__, "queues", LandedQueueDown(services.queues, e2e.env["LANDED_QUEUE"]))
        code, body = e2e.request("POST", f"/jobs/{job_id}/replay")
    assert code == 503
    new_id = services.jobs.get_job(job_id).replayed_by
    assert set(body) == {"error"} and "\n" not in body["error"] and f"recorded as job {new_id}" in body["error"]
    assert "Traceback" not in body["error"]
    e2e.host.wait_idle(5)
    assert services.jobs.get_job(new_id).status.value == "PENDING"  # nothing runs it until the sweep

    monkeypatch.setattr(services.settings, "pending_resend_minutes", 0.0)
    e2e.host.run_timer("jobs_sweep")
    detail = e2e.wait_job(new_id)
    assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
    assert detail["job"]["parent_job_id"] == job_id
    notes = [e["data"] for e in detail["events"] if e["type"] == "job.note"]
    assert "Connection refused" in notes[0]["reason"] and notes[1]["sweep"] == "resend"


class Refusing:
    """A port whose `method` raises for the calls `refuse(*args)` picks (storage refusing one kind of write)."""

    def __init__(self, real: Any, method: str, refuse: Any) -> None:
        self._real, self._method, self._refuse = real, method, refuse

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._real, name)
        if name != self._method:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._refuse(*args):
                raise ServiceRequestError("<urlopen error [Errno 111] Connection refused>")
            return target(*args, **kwargs)
        return call


def orchestration_output(e2e: E2E, job_id: str) -> Any:
    def ended() -> Any:
        status = asyncio.run(e2e.host.durable_client().get_status(job_id))
        return status if status and status.runtime_status.value in ("Completed", "Failed") else None
    return e2e.wait_for(f"orchestration {job_id} to end", ended).output


def test_failing_quarantine_still_fails_the_job_with_both_reasons(e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR"))  # USD is refused: the file is invalid
    services = bootstrap.get_services()
    monkeypatch.setitem(workflows.RETRY_POLICY, "quarantine", RetryPolicy(100, 2))
    monkeypatch.setitem(services.__dict__, "blobs", Refusing(services.blobs, "upload_stream",
                                                             lambda container, *_: container == "quarantine"))
    job_id = land(e2e, partner, "invoices-q.csv", GOOD)
    job = e2e.wait_job(job_id)["job"]
    assert job["status"] == "FAILED"
    assert job["error"].startswith("validation failed") and "; quarantine failed: " in job["error"]
    assert orchestration_output(e2e, job_id)["status"] == "FAILED"


def test_failing_completion_after_delivery_is_not_failed_and_the_sweep_completes_it(
        e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    services = bootstrap.get_services()
    with monkeypatch.context() as patch:
        patch.setitem(workflows.RETRY_POLICY, "complete", RetryPolicy(100, 2))
        patch.setitem(services.__dict__, "jobs", Refusing(services.jobs, "append",
                                                          lambda _job, event, *_: event == "job.completed"))
        job_id = land(e2e, partner, "invoices-c.csv", GOOD)
        output = orchestration_output(e2e, job_id)
    assert output["status"] == "COMPLETED" and output["completion_pending"] is True
    detail = e2e.wait_job(job_id, statuses=("RUNNING",))
    assert [e["type"] for e in detail["events"]].count("job.failed") == 0
    assert services.blobs.list_blobs("quarantine", f"{partner}/") == []

    monkeypatch.setattr(services.settings, "stale_running_minutes", 0.0)
    e2e.host.run_timer("jobs_sweep")
    detail = e2e.wait_job(job_id)
    assert detail["job"]["status"] == "COMPLETED"
    assert detail["events"][-1]["data"]["recorded_by"] == "sweep"
