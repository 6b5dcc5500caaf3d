"""Bad queue messages through devhost: dead-lettered on their first delivery with the reason, never retried."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.queue import QueueClient

from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.settings import azurite_connection_string
from tests.e2e.conftest import E2E
from tests.e2e.test_processing import GOOD, catalog_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]


def _client(queue: str) -> QueueClient:
    """No encode/decode policy: the test writes and reads the wire text itself."""
    return QueueClient.from_connection_string(azurite_connection_string(), queue)


def send_raw(queue: str, body: bytes) -> str:
    """Enqueue `body` base64-encoded, as the host expects; returns the message id."""
    return str(_client(queue).send_message(base64.b64encode(body).decode()).id)


def envelope_for(e2e: E2E, queue: str, message_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The dead-letter envelope Wharf put on `<queue>-poison` for the message `message_id`."""
    poison = _client(f"{queue}-poison")

    def find() -> dict[str, Any] | None:
        for m in poison.peek_messages(max_messages=32):
            try:
                doc = json.loads(base64.b64decode(m.content))
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("message_id") == message_id:
                return doc
        return None

    found: dict[str, Any] = e2e.wait_for(f"a dead-letter envelope for {message_id} on {queue}-poison", find, timeout)
    return found


def still_queued(queue: str, message_id: str) -> bool:
    """Whether the message is still in its queue (visible or not: the queue's count says so)."""
    client = _client(queue)
    return any(m.id == message_id for m in client.peek_messages(max_messages=32))


def orchestration(e2e: E2E, job_id: str) -> Any:
    status = asyncio.run(e2e.host.durable_client().get_status(job_id))
    return getattr(status, "runtime_status", None) if status else None


def pending_job(e2e: E2E, partner: str, name: str = "invoices.csv") -> tuple[str, str]:
    """A landed job (raw blob, events) whose file-landed message the test writes itself. (job id, blob path)"""
    services = e2e.services
    job_id = new_job_id()
    path = f"{partner}/{datetime.now(UTC):%Y/%m/%d}/{job_id}/{name}"
    info = services.blobs.upload_stream("inbound", path, [GOOD])
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD", "source": "e2e",
                                                     "file_name": name})
    services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{path}", "bytes": info.size,
                                                         "sha256": info.sha256, "file_name": name})
    return job_id, path


def landed(job_id: str, partner: str, path: str, **changes: Any) -> bytes:
    message = {"job_id": job_id, "partner": partner, "container": "inbound", "blob_path": path,
               "file_name": path.rsplit("/", 1)[-1], **changes}
    return json.dumps(message).encode()


def assert_dead_lettered(e2e: E2E, message_id: str, reason: str, queue: str | None = None) -> dict[str, Any]:
    queue = queue or e2e.env["LANDED_QUEUE"]
    env = envelope_for(e2e, queue, message_id)
    assert env["reason"] == reason, env
    assert env["queue"] == queue and env["dequeue_count"] == 1, env  # the first delivery: never retried
    assert env["dead_lettered_at"] and env["detail"]
    e2e.host.wait_idle(5)
    assert not still_queued(queue, message_id)
    return env


@pytest.mark.parametrize(("body", "reason"), [
    (b"\xff\xfe\x00 not text at all", "undecodable"),
    (b"{\"job_id\": ", "undecodable"),
    (b"[\"not\", \"an\", \"object\"]", "wrong_shape"),
    (b"{\"hello\": \"world\"}", "wrong_shape"),
])
def test_garbage_is_dead_lettered_at_once_with_its_reason_and_its_body(e2e: E2E, body: bytes, reason: str) -> None:
    before = {j.job_id for j in e2e.services.jobs.list_jobs(limit=500)}
    message_id = send_raw(e2e.env["LANDED_QUEUE"], body)
    env = assert_dead_lettered(e2e, message_id, reason)
    if env["body_encoding"] == "base64":
        assert base64.b64decode(env["body"]) == body
    else:
        assert env["body"] == body.decode()
    assert "job_id" not in env or not env["job_id"]
    assert {j.job_id for j in e2e.services.jobs.list_jobs(limit=500)} == before  # no job made of garbage


@pytest.mark.parametrize(("changes", "field"), [
    ({"file_name": "../../etc/passwd"}, "file_name"),
    ({"blob_path": "../other/secret.csv"}, "blob_path"),
    ({"container": "processed"}, "container"),
])
def test_unsafe_values_are_dead_lettered_and_fail_the_job(e2e: E2E, changes: dict[str, str], field: str) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    job_id, path = pending_job(e2e, partner)
    message_id = send_raw(e2e.env["LANDED_QUEUE"], landed(job_id, partner, path, **changes))
    env = assert_dead_lettered(e2e, message_id, "invalid_field")
    assert env["job_id"] == job_id and field in env["detail"]
    assert json.loads(env["body"])[field] == changes[field]  # the original body, whole
    job = e2e.services.jobs.get_job(job_id)
    assert job.status.value == "FAILED" and field in job.error and "dead-lettered" in job.error
    assert orchestration(e2e, job_id) is None
    logs = [entry.message for entry in e2e.services.jobs.logs(job_id)]
    assert any("dead-lettered" in line and field in line for line in logs), logs


def test_a_partner_removed_from_the_catalogue_is_dead_lettered_and_fails_the_job(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(f"other{uuid.uuid4().hex[:6]}", "EUR"))
    job_id, path = pending_job(e2e, partner)
    message_id = send_raw(e2e.env["LANDED_QUEUE"], landed(job_id, partner, path))
    env = assert_dead_lettered(e2e, message_id, "unknown_partner")
    assert env["job_id"] == job_id and partner in env["detail"]
    job = e2e.services.jobs.get_job(job_id)
    assert job.status.value == "FAILED" and "not in the catalogue" in job.error
    assert orchestration(e2e, job_id) is None
    failed = [m for m in e2e.services.queues.peek(e2e.env["WHARF_EVENTS_QUEUE"], 32)
              if m["type"] == "job.failed" and m["data"].get("job_id") == job_id]
    assert failed and "not in the catalogue" in failed[0]["data"]["reason"]


def test_a_message_for_a_job_that_does_not_exist_creates_no_job(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR"))
    job_id = new_job_id()
    message_id = send_raw(e2e.env["LANDED_QUEUE"], landed(job_id, partner, f"{partner}/x/{job_id}/a.csv"))
    env = assert_dead_lettered(e2e, message_id, "unknown_job")
    assert env["job_id"] == job_id
    assert job_id not in {j.job_id for j in e2e.services.jobs.list_jobs(limit=500)}
    assert orchestration(e2e, job_id) is None


def test_a_poll_request_for_an_unknown_partner_is_dead_lettered(e2e: E2E) -> None:
    e2e.catalog_path.write_text(catalog_yaml(f"p{uuid.uuid4().hex[:8]}", "EUR"))
    ghost = f"gone{uuid.uuid4().hex[:6]}"
    queue = e2e.env["POLL_QUEUE"]
    message_id = send_raw(queue, json.dumps({"partner": ghost, "channel": "sftp"}).encode())
    env = assert_dead_lettered(e2e, message_id, "unknown_partner", queue)
    assert ghost in env["detail"]
    bad = send_raw(queue, json.dumps({"partner": "../Not A Slug", "channel": "sftp"}).encode())
    assert "partner" in assert_dead_lettered(e2e, bad, "invalid_field", queue)["detail"]


class PoisonQueueDown:
    """The app's MessageQueue with the file-landed poison queue refusing sends: storage is down."""

    def __init__(self, real: Any, poison: str) -> None:
        self._real, self._poison = real, poison
        self.refused = 0

    def send(self, queue: str, message: Any, *, visibility_timeout: int | None = None) -> None:
        if queue == self._poison:
            self.refused += 1
            raise ServiceRequestError("<urlopen error [Errno 111] Connection refused>")
        self._real.send(queue, message, visibility_timeout=visibility_timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_transient_failure_while_dead_lettering_is_retried_by_the_host(e2e: E2E,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    services, queue = e2e.services, e2e.env["LANDED_QUEUE"]
    down = PoisonQueueDown(services.queues, f"{queue}-poison")
    with monkeypatch.context() as patch:
        patch.setitem(services.__dict__, "queues", down)
        message_id = send_raw(queue, b"[1, 2]")
        e2e.wait_for("the first attempt", lambda: down.refused >= 1, 20)
        e2e.host.wait_idle(5)
    # storage is back: the host's next delivery dead-letters it (dequeue count 2: it was retried)
    env = envelope_for(e2e, queue, message_id, timeout=60)
    assert env["reason"] == "wrong_shape" and env["dequeue_count"] >= 2


def test_poison_depths_are_in_the_keyed_health_details_only(e2e: E2E) -> None:
    queue = e2e.env["LANDED_QUEUE"]
    message_id = send_raw(queue, b"{\"health\": true}")
    envelope_for(e2e, queue, message_id)
    code, details = e2e.request("GET", "/health/details")
    assert code == 200, details
    section = details["poison"]
    assert set(section["depths"]) == {f"{queue}-poison", f"{e2e.env['POLL_QUEUE']}-poison",
                                      f"{e2e.env['TRANSFER_QUEUE']}-poison", f"{e2e.env['REDELIVERY_QUEUE']}-poison"}
    assert section["depths"][f"{queue}-poison"] >= 1 and section["state"] == "messages_waiting"
    assert section["total"] == sum(section["depths"].values()) and "wharf poison list" in section["detail"]
    code, body = e2e.request("GET", "/health", key=False)
    assert set(body) == {"status"}  # anonymous callers learn nothing about queues
