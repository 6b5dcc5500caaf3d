"""Bad queue messages against the fakes: the message model, dead-lettering, and the poison-queue operations."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ServiceRequestError

from shared import metrics
from shared.bootstrap import Services, build_services
from shared.catalog import CatalogError, parse_catalog
from shared.catalog.common import _SLUG
from shared.domain.errors import NotFoundError, WharfError
from shared.domain.hostmessages import BadMessageError, BadMessageReason, decode_host_message, parse_message
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, JobStatus
from shared.domain.messages import PARTNER_ID_PATTERN, FileLanded, PollRequest
from shared.observability import setup
from shared.observability.sdk import TelemetryCapture
from shared.services import poison
from shared.settings import Settings
from tests.fakes import FakeBlobStore, FakeJobStore, FakeMessageQueue, FakePublisher

LANDED, POLL = "file-landed", "poll-requests"
PARTNER = "acme"
GOOD = {"job_id": "job-20261201000000000000-abcdefabcdef", "partner": PARTNER, "container": "inbound",
        "blob_path": "acme/2026/12/01/tr-1/a.csv", "file_name": "a.csv"}


def _catalog(*ids: str) -> Any:
    sftp = {"host": "h.example", "username": "u", "auth": {"private_key_secret": "k"},
            "host_keys": ["SHA256:" + "A" * 43], "remote_dirs": ["/out"]}
    return parse_catalog({"partners": [{"id": i, "name": i, "sftp": sftp} for i in ids]}, env={})


class World:
    def __init__(self) -> None:
        self.jobs, self.blobs, self.queues, self.publisher = FakeJobStore(), FakeBlobStore(), FakeMessageQueue(), \
            FakePublisher()
        self.services: Services = build_services(
            Settings(LANDED_QUEUE=LANDED, POLL_QUEUE=POLL, WHARF_EVENTS_QUEUE="events"), jobs=self.jobs,
            blobs=self.blobs, queues=self.queues, publisher=self.publisher, catalog=_catalog(PARTNER))
        self.queues.ensure_queues(self.services.queue_names())

    def job(self, partner: str = PARTNER, status: JobStatus = JobStatus.PENDING) -> str:
        job_id = new_job_id()
        self.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD", "source": "t",
                                                     "file_name": "a.csv"})
        self.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{partner}/{job_id}/a.csv",
                                                         "bytes": 3, "sha256": "", "file_name": "a.csv"})
        if status is JobStatus.COMPLETED:
            self.jobs.append(job_id, EventType.STARTED, {})
            self.jobs.append(job_id, EventType.COMPLETED, {})
        return job_id

    @staticmethod
    def landed(job_id: str, partner: str = PARTNER, **changes: Any) -> bytes:
        return json.dumps({"job_id": job_id, "partner": partner, "container": "inbound",
                           "blob_path": f"{partner}/{job_id}/a.csv", "file_name": "a.csv", **changes}).encode()

    def deliver(self, body: bytes, queue: str = LANDED, message_id: str = "m-1", count: int = 1) -> Any:
        delivery = poison.Delivery(queue=queue, id=message_id, body=body, dequeue_count=count)
        if queue == LANDED:
            return poison.accept_file_landed(self.services, delivery)
        return poison.accept_poll_request(self.services, delivery)

    def envelopes(self, queue: str = LANDED) -> list[dict[str, Any]]:
        return self.queues.messages(f"{queue}-poison")


@pytest.fixture
def world() -> World:
    return World()


# --- the message model -------------------------------------------------------------------------------


def test_the_partner_rule_is_the_catalogues() -> None:
    assert PARTNER_ID_PATTERN == f"^{_SLUG.pattern}$"
    for value in ("acme", "a1", "my-partner", "x" * 40):
        assert PollRequest(partner=value).partner == value
    for value in ("a", "Acme", "-acme", "acme-", "../acme", "ac me", "x" * 41, "acme\n"):
        with pytest.raises(ValueError):
            PollRequest(partner=value)


@pytest.mark.parametrize(("field", "value"), [
    ("file_name", "../a.csv"), ("file_name", ".."), ("file_name", "a/b.csv"), ("file_name", "a\\b.csv"),
    ("file_name", "a\x00.csv"), ("file_name", " a.csv"), ("file_name", "x" * 256), ("file_name", ""),
    ("blob_path", "../etc/passwd"), ("blob_path", "acme/../../x"), ("blob_path", "/acme/a.csv"),
    ("blob_path", "acme//a.csv"), ("blob_path", "acme/./a.csv"), ("blob_path", "acme\\a.csv"),
    ("blob_path", "acme/a\u202e.csv"), ("blob_path", "a/" * 600),
    ("container", "processed"), ("container", "drop"), ("container", "outbound"), ("container", "INBOUND"),
    ("job_id", "../job"), ("job_id", "job 1"), ("job_id", ""), ("sha256", "abc"), ("bytes", -1),
    ("transfer_id", "tr/1"),
])
def test_file_landed_refuses_unsafe_values(field: str, value: Any) -> None:
    with pytest.raises(BadMessageError) as caught:
        parse_message(FileLanded, {**GOOD, field: value})
    assert caught.value.reason is BadMessageReason.INVALID_FIELD and field in caught.value.detail
    assert caught.value.job_id == (GOOD["job_id"] if field != "job_id" else value)


def test_file_landed_accepts_what_the_channels_produce() -> None:
    message = parse_message(FileLanded, {**GOOD, "file_name": "Rechnung März #1.csv", "container": "quarantine",
                                         "blob_path": "_unknown/2026/12/01/tr-1/Rechnung März #1.csv",
                                         "sha256": "A" * 64, "source": "sftp://h:22/out/\udcff.csv", "extra": 1})
    assert message.container == "quarantine" and message.bytes == 0 and message.transfer_id == ""


def test_shapes_and_encodings() -> None:
    for body, reason in ((b"\xff", "undecodable"), (b"nope", "undecodable"), (b"[1]", "wrong_shape"),
                         (b"\"text\"", "wrong_shape"), (b"null", "wrong_shape")):
        with pytest.raises(BadMessageError) as caught:
            decode_host_message(body)
        assert caught.value.reason.value == reason
    wrapped = base64.b64encode(json.dumps(GOOD).encode())
    assert decode_host_message(wrapped) == GOOD  # base64 twice (another tool's send) is still read
    with pytest.raises(BadMessageError) as caught:
        parse_message(FileLanded, {"job_id": 5})
    assert caught.value.reason is BadMessageReason.WRONG_SHAPE and "partner: Field required" in caught.value.detail
    assert "5" not in caught.value.detail.replace("FileLanded", "")  # names fields, never quotes values


# --- dead-lettering ----------------------------------------------------------------------------------


def test_a_good_message_passes_and_nothing_is_dead_lettered(world: World) -> None:
    job_id = world.job()
    ref = world.deliver(world.landed(job_id))
    assert ref["job_id"] == job_id and ref["blob_path"] == f"{PARTNER}/{job_id}/a.csv"
    request, carrier = world.deliver(json.dumps({"partner": PARTNER, "traceparent": "00-" + "1" * 32 + "-"
                                                 + "2" * 16 + "-01"}).encode(), POLL)
    assert request.partner == PARTNER and carrier["traceparent"].startswith("00-1111")
    assert world.envelopes() == [] and world.envelopes(POLL) == []


def test_a_bad_message_for_a_pending_job_fails_it_once_with_the_reason(world: World,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    otel: TelemetryCapture = setup.for_tests()
    job_id = world.job()
    body = world.landed(job_id, file_name="../../x.csv")
    with caplog.at_level(logging.WARNING, logger="shared.services.poison"):
        assert world.deliver(body) is None
        assert world.deliver(body) is None  # redelivered (the first dead-letter's send was lost): recorded once
    job = world.jobs.get_job(job_id)
    assert job.status is JobStatus.FAILED and "file_name" in job.error and f"{LANDED}-poison" in job.error
    notes = [e for e in world.jobs.events(job_id) if e.type is EventType.NOTE]
    assert len(notes) == 1 and notes[0].data["dead_letter"] == {
        "queue": LANDED, "poison_queue": f"{LANDED}-poison", "message_id": "m-1", "reason": "invalid_field"}
    assert [e.type for e in world.jobs.events(job_id)].count(EventType.FAILED) == 1
    assert len([line for line in world.jobs.logs(job_id) if "intake refused" in line.message]) == 1
    (published,) = [data for kind, data, _ in world.publisher.published if kind == "job.failed"]
    assert published["job_id"] == job_id and "file_name" in published["reason"]
    envelope = world.envelopes()[0]
    assert (envelope["reason"], envelope["job_id"], envelope["message_id"], envelope["dequeue_count"]) == (
        "invalid_field", job_id, "m-1", 1)
    assert json.loads(envelope["body"]) == json.loads(body) and envelope["body_encoding"] == "text"
    record = next(r for r in caplog.records if "dead-lettered" in r.getMessage())
    fields = vars(record)
    assert (fields["job_id"], fields["reason"], fields["queue"]) == (job_id, "invalid_field", LANDED)
    points = {(p.attributes["queue"], p.attributes["reason"]): p.value
              for p in otel.metric_points(metrics.MESSAGES_DEAD_LETTERED)}
    assert points == {(LANDED, "invalid_field"): 2}
    (depth,) = otel.metric_points(metrics.POISON_DEPTH)
    assert depth.attributes == {"queue": f"{LANDED}-poison"} and depth.value == 2


def test_a_completed_job_gets_a_note_not_a_failure(world: World) -> None:
    job_id = world.job(status=JobStatus.COMPLETED)
    assert world.deliver(world.landed(job_id, container="processed")) is None
    assert world.jobs.get_job(job_id).status is JobStatus.COMPLETED
    (note,) = [e for e in world.jobs.events(job_id) if e.type is EventType.NOTE]
    assert "container" in note.data["reason"]


def test_a_message_naming_another_file_than_its_job_leaves_the_job_to_run(world: World) -> None:
    job_id = world.job()
    other = world.landed(job_id, blob_path=f"{PARTNER}/elsewhere/b.csv", file_name="b.csv")
    assert world.deliver(other) is None
    assert world.envelopes()[0]["reason"] == "job_mismatch"
    assert world.jobs.get_job(job_id).status is JobStatus.PENDING  # its own message (or the sweep) still runs it
    assert world.deliver(world.landed(PARTNER + "x", partner=PARTNER)) is None
    assert world.envelopes()[1]["reason"] == "unknown_job" and world.jobs.job_ids() == [job_id]


def test_unknown_partner_and_missing_source(world: World) -> None:
    job_id = world.job(partner="gone")
    assert world.deliver(world.landed(job_id, partner="gone")) is None
    assert world.envelopes()[0]["reason"] == "unknown_partner"
    assert "not in the catalogue" in world.jobs.get_job(job_id).error
    assert world.deliver(json.dumps({"partner": PARTNER, "channel": "mail"}).encode(), POLL) is None
    assert world.deliver(json.dumps({"partner": "gone"}).encode(), POLL) is None
    assert [e["reason"] for e in world.envelopes(POLL)] == ["no_source", "unknown_partner"]


class Broken:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error


def test_transient_failures_raise_for_the_hosts_retries(world: World, tmp_path: Path) -> None:
    job_id = world.job()
    down = ServiceRequestError("<urlopen error [Errno 111] Connection refused>")
    world.services.overrides["jobs"] = Broken(down)
    world.services.__dict__.pop("jobs", None)
    with pytest.raises(ServiceRequestError):
        world.deliver(world.landed(job_id))
    world.services.overrides["jobs"] = world.jobs
    world.services.__dict__.pop("jobs", None)
    world.services.overrides.pop("catalog")
    broken = tmp_path / "partners.yaml"
    broken.write_text("partners: [{id: 1}]\n")
    world.services.settings.catalog_path = broken
    with pytest.raises(CatalogError):  # the catalogue does not load: the operator fixes it, the host retries
        world.deliver(world.landed(job_id))
    world.services.__dict__["queues"] = Broken(down)
    with pytest.raises(ServiceRequestError):  # the dead-letter itself cannot be sent: retried, not lost
        world.deliver(b"[1]")
    assert world.envelopes() == [] and world.jobs.get_job(job_id).status is JobStatus.PENDING


def test_a_huge_body_is_cut_to_fit_and_cannot_be_requeued(world: World) -> None:
    body = json.dumps({"junk": "\x01" * 40_000}).encode()  # escapes to ~240 KB of JSON
    assert world.deliver(body, message_id="big") is None
    (envelope,) = world.envelopes()
    assert envelope["body_truncated"] and envelope["body_bytes"] == len(body)
    assert len(json.dumps(envelope)) <= 48 * 1024 and body.decode().startswith(envelope["body"])
    (queued,) = world.queues.peek_raw(f"{LANDED}-poison")
    with pytest.raises(WharfError, match="cannot be requeued"):
        poison.requeue(world.services, LANDED, queued.id)
    assert world.queues.depth(f"{LANDED}-poison") == 1


def test_the_trigger_bodies_dead_letter_and_return(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.bootstrap
    from functions import polling

    monkeypatch.setattr(shared.bootstrap, "get_services", lambda: world.services)
    monkeypatch.setattr(polling, "get_services", lambda: world.services)
    message = func.QueueMessage(id="q-1", body=b"{\"partner\": \"../x\"}")
    polling.poll_worker.build().get_user_function()(message)
    assert world.envelopes(POLL)[0]["message_id"] == "q-1"


# --- operating the poison queues ---------------------------------------------------------------------


def test_list_show_requeue_and_drop(world: World) -> None:
    poison_q = f"{LANDED}-poison"
    job_id = world.job(partner="gone")
    assert world.deliver(world.landed(job_id, partner="gone"), message_id="orig-1") is None
    host_body = world.landed(world.job())  # the host poisoned this one itself: no envelope
    world.queues.send_raw(poison_q, host_body)
    world.queues.send_raw(poison_q, b"\xff\xfe")

    (polls, listing, batches, redeliveries) = poison.list_poison(world.services)
    assert (listing.queue, listing.depth, polls.queue, polls.depth) == (poison_q, 3, f"{POLL}-poison", 0)
    assert (batches.queue, batches.depth) == (f"{world.services.settings.transfer_queue}-poison", 0)
    assert (redeliveries.queue, redeliveries.depth) == (f"{world.services.settings.redelivery_queue}-poison", 0)
    wharf, host, garbage = listing.messages
    assert (wharf.reason, wharf.job_id, wharf.original_id, wharf.envelope) == ("unknown_partner", job_id, "orig-1",
                                                                                True)
    assert host.reason == poison.UNKNOWN_REASON and host.job_id == json.loads(host_body)["job_id"]
    assert garbage.body_text() == "base64:" + base64.b64encode(b"\xff\xfe").decode()
    assert poison.show(world.services, poison_q, wharf.id).body == world.landed(job_id, partner="gone")

    world.services.overrides["catalog"] = _catalog(PARTNER, "gone")  # the operator adds the partner back
    requeued = poison.requeue(world.services, LANDED, wharf.id)
    assert requeued.source_queue == LANDED
    (back,) = world.queues.peek_raw(LANDED)
    assert back.body == world.landed(job_id, partner="gone")  # unwrapped: the original body, as it was
    assert world.deliver(back.body, message_id=back.id)["job_id"] == job_id
    assert any("requeued" in e.data.get("reason", "") for e in world.jobs.events(job_id))

    poison.requeue(world.services, poison_q, host.id)  # a host-poisoned message goes back as it is
    assert world.queues.peek_raw(LANDED)[1].body == host_body
    poison.drop(world.services, poison_q, garbage.id)
    assert world.queues.depth(poison_q) == 0
    with pytest.raises(NotFoundError, match="no message"):
        poison.drop(world.services, poison_q, garbage.id)


def test_take_finds_a_message_beyond_the_first_32_and_releases_the_rest(world: World) -> None:
    queue = f"{LANDED}-poison"
    ids = [world.queues.send_raw(queue, f"m{i}".encode()) for i in range(80)]
    taken = poison.take(world.queues, queue, ids[70])
    assert taken.id == ids[70] and taken.pop_receipt
    visible = world.queues.peek_raw(queue, 32)
    assert [m.id for m in visible] == ids[:32]  # everything looked through is visible again, in order
    world.queues.delete(queue, taken.id, taken.pop_receipt)
    with pytest.raises(NotFoundError, match=re.escape("looked through 10 message(s), the limit of 10")):
        poison.take(world.queues, queue, ids[50], scan=10)
    with pytest.raises(NotFoundError, match="no message nope"):
        poison.take(world.queues, queue, "nope")
    assert world.queues.depth(queue) == 79 and len(world.queues.peek_raw(queue, 32)) == 32


def test_poison_depths_are_read_and_set_as_a_gauge(world: World) -> None:
    otel: TelemetryCapture = setup.for_tests()
    world.queues.send_raw(f"{POLL}-poison", b"x")
    batches = f"{world.services.settings.transfer_queue}-poison"
    again = f"{world.services.settings.redelivery_queue}-poison"
    assert poison.poison_depths(world.services) == {f"{POLL}-poison": 1, f"{LANDED}-poison": 0, batches: 0,
                                                    again: 0}
    gauge = {p.attributes["queue"]: p.value for p in otel.metric_points(metrics.POISON_DEPTH)}
    assert gauge == {f"{POLL}-poison": 1, f"{LANDED}-poison": 0, batches: 0, again: 0}
    world.services.__dict__["queues"] = Broken(ServiceRequestError("down"))
    assert poison.poison_depths(world.services) == {}
    poison.record_poison_depths(world.services)  # never raises


def test_a_replay_the_message_model_refuses_writes_nothing(world: World) -> None:
    from shared.services.intake import replay

    job_id = new_job_id()  # a refused drop: no partner folder, kept in quarantine/_unknown/
    world.jobs.append(job_id, EventType.CREATED, {"partner": "_unknown", "job_type": "DROP", "source": "t",
                                                  "file_name": "a.csv"})
    world.blobs.upload_stream("quarantine", f"_unknown/tr-1/{job_id}/a.csv", [b"x"])
    world.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"quarantine/_unknown/tr-1/{job_id}/a.csv",
                                                      "bytes": 1, "sha256": "", "file_name": "a.csv"})
    before = len(world.jobs.events(job_id))
    with pytest.raises(BadMessageError, match=f"job {job_id} cannot be replayed: .*partner"):
        replay(world.services, job_id)
    assert world.jobs.job_ids() == [job_id] and len(world.jobs.events(job_id)) == before
    assert world.queues.messages(LANDED) == []
