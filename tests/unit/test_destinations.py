"""Destination kinds, outbound jobs and redeliveries on fakes: the registry, the recorded delivery per destination
(a SENT one never sent again, only the failed ones retried), the catalogue's outbound block and plugin kinds, the
outbound intake (blob hand-over and `wharf send`), its processing and routes, replay, and `redeliver`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from shared.bootstrap import Services, build_services
from shared.catalog import CatalogError, parse_catalog
from shared.domain.delivery import DeliveryState
from shared.domain.errors import ConfigurationError, NotFoundError
from shared.domain.jobs import EventType, Job, JobStatus, JobType
from shared.services import process
from shared.services.deliveries_view import REDELIVERY_BASE, list_deliveries, on_redelivery, request_redelivery
from shared.services.destinations import (
    DESTINATIONS,
    DestinationKind,
    DestinationRegistry,
    UnknownDestinationError,
)
from shared.services.drop import OUTBOUND, land_drop, take_drop
from shared.services.intake import replay
from shared.services.jobs_view import format_job_detail, job_detail
from shared.services.outbound import send_file
from shared.settings import Settings
from tests.fakes import FakeBlobStore, FakeDeliveries, FakeJobStore, FakeMessageQueue, FakePublisher

QUEUE = "file-landed"


class Recorder:
    """What the test kinds below were asked to deliver, and how often each should fail first."""

    calls: ClassVar[list[tuple[str, int]]] = []
    failures: ClassVar[dict[str, int]] = {}


class CountingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = "x"


class Counting(DestinationKind):
    Options = CountingOptions

    def deliver(self, services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                dest: Mapping[str, Any]) -> dict[str, Any]:
        Recorder.calls.append((self.name, int(ref["index"])))
        if Recorder.failures.get(self.name, 0):
            Recorder.failures[self.name] -= 1
            raise ConnectionError(f"{self.name} is down")
        data = b"".join(services.blobs.open_read(output["container"], output["path"]))
        return {"kind": self.name, "target": f"{self.name}:{dest.get('label')}/{output['name']}",
                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


@pytest.fixture(autouse=True)
def kinds() -> Iterator[None]:
    """Two in-process kinds, `count-a` and `count-b`, removed again afterwards."""
    Recorder.calls.clear()
    Recorder.failures.clear()
    for name in ("count-a", "count-b"):
        DESTINATIONS.add(name, type(f"Counting_{name}", (Counting,), {}), source="tests")
    yield
    for name in ("count-a", "count-b"):
        DESTINATIONS._items.pop(name, None)
        DESTINATIONS._sources.pop(name, None)


SFTP = {"host": "bank.example", "username": "w", "auth": {"private_key_secret": "bank-key"},
        "host_keys": ["SHA256:" + "A" * 43], "outbound_dir": "/to-bank"}


def catalogue(**extra: Any) -> dict[str, Any]:
    routes = [{"name": "pay", "match": {"file_glob": "*.pay"},
               "destinations": [{"kind": "count-a", "label": "pay"}]},
              {"name": "all", "default": True,
               "destinations": [{"kind": "count-a", "label": "a"}, {"kind": "count-b", "label": "b"}]}]
    return {"partners": [
        {"id": "bank", "name": "Bank", "sftp": SFTP, "outbound": {"routes": routes, **extra}},
        {"id": "acme", "name": "Acme", "routes": [{"name": "in", "default": True,
                                                   "destinations": [{"kind": "count-a"}]}]},
    ]}


class World:
    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.blobs, self.jobs, self.deliveries = FakeBlobStore(), FakeJobStore(), FakeDeliveries()
        self.queues = FakeMessageQueue([QUEUE])
        self.catalog = parse_catalog(doc or catalogue(), env={})
        self.services = build_services(Settings(landed_queue=QUEUE), blobs=self.blobs, jobs=self.jobs,
                                       deliveries=self.deliveries, catalog=self.catalog, publisher=FakePublisher(),
                                       queues=self.queues)
        self.queues.ensure_queues([self.services.settings.redelivery_queue, "redeliveries-poison"])

    def redeliver(self, job_id: str, *, destination: int | None = None) -> list[dict[str, Any]]:
        """`wharf redeliver`, then the function app's redelivery worker on each queued message."""
        from shared.services.poison import Delivery

        requested = request_redelivery(self.services, job_id, destination=destination, by="test")
        assert {r["state"] for r in requested} == {"PENDING"}
        queue, rows = self.services.settings.redelivery_queue, []
        for message in self.queues.receive(queue, max_messages=32):
            row = on_redelivery(self.services, Delivery(queue=queue, id=message.id, body=message.body,
                                                        dequeue_count=1))
            assert row is not None
            rows.append(row)
            self.queues.delete(queue, message.id, message.pop_receipt)
        assert sorted(r["index"] for r in rows) == sorted(r["index"] for r in requested)
        return rows

    def hand_over(self, partner: str, name: str, data: bytes) -> Any:
        self.blobs.upload_stream("outbound", f"{partner}/{name}", [data])
        return land_drop(self.services, container="outbound", blob_path=f"{partner}/{name}", handover=OUTBOUND)

    def run(self, ref: Mapping[str, Any]) -> dict[str, Any]:
        """process_file's activities in order, as the orchestrator calls them (fan-out in index order)."""
        process.start_job(self.services, ref)
        validation = process.validate_and_transform(self.services, ref)
        assert validation["valid"], validation
        plan = process.plan_routes(self.services, ref)
        results = [process.route_file(self.services, {**ref, "output": validation["output"], "route": plan["route"],
                                                      "destination": dest, "index": i})
                   for i, dest in enumerate(plan["destinations"])]
        process.archive_file(self.services, ref)
        process.complete_job(self.services, {**ref, "routes": len(results)})
        return {"plan": plan, "output": validation["output"], "results": results}


# --- the registry ---------------------------------------------------------------------------------


def test_the_registry_knows_the_built_ins_and_names_the_known_kinds_for_an_unknown_one() -> None:
    assert {"blob", "email", "event", "sftp"} <= set(DESTINATIONS.names())
    with pytest.raises(UnknownDestinationError) as err:
        DESTINATIONS.get("ftp")
    assert str(err.value) == "unknown destination kind 'ftp'; known kinds: blob, count-a, count-b, email, event, sftp"


def test_a_dotted_path_kind_is_imported_on_first_use_and_a_function_becomes_a_recording_kind() -> None:
    registry = DestinationRegistry()
    registry.register_path("sftp", "shared.services.deliver:deliver_sftp")
    registry.register_path("email", "shared.services.deliver_email:deliver_email")
    registry.register_path("event", "shared.services.destinations:EventKind")
    sftp = registry.get("sftp")
    assert sftp.records_delivery and sftp.name == "sftp"  # deliver_sftp keeps its own record
    assert registry.get("email").records_delivery  # so does deliver_email
    assert not registry.get("event").records_delivery  # a class kind: deliver_one keeps its record
    with pytest.raises(ValueError, match="already registered"):
        registry.register_path("sftp", "elsewhere:x")


# --- outbound jobs ----------------------------------------------------------------------------------


def test_a_handed_over_file_is_an_outbound_job_delivered_unchanged_by_the_outbound_default_route() -> None:
    w = World()
    data = b"IBAN;AMOUNT\nDE00;1.00\n"
    dropped = w.hand_over("bank", "remit.csv", data)
    assert dropped is not None and dropped.ref is not None and dropped.copy_container == "inbound"
    job = w.jobs.get_job(dropped.job_id)
    assert job.job_type is JobType.OUTBOUND and job.job_id.startswith("job-out-")
    assert w.jobs.events(job.job_id)[0].data["direction"] == "outbound"
    run = w.run(dropped.ref)
    # No processing rule: the immutable copy itself is delivered, no staging copy is made.
    assert (run["output"]["container"], run["output"]["path"]) == ("inbound", dropped.copy_path)
    assert w.blobs.list_blobs("staging") == []
    assert run["plan"]["route"] == "all"
    assert [r["target"] for r in run["results"]] == ["count-a:a/remit.csv", "count-b:b/remit.csv"]
    assert all(r["sha256"] == hashlib.sha256(data).hexdigest() for r in run["results"])
    assert [(d.index, d.kind, d.state) for d in w.deliveries.for_job(job.job_id)] == [
        (0, "count-a", DeliveryState.SENT), (1, "count-b", DeliveryState.SENT)]
    assert w.jobs.get_job(job.job_id).status is JobStatus.COMPLETED
    transform = [e.data for e in w.jobs.events(job.job_id) if e.type is EventType.STEP_COMPLETED
                 and e.data["step"] == "transform"]
    assert transform[0]["transform"] == "none"


def test_an_outbound_processing_rule_that_matches_transforms_the_file_before_it_is_sent() -> None:
    w = World(catalogue(processing={"rules": [{"match": "*.csv", "type": "csv",
                                                "transform": {"name": "csv_to_jsonl"}}]}))
    dropped = w.hand_over("bank", "rows.csv", b"id,name\n1,a\n2,b\n")
    assert dropped is not None and dropped.ref is not None
    run = w.run(dropped.ref)
    assert run["output"]["container"] == "staging" and run["output"]["name"] == "rows.jsonl"
    assert run["results"][0]["target"] == "count-a:a/rows.jsonl"


def test_a_route_whose_glob_matches_wins_over_the_default() -> None:
    w = World()
    dropped = w.hand_over("bank", "june.pay", b"1")
    assert dropped is not None and dropped.ref is not None
    assert w.run(dropped.ref)["plan"]["route"] == "pay"


def test_a_file_for_an_unknown_partner_or_one_without_outbound_routes_is_quarantined_with_the_reason() -> None:
    w = World()
    for partner, reason in (("nobody", "partner 'nobody' is not in the catalogue"),
                            ("acme", "partner 'acme' has no outbound block in the catalogue")):
        dropped = w.hand_over(partner, "a.csv", b"x")
        assert dropped is not None and dropped.quarantined and dropped.copy_container == "quarantine"
        job = w.jobs.get_job(dropped.job_id)
        assert job.status is JobStatus.FAILED and reason in job.error


def test_the_outbound_blob_trigger_starts_the_job_and_removes_the_handed_over_blob() -> None:
    from tests.fakes import FakeDurableClient

    w = World()
    w.blobs.upload_stream("outbound", "bank/a.csv", [b"x"])
    started: list[dict[str, Any]] = []

    class Client(FakeDurableClient):
        async def start_new(self, name: str, instance_id: str, client_input: Any) -> str:
            started.append(client_input)
            return instance_id

    dropped = asyncio.run(take_drop(w.services, Client(), container="outbound", blob_path="bank/a.csv",
                                    handover=OUTBOUND))
    assert dropped is not None and [s["job_id"] for s in started] == [dropped.job_id]
    assert not w.blobs.exists("outbound", "bank/a.csv")


def test_wharf_send_records_an_outbound_job_with_its_route_and_queues_it(tmp_path: Path) -> None:
    w = World()
    local = tmp_path / "report.csv"
    local.write_bytes(b"a,b\n" * 1000)
    result = send_file(w.services, "bank", local, route="pay")
    job = w.jobs.get_job(result["job_id"])
    assert (job.job_type, job.bytes, job.sha256) == (JobType.OUTBOUND, 4000, hashlib.sha256(local.read_bytes())
                                                     .hexdigest())
    [message] = w.queues.messages(QUEUE)
    assert (message["job_id"], message["container"], message["sha256"]) == (job.job_id, "inbound", job.sha256)
    assert w.blobs.read("inbound", message["blob_path"]) == local.read_bytes()
    ref = {k: message[k] for k in ("job_id", "partner", "container", "blob_path", "file_name")}
    # The named route is taken although its glob (*.pay) does not match the file.
    assert w.run(ref)["plan"]["route"] == "pay"


def test_wharf_send_refuses_an_unknown_route_or_partner_before_anything_is_written(tmp_path: Path) -> None:
    w = World()
    local = tmp_path / "a.csv"
    local.write_bytes(b"x")
    with pytest.raises(NotFoundError, match="no outbound route 'nope'; the partner's outbound routes are: pay, all"):
        send_file(w.services, "bank", local, route="nope")
    with pytest.raises(ConfigurationError, match="partner acme has no outbound block"):
        send_file(w.services, "acme", local)
    with pytest.raises(NotFoundError):
        send_file(w.services, "ghost", local)
    assert w.jobs.list_jobs() == []


def test_the_replay_of_an_outbound_job_is_outbound_and_keeps_its_route(tmp_path: Path) -> None:
    w = World()
    local = tmp_path / "a.csv"
    local.write_bytes(b"x")
    first = send_file(w.services, "bank", local, route="pay")["job_id"]
    again = replay(w.services, first)["job_id"]
    created = w.jobs.events(again)[0].data
    assert (created["direction"], created["route"], created["parent_job_id"]) == ("outbound", "pay", first)


# --- exactly once per destination, only the failed ones retried -------------------------------------


def test_a_retried_route_step_re_sends_only_the_destination_that_failed() -> None:
    w = World()
    dropped = w.hand_over("bank", "a.csv", b"payload")
    assert dropped is not None and dropped.ref is not None
    ref = dropped.ref
    process.start_job(w.services, ref)
    output = process.validate_and_transform(w.services, ref)["output"]
    plan = process.plan_routes(w.services, ref)
    Recorder.failures["count-b"] = 1

    def route(i: int) -> dict[str, Any]:
        return process.route_file(w.services, {**ref, "output": output, "route": plan["route"],
                                               "destination": plan["destinations"][i], "index": i})

    assert route(0)["delivery"] == "SENT"
    with pytest.raises(ConnectionError):
        route(1)
    states = {d.index: (d.state, d.attempts) for d in w.deliveries.for_job(ref["job_id"])}
    assert states == {0: (DeliveryState.SENT, 1), 1: (DeliveryState.FAILED, 1)}
    # Both activities run again (a whole step retried): the SENT one returns its first result, unsent.
    again = [route(0), route(1)]
    assert Recorder.calls == [("count-a", 0), ("count-b", 1), ("count-b", 1)]
    assert again[0]["already_sent"] is True and again[0]["target"] == "count-a:a/a.csv"
    assert {d.index: d.state for d in w.deliveries.for_job(ref["job_id"])} == {
        0: DeliveryState.SENT, 1: DeliveryState.SENT}
    routed = [e.data["index"] for e in w.jobs.events(ref["job_id"]) if e.type is EventType.ROUTED]
    assert routed == [0, 1]  # one file.routed per destination


# --- redelivery -----------------------------------------------------------------------------------------


def test_redeliver_re_sends_the_failed_delivery_as_a_new_linked_record_with_an_event() -> None:
    w = World()
    dropped = w.hand_over("bank", "a.csv", b"payload")
    assert dropped is not None and dropped.ref is not None
    Recorder.failures["count-b"] = 1
    with pytest.raises(ConnectionError):
        w.run(dropped.ref)
    job_id = dropped.ref["job_id"]
    rows = w.redeliver(job_id)
    assert [(r["index"], r["redelivery_of"], r["kind"], r["state"]) for r in rows] == [
        (REDELIVERY_BASE, 1, "count-b", "SENT")]
    assert Recorder.calls == [("count-a", 0), ("count-b", 1), ("count-b", REDELIVERY_BASE)]
    old = w.deliveries.get(job_id, 1)
    assert old.state is DeliveryState.FAILED  # the old record keeps what happened to it
    [event] = [e.data for e in w.jobs.events(job_id) if e.type is EventType.REDELIVERED]
    assert (event["index"], event["redelivery_of"], event["state"]) == (REDELIVERY_BASE, 1, "SENT")
    requested = [e.data for e in w.jobs.events(job_id) if e.data.get("action") == "redelivery.requested"]
    assert [(e["index"], e["by"]) for e in requested] == [(REDELIVERY_BASE, "test")]
    # Nothing failed any more (the redelivery replaced the failed one): naming one is required now.
    with pytest.raises(NotFoundError, match="no delivery of this job failed; name the one to send again"):
        request_redelivery(w.services, job_id)
    # On purpose, a SENT one: again a new record.
    [row] = w.redeliver(job_id, destination=0)
    assert (row["index"], row["redelivery_of"], row["state"]) == (REDELIVERY_BASE + 1, 0, "SENT")
    with pytest.raises(NotFoundError, match="the job has no delivery 7"):
        request_redelivery(w.services, job_id, destination=7)
    failed = list_deliveries(w.services, state="FAILED", partner="bank")
    assert [(r["job_id"], r["index"]) for r in failed] == [(job_id, 1)]
    text = format_job_detail(job_detail(w.jobs, job_id, w.deliveries))
    assert "Deliveries:" in text and f"{REDELIVERY_BASE:>3}  count-b  SENT" in text and "(re-sends 1)" in text


def test_a_redelivery_that_fails_is_recorded_on_the_job_and_its_record() -> None:
    w = World()
    dropped = w.hand_over("bank", "a.csv", b"payload")
    assert dropped is not None and dropped.ref is not None
    Recorder.failures["count-b"] = 2
    with pytest.raises(ConnectionError):
        w.run(dropped.ref)
    [row] = w.redeliver(dropped.ref["job_id"])
    assert row["state"] == "FAILED" and "count-b is down" in row["error"]
    [event] = [e.data for e in w.jobs.events(dropped.ref["job_id"]) if e.type is EventType.REDELIVERED]
    assert event["state"] == "FAILED" and "count-b is down" in event["error"]
    assert w.deliveries.get(dropped.ref["job_id"], REDELIVERY_BASE).state is DeliveryState.FAILED


def test_a_redelivery_message_again_sends_nothing_twice_and_a_bad_one_is_dead_lettered() -> None:
    import json

    from shared.services.poison import Delivery

    w = World()
    dropped = w.hand_over("bank", "a.csv", b"payload")
    assert dropped is not None and dropped.ref is not None
    Recorder.failures["count-b"] = 1
    with pytest.raises(ConnectionError):
        w.run(dropped.ref)
    job_id = dropped.ref["job_id"]
    w.redeliver(job_id)
    calls = list(Recorder.calls)
    queue = w.services.settings.redelivery_queue
    body = json.dumps({"job_id": job_id, "index": REDELIVERY_BASE}).encode()
    assert on_redelivery(w.services, Delivery(queue=queue, id="again", body=body, dequeue_count=2))["state"] == "SENT"
    assert Recorder.calls == calls  # SENT: not sent a second time
    for bad in (b"not json", json.dumps({"job_id": job_id, "index": 55}).encode(),
                json.dumps({"job_id": job_id, "index": 0}).encode()):  # no such record; a route's own delivery
        assert on_redelivery(w.services, Delivery(queue=queue, id="bad", body=bad, dequeue_count=1)) is None
    assert w.queues.depth(f"{queue}-poison") == 3 and Recorder.calls == calls


# --- the catalogue ----------------------------------------------------------------------------------


def test_a_plugin_kinds_options_are_checked_key_by_key() -> None:
    doc = catalogue()
    doc["partners"][0]["outbound"]["routes"][1]["destinations"][0]["colour"] = "red"
    with pytest.raises(CatalogError) as err:
        parse_catalog(doc, env={})
    assert err.value.problems == [
        "partners[bank].outbound.routes[1].destinations[0].colour: extra inputs are not permitted"]


def test_a_partner_with_only_outbound_and_no_remote_dirs_is_valid_and_never_polled() -> None:
    doc = {"partners": [{"id": "bank", "name": "Bank", "sftp": SFTP, "outbound": {"routes": [
        {"name": "up", "default": True, "destinations": [{"kind": "sftp", "partner": "bank"}]}]}}]}
    catalog = parse_catalog(doc, env={})
    assert catalog.get("bank").outbound is not None and catalog.sftp_partners() == []


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["partners"][0]["sftp"].pop("outbound_dir"),
     ["partners[bank].sftp.remote_dirs: must list at least one folder to poll (or set outbound_dir for a partner "
      "Wharf only delivers to)",
      "partners[bank].outbound.routes[0].destinations[0].folder: is required: partner 'bank' has no "
      "sftp.outbound_dir"]),
    (lambda d: d["partners"][0]["outbound"]["routes"][0]["destinations"][0].update(partner="bonk"),
     ["partners[bank].outbound.routes[0].destinations[0].partner: no partner 'bonk' in the catalogue; did you "
      "mean 'bank'?"]),
    (lambda d: d["partners"][0]["outbound"]["routes"].append(
        {"name": "up", "destinations": [{"kind": "event"}]}),
     ["partners[bank].outbound.routes[1].name: is already used by routes[0]; route names must be unique"]),
    (lambda d: d["partners"][0]["outbound"]["routes"][0]["destinations"].append({"kind": "s3", "bucket": "b"}),
     ["partners[bank].outbound.routes[0].destinations[1].kind: unknown destination kind 's3'; known kinds: blob, "
      "count-a, count-b, email, event, sftp (a plugin kind must be installed where Wharf runs)"]),
    (lambda d: d["partners"][0]["outbound"].update(routes=[]),
     ["partners[bank].outbound.routes: must not be empty"]),
    (lambda d: d["partners"][0]["outbound"]["routes"][0]["destinations"].append(
        {"kind": "blob", "container": "outbound"}),
     ["partners[bank].outbound.routes[0].destinations[1].container: is reserved for Wharf's own use (archive, "
      "drop, inbound, locks, outbound, quarantine); route to processed or a container of your own (outbound/ is where "
      "files are handed over to be sent)"]),
])
def test_outbound_catalogue_mistakes_get_their_message(mutate: Any, expected: list[str]) -> None:
    doc = {"partners": [{"id": "bank", "name": "Bank", "sftp": dict(SFTP), "outbound": {"routes": [
        {"name": "up", "default": True, "destinations": [{"kind": "sftp", "partner": "bank"}]}]}}]}
    mutate(doc)
    with pytest.raises(CatalogError) as err:
        parse_catalog(doc, env={})
    assert err.value.problems == expected


def test_a_named_route_removed_before_the_job_runs_fails_it_for_good(tmp_path: Path) -> None:
    w = World()
    local = tmp_path / "a.csv"
    local.write_bytes(b"x")
    job_id = send_file(w.services, "bank", local, route="pay")["job_id"]
    [message] = w.queues.messages(QUEUE)
    doc = catalogue()
    doc["partners"][0]["outbound"]["routes"].pop(0)  # "pay" is gone
    w.services.overrides["catalog"] = parse_catalog(doc, env={})
    ref = {k: message[k] for k in ("job_id", "partner", "container", "blob_path", "file_name")}
    with pytest.raises(ConfigurationError, match=r"partner bank: no outbound route 'pay'.*: all$"):
        process.plan_routes(w.services, ref)
    assert ref["job_id"] == job_id


def test_the_sweep_finds_deliveries_a_crash_left_sending() -> None:
    """Regression: an interrupted redelivery left its row SENDING forever. The sweep queues a stale redelivery
    again (the worker takes the SENDING row over) up to WHARF_REDELIVERY_REQUEUE_MAX times, then FAILS it with
    the reason; a route's own delivery of an ended job is FAILED with the reason; an open job's is left alone."""
    from dataclasses import replace
    from datetime import timedelta

    from shared.domain.delivery import Delivery, DeliveryStep
    from shared.domain.jobs import utcnow
    from shared.services.delivery_sweep import sweep_deliveries
    from shared.services.poison import Delivery as Message

    w = World()
    dropped = w.hand_over("bank", "a.csv", b"payload")
    assert dropped is not None and dropped.ref is not None
    w.run(dropped.ref)
    job_id = dropped.ref["job_id"]
    assert w.jobs.get_job(job_id).status is JobStatus.COMPLETED
    # A crash: a redelivery of 0 interrupted while uploading; the route's delivery 1 left SENDING by a dead worker.
    w.deliveries.create(Delivery(job_id=job_id, index=REDELIVERY_BASE, partner="bank", kind="count-a", target="",
                                 route=w.deliveries.get(job_id, 0).route, state=DeliveryState.SENDING,
                                 step=DeliveryStep.UPLOADING, created_at=utcnow(), redelivery_of=0))
    one = w.deliveries.get(job_id, 1)
    w.deliveries.update(replace(one, state=DeliveryState.SENDING, step=DeliveryStep.UPLOADING))
    queue = w.services.settings.redelivery_queue

    assert sweep_deliveries(w.services, now=utcnow()).requeued == []  # not stale yet
    later = utcnow() + timedelta(minutes=w.services.settings.delivery_stale_minutes + 1)
    swept = sweep_deliveries(w.services, now=later)
    assert swept.requeued == [f"{job_id}/{REDELIVERY_BASE}"] and swept.failed == [f"{job_id}/1"]
    gave_up = w.deliveries.get(job_id, 1)
    assert gave_up.state is DeliveryState.FAILED and "job is COMPLETED" in gave_up.error
    assert f"wharf redeliver {job_id} --destination 1" in gave_up.error
    # The worker takes the SENDING redelivery over and sends it.
    [message] = w.queues.receive(queue)
    calls = len(Recorder.calls)
    row = on_redelivery(w.services, Message(queue=queue, id=message.id, body=message.body, dequeue_count=1))
    assert row is not None and row["state"] == "SENT" and Recorder.calls[calls:] == [("count-a", REDELIVERY_BASE)]

    # A redelivery that never finishes: queued again WHARF_REDELIVERY_REQUEUE_MAX times, then FAILED.
    w.deliveries.create(Delivery(job_id=job_id, index=REDELIVERY_BASE + 1, partner="bank", kind="count-a", target="",
                                 route=gave_up.route, state=DeliveryState.SENDING, created_at=utcnow(),
                                 redelivery_of=0))
    for _ in range(w.services.settings.redelivery_requeue_max):
        assert sweep_deliveries(w.services, now=later).requeued == [f"{job_id}/{REDELIVERY_BASE + 1}"]
    final = sweep_deliveries(w.services, now=later)
    assert final.requeued == [] and final.failed == [f"{job_id}/{REDELIVERY_BASE + 1}"]
    stuck = w.deliveries.get(job_id, REDELIVERY_BASE + 1)
    assert stuck.state is DeliveryState.FAILED and "redelivery interrupted" in stuck.error
    notes = [e.data["action"] for e in w.jobs.events(job_id) if e.type is EventType.NOTE]
    assert notes.count("redelivery.requeued") == 1 + w.services.settings.redelivery_requeue_max
    assert notes.count("delivery.abandoned") == 2

    # A route's delivery of a job still open is its orchestration's: left alone.
    other = w.hand_over("bank", "b.csv", b"payload")
    assert other is not None and other.ref is not None
    process.start_job(w.services, other.ref)
    w.deliveries.create(Delivery(job_id=other.ref["job_id"], index=0, partner="bank", kind="count-a", target="",
                                 state=DeliveryState.SENDING, created_at=utcnow()))
    assert sweep_deliveries(w.services, now=later).left == [f"{other.ref['job_id']}/0"]


def test_api_v1_delivery_detail_and_redeliver_queue_the_work() -> None:
    import json

    from shared.api.app import dispatch
    from shared.api.config import ApiSettings
    from shared.api.http import ApiRequest

    w = World()
    dropped = w.hand_over("bank", "a.csv", b"payload")
    assert dropped is not None and dropped.ref is not None
    w.run(dropped.ref)
    job_id = dropped.ref["job_id"]
    cfg = ApiSettings(WHARF_FUNCTION_KEY="k", WHARF_CONSOLE_DEV_SIGNIN=False, WHARF_EASYAUTH_ENABLED=False)

    def call(method: str, path: str, key: str = "k") -> tuple[int, Any]:
        r = dispatch(w.services, ApiRequest(method, path, {}, {"x-functions-key": key}, b""), cfg=cfg)
        return r.status, json.loads(r.read() or b"null")

    code, one = call("GET", f"/jobs/{job_id}/deliveries/1")
    assert code == 200 and (one["index"], one["kind"], one["state"], one["redelivery_of"]) == (1, "count-b", "SENT",
                                                                                               None)
    assert call("GET", f"/jobs/{job_id}/deliveries/9")[1]["parameter"] == "destination"
    assert call("GET", f"/jobs/{job_id}/deliveries/x")[0] == 400
    assert call("POST", f"/jobs/{job_id}/deliveries/9/redeliver")[0] == 404
    assert call("POST", "/jobs/job-nope/deliveries/0/redeliver")[0] == 404
    assert call("POST", f"/jobs/{job_id}/deliveries/1/redeliver", key="wrong")[0] == 401
    calls = len(Recorder.calls)
    code, body = call("POST", f"/jobs/{job_id}/deliveries/1/redeliver")
    assert code == 202 and [(d["index"], d["redelivery_of"], d["state"]) for d in body["items"]] == [
        (REDELIVERY_BASE, 1, "PENDING")]
    assert len(Recorder.calls) == calls  # queued, not sent by the API
    queue = w.services.settings.redelivery_queue
    [message] = w.queues.peek(queue)
    assert (message["job_id"], message["index"], message["requested_by"]) == (job_id, REDELIVERY_BASE,
                                                                               "api:function-key")
