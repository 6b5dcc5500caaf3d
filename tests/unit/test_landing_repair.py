"""Landing repairs a job's projection when it takes over a claim a crash left behind (fakes)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.domain.jobs import EventType, JobStatus
from shared.domain.ledger import LedgerState
from tests.unit.test_poll_sftp import PARTNER, World


@pytest.mark.parametrize("keep", [0, 1], ids=["projection-missing", "projection-behind"])
def test_a_take_over_makes_the_job_visible_again(keep: int) -> None:
    world = World(post_action="leave")
    world.server.put("/out/a.csv", b"id\n1\n", age=3600)
    assert world.poll().landed == 1
    (entry,) = world.ledger.entries(PARTNER)
    # What a poll killed between the job's events and its projection leaves: the claim still CLAIMED.
    world.jobs.forget_projection(entry.job_id, keep=keep)
    world.ledger.update(replace(entry, state=LedgerState.CLAIMED))
    world.clock.advance(minutes=11)  # the lease ran out
    assert world.poll().landed == 1
    (job,) = world.jobs.list_jobs(partner=PARTNER)
    assert (job.job_id, job.status, job.bytes, job.blob_path, job.event_count) == (
        entry.job_id, JobStatus.PENDING, 5, f"inbound/{entry.blob_path}", 2)
    assert [e.type for e in world.jobs.events(entry.job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
    assert len(world.inbound()) == 1 and world.state("/out/a.csv") is LedgerState.DONE
