"""`wharf jobs resume` / POST /api/v1/jobs/{id}/resume through devhost's Durable task hub: a hung orchestration
(here one waiting for an event that never comes) is terminated and started again; a plain re-send of the landed
file starts nothing twice; the same resume message again does not terminate the restarted instance."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import azure.durable_functions as df
import pytest

from devhost.host import DevHost
from shared.domain.jobs import EventType, utcnow
from shared.services import poison
from shared.services.intake import ORCHESTRATOR, start_processing
from shared.services.stalled import resume
from tests.api_world import ApiWorld

pytestmark = pytest.mark.azurite


def _app() -> df.DFApp:
    app = df.DFApp()

    def hung(context: df.DurableOrchestrationContext) -> Any:
        yield context.wait_for_external_event("never")  # stands for an activity that never returns
        return "done"

    hung.__name__ = ORCHESTRATOR
    app.orchestration_trigger(context_name="context")(hung)
    return app


@pytest.fixture
def host(azurite: str) -> Iterator[DevHost]:
    h = DevHost(_app(), settings_env={"AzureWebJobsStorage": azurite}, http_port=0, enable_timers=False).start()
    try:
        yield h
    finally:
        h.stop()


def _status(client: Any, job_id: str) -> Any:
    return asyncio.run(client.get_status(job_id))


def _wait(client: Any, job_id: str, runtime: str) -> Any:
    deadline = time.monotonic() + 20
    while (status := _status(client, job_id)).runtime_status.value != runtime:
        assert time.monotonic() < deadline, f"{job_id} is {status.runtime_status.value}, not {runtime}"
        time.sleep(0.05)
    return status


def test_resume_terminates_a_hung_orchestration_and_starts_it_again(host: DevHost) -> None:
    client = host.durable_client()
    w = ApiWorld()
    job_id = w.job(status="RUNNING")
    w.blobs.upload_stream("inbound", f"acme/{job_id}/a.csv", [b"x"])
    w.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/acme/{job_id}/a.csv", "bytes": 1,
                                             "file_name": "a.csv"})
    ref = {"job_id": job_id, "partner": "acme", "container": "inbound", "blob_path": f"acme/{job_id}/a.csv",
           "file_name": "a.csv"}
    assert asyncio.run(start_processing(client, ref)) is True
    first = _wait(client, job_id, "Running")
    # The bug: re-sending the landed file (what resume did) leaves the hung instance as it is.
    assert asyncio.run(start_processing(client, ref)) is False
    time.sleep(1.1)  # devhost's createdTime has whole seconds: the resume is asked after the instance began

    resume(w.services, job_id, by="test")  # the message intake gets: the landed file with restart_before
    [delivery] = [poison.Delivery(queue="file-landed", id=m.id, body=m.body, dequeue_count=1)
                  for m in w.queues.receive("file-landed")]
    [restart] = poison.accept_file_landed_many(w.services, delivery)
    assert restart["restart_before"] and restart["job_id"] == job_id
    assert asyncio.run(start_processing(client, restart)) is True
    again = _wait(client, job_id, "Running")
    assert again.created_time > first.created_time
    history = host.task_hub.status(job_id, show_history=True)
    assert "restart_before" not in str(history.get("input"))  # the orchestration's input is the plain reference
    # The same message again (delivered twice): the restarted instance is left alone.
    assert asyncio.run(start_processing(client, restart)) is False
    assert _status(client, job_id).created_time == again.created_time
    # The restarted instance runs on (and here finishes when its event comes).
    asyncio.run(client.raise_event(job_id, "never", None))
    assert _wait(client, job_id, "Completed").output == "done"


def test_resume_after_the_instance_ended_starts_it_again(host: DevHost) -> None:
    client = host.durable_client()
    job_id = f"job-{uuid.uuid4().hex}"
    ref = {"job_id": job_id, "partner": "acme", "container": "inbound", "blob_path": "acme/a.csv",
           "file_name": "a.csv"}
    assert asyncio.run(start_processing(client, ref)) is True
    _wait(client, job_id, "Running")
    asyncio.run(client.terminate(job_id, "gone wrong"))
    time.sleep(1.1)
    assert asyncio.run(start_processing(client, {**ref, "restart_before": utcnow().isoformat()})) is True
    _wait(client, job_id, "Running")
