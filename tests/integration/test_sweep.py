"""The jobs sweep and replay against Azurite: real tables (status queries, timestamps), queues and blobs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueServiceClient

from shared.bootstrap import Services
from shared.domain.errors import DependencyUnavailableError
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, JobStatus, utcnow
from shared.resources import JOBS_BY_TIME_TABLE
from shared.services.intake import replay
from shared.services.sweep import SweepSummary, sweep_jobs
from tests.fakes import FakeDurableClient

pytestmark = pytest.mark.azurite
ROOT = Path(__file__).resolve().parents[2]


def land(services: Services, partner: str, *, running: bool = False) -> str:
    job_id = new_job_id()
    path = f"{partner}/{job_id}/a.csv"
    info = services.blobs.upload_stream("inbound", path, [b"id\n1\n"])
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD", "source": "test",
                                                     "file_name": "a.csv"})
    services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{path}", "bytes": info.size,
                                                         "sha256": info.sha256, "file_name": "a.csv"})
    if running:
        services.jobs.append(job_id, EventType.STARTED, {"instance_id": job_id})
    return job_id


def sweep(services: Services, client: FakeDurableClient, minutes: float) -> SweepSummary:
    return asyncio.run(sweep_jobs(services, client, now=utcnow() + timedelta(minutes=minutes)))


@pytest.fixture
def partner() -> str:
    return f"sw{uuid.uuid4().hex[:10]}"


def test_replay_whose_queue_send_fails_is_recorded_and_resent_by_the_sweep(services: Services,
                                                                           partner: str) -> None:
    old = land(services, partner, running=True)
    services.jobs.append(old, EventType.FAILED, {"reason": "bad row", "step": "validate"})
    queue = services.settings.landed_queue
    queues = QueueServiceClient.from_connection_string(services.settings.storage_connection_string or "")
    queues.delete_queue(queue)  # the send now fails with QueueNotFound, as when the queue service refuses it
    with pytest.raises(DependencyUnavailableError, match=f"queue {queue} unavailable: ") as err:
        replay(services, old)
    new_id = services.jobs.get_job(old).replayed_by
    assert f"recorded as job {new_id} (PENDING)" in str(err.value) and "\n" not in str(err.value)
    assert services.jobs.get_job(new_id).status is JobStatus.PENDING

    services.queues.ensure_queues([queue])
    client = FakeDurableClient()
    assert sweep(services, client, minutes=5).resent == []
    assert sweep(services, client, minutes=11).resent == [new_id]
    [message] = services.queues.peek(queue)
    assert (message["job_id"], message["blob_path"]) == (new_id, f"{partner}/{old}/a.csv")
    assert services.jobs.events(new_id)[-1].data["sweep"] == "resend"


def test_pending_completion_is_recorded_and_a_lost_orchestration_fails(services: Services, partner: str) -> None:
    delivered, lost = land(services, partner, running=True), land(services, partner, running=True)
    services.jobs.append(delivered, EventType.ROUTED, {"route": "r", "index": 0, "kind": "blob"})
    services.jobs.append(delivered, EventType.STEP_COMPLETED, {"step": "archive", "archive": "archive/x"})
    client = FakeDurableClient()
    client.set(delivered, "Completed", {"status": "COMPLETED", "completion_pending": True,
                                        "routes": [{"kind": "blob"}], "rows": 1,
                                        "reason": "complete_job failed: table unavailable"})
    summary = sweep(services, client, minutes=31)
    assert (summary.completed, summary.failed) == ([delivered], [lost])
    assert services.jobs.get_job(delivered).status is JobStatus.COMPLETED
    job = services.jobs.get_job(lost)
    assert job.status is JobStatus.FAILED and job.error.startswith("orchestration lost")
    quarantined = [b.path for b in services.blobs.list_blobs("quarantine", f"{partner}/")]
    assert quarantined and all(lost in p for p in quarantined)
    published = [m for m in services.queues.peek(services.settings.events_queue) if m["type"] == "job.failed"]
    assert [m["data"]["job_id"] for m in published] == [lost]
    # Idempotent: nothing is due any more.
    assert sweep(services, client, minutes=31).examined == 0


def test_cli_replay_whose_queue_send_fails_says_so_in_one_line(services: Services, partner: str) -> None:
    old = land(services, partner, running=True)
    services.jobs.append(old, EventType.FAILED, {"reason": "bad row", "step": "validate"})
    missing = f"gone{uuid.uuid4().hex[:12]}"  # a queue that was never created: the send fails
    env = {"PATH": "/usr/bin:/bin", "AzureWebJobsStorage": services.settings.storage_connection_string or "",
           "WHARF_TABLE_PREFIX": services.settings.table_prefix, "LANDED_QUEUE": missing,
           "WHARF_STACK_ENV": "/nonexistent"}
    run = subprocess.run([sys.executable, "-m", "shared.cli", "replay", old], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    error = run.stderr.strip().splitlines()[-1]
    new_id = services.jobs.get_job(old).replayed_by
    assert error.startswith(f"error: queue {missing} unavailable: ") and f"recorded as job {new_id}" in error


class _TableSpy:
    """A TableClient stand-in that records the filters sent and the rows that came back, and refuses a listing."""

    def __init__(self, table: Any, name: str, log: list[tuple[str, str, list[str]]]) -> None:
        self._table, self._name, self._log = table, name, log

    def list_entities(self, *_: Any, **__: Any) -> Any:
        raise AssertionError(f"full scan of {self._name}")

    def query_entities(self, query_filter: str, *args: Any, **kwargs: Any) -> Any:
        rows = list(self._table.query_entities(query_filter, *args, **kwargs))
        self._log.append((self._name, query_filter, [str(r.get("JobId") or r.get("RowKey")) for r in rows]))
        return iter(rows)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._table, attr)


def test_sweep_queries_open_jobs_in_a_window_of_the_index_not_the_job_table(
        services: Services, partner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """#14: against Azurite, the sweep's reads are JobsByTime queries with a Status filter and a RowKey range
    (the window), and key-scoped reads of the jobs it acts on; terminal jobs never come back from a query."""
    pending, done = land(services, partner), land(services, partner, running=True)
    services.jobs.append(done, EventType.FAILED, {"reason": "bad row", "step": "validate"})
    store: Any = services.jobs
    log: list[tuple[str, str, list[str]]] = []
    table = store._table
    monkeypatch.setattr(store, "_table", lambda name: _TableSpy(table(name), name, log))
    summary = sweep(services, FakeDurableClient(), minutes=11)
    assert summary.resent == [pending]
    index = [(flt, rows) for name, flt, rows in log if name == JOBS_BY_TIME_TABLE]
    assert index and all("RowKey ge" in flt and "RowKey lt" in flt and
                         ("Status eq 'PENDING'" in flt or "Status eq 'RUNNING'" in flt) for flt, _ in index)
    assert not any(done in rows for _, rows in index)
    # The rest: the projection repair's reads of the last hour (JobEvents by time key, IntegrationJob per partner
    # from that time) and per-job reads. Every one is a key-range query; none lists a table.
    assert all("PartitionKey" in flt for _, flt, _ in log)
    assert any(pending in rows for _, rows in index)
