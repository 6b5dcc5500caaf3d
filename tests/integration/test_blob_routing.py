"""Blob destinations against Azurite: no output is overwritten in silence (`on_exists`), and every ROUTED
event's sha256 is what is at its path, or the earlier job says it was superseded and by which job."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest

from shared.bootstrap import Services
from shared.catalog import BlobDestination
from shared.domain.errors import ConflictError
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, JobEvent
from shared.services.process import route_file

pytestmark = pytest.mark.azurite

OUTPUT = "invoices_20261201.jsonl"
DAY_TEMPLATE = "{partner}/{yyyy}/{MM}/{dd}/{name}"  # the old default: one path per name and day


def land(services: Services, partner: str, content: bytes, name: str = "invoices_20261201.csv") -> dict[str, Any]:
    """A job that landed `name` and whose transform staged `content`: the ref route_file is called with."""
    job_id = new_job_id()
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD", "source": "test",
                                                     "file_name": name})
    raw = services.blobs.upload_stream("inbound", f"{partner}/{job_id}/{name}", [b"raw " + content])
    services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{raw.path}", "bytes": raw.size,
                                                         "sha256": raw.sha256, "file_name": name})
    staged = services.blobs.upload_stream("staging", f"{partner}/{job_id}/{OUTPUT}", [content],
                                          metadata={"job_id": job_id})
    return {"job_id": job_id, "partner": partner, "file_name": name, "container": "inbound", "blob_path": raw.path,
            "route": "invoices", "index": 0,
            "output": {"container": "staging", "path": staged.path, "name": OUTPUT, "rows": 1,
                       "bytes": staged.size, "sha256": staged.sha256, "url": staged.url}}


def destination(**fields: Any) -> dict[str, Any]:
    """A blob destination as plan_routes hands it over (the catalogue model, dumped)."""
    return BlobDestination(**fields).model_dump(mode="json")


def deliver(services: Services, ref: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any]:
    return route_file(services, {**ref, "destination": dest})


def routed(services: Services, job_id: str) -> list[JobEvent]:
    return [e for e in services.jobs.events(job_id) if e.type is EventType.ROUTED]


def stored(services: Services, target: str) -> bytes:
    container, _, path = target.partition("/")
    return b"".join(services.blobs.open_read(container, path))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def partner() -> str:
    return f"r{uuid.uuid4().hex[:12]}"


def test_two_jobs_with_the_same_name_and_day_keep_both_outputs(services: Services, partner: str) -> None:
    first, second = land(services, partner, b'{"row": 1}\n'), land(services, partner, b'{"row": 2}\n')
    a = deliver(services, first, destination())
    b = deliver(services, second, destination())
    assert a["target"] != b["target"]
    assert a["target"].startswith(f"processed/{partner}/") and first["job_id"] in a["target"]
    for ref, content in ((first, b'{"row": 1}\n'), (second, b'{"row": 2}\n')):
        (event,) = routed(services, ref["job_id"])
        assert stored(services, event.data["target"]) == content
        assert event.data["sha256"] == sha(content)


def test_on_exists_fail_refuses_the_second_job_and_names_the_first(services: Services, partner: str) -> None:
    dest = destination(path=DAY_TEMPLATE, on_exists="fail")
    first, second = land(services, partner, b"first\n"), land(services, partner, b"second\n")
    a = deliver(services, first, dest)
    with pytest.raises(ConflictError) as err:
        deliver(services, second, dest)
    assert a["target"] in str(err.value) and first["job_id"] in str(err.value)
    assert stored(services, a["target"]) == b"first\n"
    assert routed(services, first["job_id"])[0].data["sha256"] == sha(b"first\n")
    assert routed(services, second["job_id"]) == []


def test_fail_is_the_default_for_a_template_shared_by_jobs(services: Services, partner: str) -> None:
    dest = {"kind": "blob", "container": "processed", "path": DAY_TEMPLATE}  # on_exists not given
    deliver(services, land(services, partner, b"first\n"), dest)
    with pytest.raises(ConflictError):
        deliver(services, land(services, partner, b"second\n"), dest)


def test_on_exists_overwrite_records_on_the_earlier_job_that_it_was_superseded(
        services: Services, partner: str) -> None:
    dest = destination(path=DAY_TEMPLATE, on_exists="overwrite")
    first, second = land(services, partner, b"first\n"), land(services, partner, b"second\n")
    a = deliver(services, first, dest)
    b = deliver(services, second, dest)
    assert a["target"] == b["target"] and stored(services, b["target"]) == b"second\n"
    assert b["sha256"] == sha(b"second\n")
    assert b["supersedes"] == {"job_id": first["job_id"], "sha256": sha(b"first\n")}
    (superseded,) = [e for e in services.jobs.events(first["job_id"]) if e.type is EventType.SUPERSEDED]
    assert superseded.data["target"] == a["target"] and superseded.data["by_job_id"] == second["job_id"]
    assert superseded.data["sha256"] == sha(b"first\n")
    # The earlier ROUTED event is kept as it was: the superseded event says why its sha256 no longer matches.
    assert routed(services, first["job_id"])[0].data["sha256"] == sha(b"first\n")
    # A retry of the second delivery finds its own blob: no second superseded event.
    deliver(services, second, dest)
    assert len([e for e in services.jobs.events(first["job_id"]) if e.type is EventType.SUPERSEDED]) == 1


def test_on_exists_unique_numbers_the_second_output(services: Services, partner: str) -> None:
    dest = destination(path=DAY_TEMPLATE, on_exists="unique")
    refs = [land(services, partner, f"job {i}\n".encode()) for i in range(3)]
    targets = [deliver(services, ref, dest)["target"] for ref in refs]
    base = targets[0].removesuffix(".jsonl")
    assert targets == [f"{base}.jsonl", f"{base}.2.jsonl", f"{base}.3.jsonl"]
    for i, (ref, target) in enumerate(zip(refs, targets, strict=True)):
        assert stored(services, target) == f"job {i}\n".encode()
        assert routed(services, ref["job_id"])[0].data["sha256"] == sha(f"job {i}\n".encode())


@pytest.mark.parametrize("on_exists", ["fail", "unique", "overwrite"])
def test_a_retried_delivery_of_the_same_job_succeeds_on_its_own_blob(
        services: Services, partner: str, on_exists: str) -> None:
    dest = destination(path=DAY_TEMPLATE, on_exists=on_exists)
    other = b""
    if on_exists != "fail":
        other = b"other\n"
        deliver(services, land(services, partner, other), dest)  # another job's output is there first
    ref = land(services, partner, b"ours\n")
    first = deliver(services, ref, dest)
    again = deliver(services, ref, dest)  # the activity retried after its first attempt had delivered
    assert again["target"] == first["target"] and again["sha256"] == first["sha256"] == sha(b"ours\n")
    assert len(routed(services, ref["job_id"])) == 1
    assert stored(services, first["target"]) == b"ours\n"
    if on_exists == "unique":
        assert stored(services, first["target"].replace(".2.jsonl", ".jsonl")) == other
