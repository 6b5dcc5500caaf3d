"""Drop intake against Azurite: the dropped blob is copied to inbound/ with its sha256 (server side), recorded
event by event, and removed only if it is still the version copied. Each test drops into a container of its
own, which no devhost watches."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.blob import BlobServiceClient

from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.errors import ConfigurationError
from shared.domain.jobs import EventType, JobStatus
from shared.observability.setup import for_tests
from shared.ports import BlobInfo
from shared.services.drop import Dropped, land_drop, take_drop
from tests.conftest import unique
from tests.fakes import FakeDurableClient

pytestmark = pytest.mark.azurite

DATA = b"id,amount\n1,10.50\n2,7\n"
NEWER = b"id,amount\n1,99\n"


class StartingClient(FakeDurableClient):
    """The durable client as the drop trigger uses it: get_status, then start_new."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[str, dict[str, Any]]] = []

    async def start_new(self, orchestration_function_name: str, instance_id: str | None = None,
                        client_input: Any = None) -> str:
        assert instance_id is not None
        self.started.append((instance_id, dict(client_input)))
        self.set(instance_id, "Pending")
        return instance_id


@pytest.fixture
def drop(services: Services, azurite: str) -> Iterator[str]:
    container = unique("drop")
    services.blobs.ensure_containers([container])
    yield container
    BlobServiceClient.from_connection_string(azurite).delete_container(container)


@pytest.fixture
def partner(services: Services) -> str:
    partner = unique("p")[:20]
    services.overrides["catalog"] = parse_catalog({"partners": [{"id": partner, "name": partner}]}, env={})
    return partner


def _take(services: Services, client: StartingClient, container: str, path: str) -> Dropped | None:
    return asyncio.run(take_drop(services, client, container=container, blob_path=path))


def _read(services: Services, blob_path: str) -> bytes:
    container, _, path = blob_path.partition("/")
    return b"".join(services.blobs.open_read(container, path))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_drop_is_copied_to_inbound_with_its_sha256_started_and_taken_off_the_drop_folder(
        services: Services, drop: str, partner: str) -> None:
    capture = for_tests()
    services.blobs.upload_stream(drop, f"{partner}/orders.csv", [DATA])
    client = StartingClient()
    dropped = _take(services, client, drop, f"{partner}/orders.csv")

    assert dropped is not None and not dropped.quarantined
    job = services.jobs.get_job(dropped.job_id)
    assert (job.status, job.job_type, job.file_name, job.sha256, job.bytes) == (
        JobStatus.PENDING, "DROP", "orders.csv", _sha(DATA), len(DATA))
    assert job.blob_path.startswith(f"inbound/{partner}/") and job.blob_path.endswith("/orders.csv")
    assert _read(services, job.blob_path) == DATA
    copy = services.blobs.get_info("inbound", job.blob_path.partition("/")[2])
    assert (copy.sha256, copy.metadata["job_id"], copy.metadata["channel"]) == (_sha(DATA), job.job_id, "drop")
    [transfer] = services.jobs.transfers(job.job_id)
    assert (transfer.destination, transfer.sha256, transfer.status) == (job.blob_path, _sha(DATA), "LANDED")
    assert transfer.source == f"blob:{drop}/{partner}/orders.csv"
    [(instance, payload)] = client.started
    assert instance == job.job_id
    assert (payload["container"], "inbound/" + payload["blob_path"]) == ("inbound", job.blob_path)
    # The orchestration continues the drop's trace (intake.start is a child of intake.drop).
    drop_span, start_span = capture.span("intake.drop"), capture.span("intake.start")
    assert payload["traceparent"].split("-")[1] == format(drop_span.context.trace_id, "032x")
    assert start_span.parent is not None and start_span.parent.span_id == drop_span.context.span_id
    assert not services.blobs.exists(drop, f"{partner}/orders.csv")

    # The same drop event again (a duplicate, or a retry after the removal): nothing more happens.
    assert _take(services, client, drop, f"{partner}/orders.csv") is None
    assert len(client.started) == 1 and len(services.jobs.events(job.job_id)) == 2


def test_a_newer_upload_while_the_first_is_copied_stays_in_drop_and_becomes_its_own_job(
        services: Services, drop: str, partner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    services.blobs.upload_stream(drop, f"{partner}/daily.csv", [DATA])
    copy = services.blobs.copy

    def copy_then_resend(*args: Any, **kwargs: Any) -> BlobInfo:
        info = copy(*args, **kwargs)
        monkeypatch.undo()  # once
        services.blobs.upload_stream(drop, f"{partner}/daily.csv", [NEWER])  # the partner sends again
        return info

    monkeypatch.setattr(services.blobs, "copy", copy_then_resend)
    client = StartingClient()
    first = _take(services, client, drop, f"{partner}/daily.csv")
    assert first is not None
    # The first job has the first bytes; the newer upload was not removed with it.
    assert _read(services, services.jobs.get_job(first.job_id).blob_path) == DATA
    assert b"".join(services.blobs.open_read(drop, f"{partner}/daily.csv")) == NEWER
    assert any("newer version" in line.message for line in services.jobs.logs(first.job_id))

    second = _take(services, client, drop, f"{partner}/daily.csv")  # the newer version's own drop event
    assert second is not None and second.job_id != first.job_id
    jobs = {j: services.jobs.get_job(j) for j in (first.job_id, second.job_id)}
    assert _read(services, jobs[second.job_id].blob_path) == NEWER
    assert (jobs[first.job_id].sha256, jobs[second.job_id].sha256) == (_sha(DATA), _sha(NEWER))
    assert jobs[first.job_id].blob_path != jobs[second.job_id].blob_path
    assert [i for i, _ in client.started] == [first.job_id, second.job_id]
    assert not services.blobs.exists(drop, f"{partner}/daily.csv")


def test_a_retry_after_a_partial_attempt_completes_the_job_event_by_event(
        services: Services, drop: str, partner: str, monkeypatch: pytest.MonkeyPatch) -> None:
    services.blobs.upload_stream(drop, f"{partner}/partial.csv", [DATA])
    append = services.jobs.append
    copies: list[str] = []
    copy = services.blobs.copy

    def counted_copy(*args: Any, **kwargs: Any) -> BlobInfo:
        copies.append(args[3])
        return copy(*args, **kwargs)

    def fail_landed(job_id: str, event_type: str, data: Any = None) -> Any:
        if event_type == EventType.FILE_LANDED:
            raise ServiceRequestError("table storage went away")
        return append(job_id, event_type, data)

    monkeypatch.setattr(services.blobs, "copy", counted_copy)
    monkeypatch.setattr(services.jobs, "append", fail_landed)
    client = StartingClient()
    with pytest.raises(ServiceRequestError):
        _take(services, client, drop, f"{partner}/partial.csv")
    assert client.started == [] and services.blobs.exists(drop, f"{partner}/partial.csv")  # retried whole

    monkeypatch.setattr(services.jobs, "append", append)
    dropped = _take(services, client, drop, f"{partner}/partial.csv")
    assert dropped is not None
    types = [e.type for e in services.jobs.events(dropped.job_id)]
    assert types == [EventType.CREATED, EventType.FILE_LANDED]
    job = services.jobs.get_job(dropped.job_id)
    assert job.blob_path and job.sha256 == _sha(DATA)  # replayable
    assert len(copies) == 1  # the second attempt reused the first attempt's copy
    assert [i for i, _ in client.started] == [dropped.job_id]


def test_a_nested_name_lands_under_its_sanitised_last_segment(services: Services, drop: str, partner: str) -> None:
    services.blobs.upload_stream(drop, f"{partner}/2026/12/in:voice?.csv", [DATA])
    dropped = _take(services, StartingClient(), drop, f"{partner}/2026/12/in:voice?.csv")
    assert dropped is not None and dropped.file_name == "in_voice_.csv"
    job = services.jobs.get_job(dropped.job_id)
    assert job.file_name == "in_voice_.csv" and job.blob_path.endswith("/in_voice_.csv")
    created = services.jobs.events(job.job_id)[0].data
    assert (created["original_name"], created["remote_path"]) == ("2026/12/in:voice?.csv",
                                                                  f"{partner}/2026/12/in:voice?.csv")
    assert not services.blobs.list_blobs(drop)


def test_a_file_for_a_partner_not_in_the_catalogue_is_quarantined_with_its_reason_and_not_started(
        services: Services, drop: str, partner: str) -> None:
    capture = for_tests()
    ghost = unique("ghost")[:20]
    services.blobs.upload_stream(drop, f"{ghost}/orders.csv", [DATA])
    client = StartingClient()
    dropped = _take(services, client, drop, f"{ghost}/orders.csv")

    assert dropped is not None and dropped.quarantined and client.started == []
    job = services.jobs.get_job(dropped.job_id)
    assert (job.status, job.partner) == (JobStatus.FAILED, ghost)
    assert job.error.startswith(f"partner '{ghost}' is not in the catalogue; the file is quarantined at "
                                "quarantine/_unknown/")
    assert partner not in job.error  # the known partners are not listed
    assert job.blob_path.startswith("quarantine/_unknown/") and _read(services, job.blob_path) == DATA
    copy = services.blobs.get_info("quarantine", job.blob_path.partition("/")[2])
    assert copy.sha256 == _sha(DATA) and copy.metadata["reason"].startswith(f"partner '{ghost}' is not")
    types = [e.type for e in services.jobs.events(job.job_id)]
    assert types == [EventType.CREATED, EventType.FILE_LANDED, EventType.STEP_FAILED, EventType.FAILED]
    [published] = [m for m in services.queues.peek(services.settings.events_queue)
                   if m["data"].get("job_id") == job.job_id]
    assert published["type"] == "job.failed" and published["data"]["step"] == "intake"
    assert not services.blobs.exists(drop, f"{ghost}/orders.csv")  # removed once the quarantine copy existed
    failures = [p.attributes for p in capture.metric_points("wharf.failures")]
    assert {"partner": "_unknown", "channel": "drop", "reason": "configuration"} in failures

    # Once the partner is in the catalogue, the job's quarantined copy is its raw file for a replay.
    assert job.sha256 == _sha(DATA) and job.bytes == len(DATA)


def test_a_file_outside_any_partner_folder_is_quarantined_with_a_reason(
        services: Services, drop: str, partner: str) -> None:
    services.blobs.upload_stream(drop, "loose.csv", [DATA])
    client = StartingClient()
    dropped = _take(services, client, drop, "loose.csv")
    assert dropped is not None and dropped.quarantined and client.started == []
    job = services.jobs.get_job(dropped.job_id)
    assert (job.status, job.partner) == (JobStatus.FAILED, "_unknown")
    assert job.error.startswith(f"'loose.csv' is not in a partner folder: files go to {drop}/{{partner}}/{{name}}")
    assert not services.blobs.exists(drop, "loose.csv")


def test_a_catalogue_that_does_not_load_leaves_the_drop_untouched_for_a_retry(
        services: Services, drop: str) -> None:
    class Broken:
        def __contains__(self, partner: object) -> bool:
            raise ConfigurationError("partners.yaml line 3: not a mapping")

    services.overrides["catalog"] = Broken()
    services.blobs.upload_stream(drop, "acme/orders.csv", [DATA])
    with pytest.raises(ConfigurationError):
        land_drop(services, container=drop, blob_path="acme/orders.csv")
    assert services.blobs.exists(drop, "acme/orders.csv") and services.jobs.list_jobs() == []


def test_a_retry_keeps_the_first_attempts_decision_when_the_catalogue_changed_since(
        services: Services, drop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = unique("ghost")[:20]
    services.overrides["catalog"] = parse_catalog({"partners": []}, env={})
    services.blobs.upload_stream(drop, f"{ghost}/orders.csv", [DATA])
    delete = services.blobs.delete

    def removal_fails(*args: Any, **kwargs: Any) -> None:
        raise ServiceRequestError("blob storage went away")

    monkeypatch.setattr(services.blobs, "delete", removal_fails)
    client = StartingClient()
    with pytest.raises(ServiceRequestError):
        _take(services, client, drop, f"{ghost}/orders.csv")
    # The partner is added before the drop event is retried: the refused version stays refused (replay it).
    services.overrides["catalog"] = parse_catalog({"partners": [{"id": ghost, "name": ghost}]}, env={})
    monkeypatch.setattr(services.blobs, "delete", delete)
    dropped = _take(services, client, drop, f"{ghost}/orders.csv")
    assert dropped is not None and dropped.quarantined and client.started == []
    job = services.jobs.get_job(dropped.job_id)
    assert job.status is JobStatus.FAILED and job.blob_path.startswith("quarantine/_unknown/")
    assert [e.type for e in services.jobs.events(job.job_id)].count(EventType.FAILED) == 1
    assert not services.blobs.exists(drop, f"{ghost}/orders.csv")


def test_a_retry_after_a_crash_between_an_event_and_its_projection_makes_the_job_visible(
        services: Services, drop: str, partner: str) -> None:
    """A drop attempt that died after its last event but before that event's projection update (simulated by
    removing the IntegrationJob row, then failing the orchestration start) leaves a job no list shows; the
    retry, which skips the events already there, must still bring the projection up to date."""
    services.blobs.upload_stream(drop, f"{partner}/crash.csv", [DATA])

    class DyingClient(StartingClient):
        async def start_new(self, orchestration_function_name: str, instance_id: str | None = None,
                            client_input: Any = None) -> str:
            (job,) = services.jobs.list_jobs(partner=partner)
            services.jobs._table("IntegrationJob").delete_entity(partner, job.job_id)  # type: ignore[attr-defined]
            raise ServiceRequestError("the worker died here")

    with pytest.raises(ServiceRequestError):
        _take(services, DyingClient(), drop, f"{partner}/crash.csv")
    assert services.jobs.list_jobs(partner=partner) == []

    client = StartingClient()
    dropped = _take(services, client, drop, f"{partner}/crash.csv")
    assert dropped is not None
    (listed,) = services.jobs.list_jobs(partner=partner)
    assert listed.job_id == dropped.job_id and listed.blob_path and listed.sha256 == _sha(DATA)
    assert [i for i, _ in client.started] == [dropped.job_id]
