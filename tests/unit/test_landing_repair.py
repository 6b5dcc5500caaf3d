"""Landing repairs a job's projection when it takes over a claim a crash left behind (fakes)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.domain.jobs import EventType, JobStatus
from shared.domain.ledger import LedgerEntry, LedgerState
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


def test_finish_gone_marks_done_only_gone_entries_of_its_channel_past_the_lease_up_to_the_limit() -> None:
    from datetime import timedelta

    from shared.domain.jobs import JobType
    from shared.services.landing import Landing

    world = World(post_action="leave")
    for name in ("a", "b", "c", "d"):
        world.server.put(f"/out/{name}.csv", b"id\n1\n", age=3600)
    assert world.poll().landed == 4
    entries = {e.path: e for e in world.ledger.entries(PARTNER)}
    for e in entries.values():
        world.ledger.update(replace(e, state=LedgerState.LANDED))
    landing = Landing(world.services, PARTNER, channel="sftp", job_type=JobType.SFTP_INGEST, owner="t",
                      lease=timedelta(minutes=10), clock=world.clock)
    said: list[str] = []

    def why(e: LedgerEntry) -> str:
        said.append(e.path)
        return "gone"

    gone = {"/out/a.csv", "/out/b.csv", "/out/c.csv"}  # d is still on the source
    # Within the lease nothing is taken: the poll that landed them may still be about to say DONE.
    assert landing.finish_gone(lambda e: e.path in gone, why=why, limit=2, span_name="t") == 0
    world.clock.advance(minutes=11)
    other = Landing(world.services, PARTNER, channel="mail", job_type=JobType.MAIL_INGEST, owner="t",
                    lease=timedelta(minutes=10), clock=world.clock)
    assert other.finish_gone(lambda e: True, why=why, limit=10, span_name="t") == 0  # another channel's entries
    assert landing.finish_gone(lambda e: e.path in gone, why=why, limit=2, span_name="t") == 2  # the limit
    assert landing.finish_gone(lambda e: e.path in gone, why=why, limit=2, span_name="t") == 1  # the rest
    states = {e.path: e.state for e in world.ledger.entries(PARTNER)}
    assert states == {"/out/a.csv": LedgerState.DONE, "/out/b.csv": LedgerState.DONE,
                      "/out/c.csv": LedgerState.DONE, "/out/d.csv": LedgerState.LANDED}
    assert sorted(said) == sorted(gone)  # one log line each
