"""One file-landed message per recorded batch: the model's bounds, and the intake fanning it out, a bad entry
dead-lettered alone with its own reason while the good ones go on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.domain.hostmessages import BadMessageError, BadMessageReason, parse_message
from shared.domain.jobs import JobStatus
from shared.domain.messages import MAX_BATCH_FILES, FileLanded, FileLandedBatch, is_batch, landed_entries
from shared.services import poison
from tests.unit.test_poison import GOOD, LANDED, World


@pytest.fixture
def world() -> World:
    return World()

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _entry(world: World, job_id: str, **changes: Any) -> dict[str, Any]:
    return {**json.loads(world.landed(job_id)), "traceparent": TRACE, **changes}


def _deliver(world: World, body: dict[str, Any], message_id: str = "m-1") -> list[dict[str, Any]]:
    return poison.accept_file_landed_many(world.services, poison.Delivery(
        queue=LANDED, id=message_id, body=json.dumps(body).encode(), dequeue_count=1))


def test_the_batch_model_is_bounded_and_told_apart_from_a_single_message() -> None:
    batch = FileLandedBatch.of([FileLanded.model_validate(GOOD)] * 3)
    data = batch.to_message()
    one = FileLanded.model_validate(GOOD).to_message()
    assert is_batch(data) and not is_batch(dict(GOOD)) and landed_entries(data) == [one] * 3
    assert landed_entries(dict(GOOD)) == [GOOD]
    for files in ([], [GOOD] * (MAX_BATCH_FILES + 1), ["not an object"]):
        with pytest.raises(BadMessageError) as caught:
            parse_message(FileLandedBatch, {"files": files})
        assert caught.value.reason in (BadMessageReason.INVALID_FIELD, BadMessageReason.WRONG_SHAPE)


def test_a_batch_fans_out_one_reference_per_job_each_with_its_own_trace(world: World) -> None:
    jobs = [world.job() for _ in range(3)]
    traces = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 4)]
    refs = _deliver(world, {"files": [_entry(world, j, traceparent=t) for j, t in zip(jobs, traces, strict=True)],
                            "traceparent": TRACE})
    assert [(r["job_id"], r["traceparent"]) for r in refs] == list(zip(jobs, traces, strict=True))
    assert world.envelopes() == []


def test_a_bad_entry_is_dead_lettered_alone_and_the_good_ones_go_on(world: World) -> None:
    good, unsafe, foreign, missing = world.job(), world.job(), world.job(partner="other"), "job-20261201000000000000-0"
    entries = [_entry(world, good), _entry(world, unsafe, blob_path="../etc/passwd"), _entry(world, foreign),
               _entry(world, missing)]
    refs = _deliver(world, {"files": entries}, message_id="m-7")
    assert [r["job_id"] for r in refs] == [good]
    envelopes = {e["message_id"]: e for e in world.envelopes()}
    assert sorted(envelopes) == ["m-7#1", "m-7#2", "m-7#3"]
    assert [envelopes[f"m-7#{i}"]["reason"] for i in (1, 2, 3)] == ["invalid_field", "job_mismatch", "unknown_job"]
    assert json.loads(envelopes["m-7#1"]["body"]) == entries[1]  # the entry alone: requeued as a FileLanded
    assert "blob_path" in envelopes["m-7#1"]["detail"] and envelopes["m-7#1"]["job_id"] == unsafe
    assert world.jobs.get_job(unsafe).status is JobStatus.FAILED  # nothing else would run it
    assert world.jobs.get_job(good).status is JobStatus.PENDING


def test_a_bad_batch_is_dead_lettered_whole_and_a_single_message_still_works(world: World) -> None:
    assert _deliver(world, {"files": []}) == []
    (envelope,) = world.envelopes()
    assert envelope["reason"] == "invalid_field" and envelope["message_id"] == "m-1"
    job = world.job()
    (ref,) = _deliver(world, json.loads(world.landed(job)), message_id="m-2")
    assert ref["job_id"] == job and len(world.envelopes()) == 1
