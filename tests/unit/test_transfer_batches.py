"""Transfer batches over fakes: a large listing is claimed in batches on the queue, workers land each file once,
in the poll's trace, within the partner's session limit; bad, stuck and redelivered batches are handled."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from shared.adapters.slots import InProcessSlots
from shared.domain.ledger import LedgerState
from shared.domain.transfer_batches import MAX_BATCH_KEYS, TransferBatch, is_batch_owner
from shared.services import transfers
from shared.services.poll_sftp import PollSummary, run_transfer_batch
from shared.settings import Settings
from tests.unit.test_poll_sftp import PARTNER, World

TRANSFERS = "transfer-batches"


class Backlog(World):
    def __init__(self, files: int = 25, **sftp: Any) -> None:
        sftp.setdefault("max_files_per_poll", 1000)
        super().__init__(**sftp)
        self.slots = InProcessSlots()
        self.services.overrides["slots"] = self.slots
        self.services.settings = Settings(POLL_QUEUE="poll-requests", LANDED_QUEUE="file-landed",
                                          TRANSFER_QUEUE=TRANSFERS,
                                          WHARF_EVENTS_QUEUE="events", WHARF_SFTP_SESSION_WAIT_SECONDS=0)
        self.names = [f"/out/f{i:03d}.csv" for i in range(files)]
        for name in self.names:
            self.server.put(name, f"id\n{name}\n".encode())

    def batches(self) -> list[TransferBatch]:
        return [TransferBatch.model_validate(m) for m in self.queues.messages(TRANSFERS)]

    def work(self, **kwargs: Any) -> list[PollSummary]:
        done: list[PollSummary] = []
        transfers.work(self.services, idle_exit=0, options=self.options(concurrency=4, **kwargs),
                       on_summary=done.append)
        return done


def test_a_large_listing_is_claimed_in_batches_on_the_queue_and_nothing_is_transferred_by_the_poll() -> None:
    world = Backlog(25)
    summary = world.poll(batch_files=10)
    assert (summary.status, summary.listed, summary.queued, summary.batches, summary.landed) == ("ok", 25, 25, 3, 0)
    batches = world.batches()
    assert [len(b.keys) for b in batches] == [10, 10, 5] and len({b.batch_id for b in batches}) == 3
    entries = world.ledger.entries(PARTNER)
    assert {e.state for e in entries} == {LedgerState.CLAIMED} and all(is_batch_owner(e.owner) for e in entries)
    assert {e.owner for e in entries} == {b.owner for b in batches}
    assert world.inbound() == [] and world.queued() == []
    again = world.poll(batch_files=10)  # the next minute's poll: the batches are still waiting for a worker
    assert (again.queued, again.skipped_reasons) == (0, {"queued": 25}) and len(world.batches()) == 3


def test_a_listing_that_fits_one_batch_is_transferred_by_the_poll_itself() -> None:
    world = Backlog(5)
    summary = world.poll(batch_files=10)
    assert (summary.landed, summary.queued) == (5, 0) and world.batches() == []


def test_workers_land_every_file_once_in_the_polls_trace() -> None:
    from shared.observability import setup

    otel = setup.for_tests()
    world = Backlog(25)
    world.poll(batch_files=10)
    poll_trace = format(otel.span("sftp.poll").context.trace_id, "032x")
    done = world.work()
    assert [s.status for s in done] == ["ok"] * 3 and sum(s.landed for s in done) == 25
    assert world.queues.messages(TRANSFERS) == []
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.DONE}
    assert len(world.inbound()) == 25 and len(world.jobs.job_ids()) == 25 and world.server.names() == []
    messages = world.landed_messages()
    assert sorted(m.job_id for m in messages) == sorted(world.jobs.job_ids())  # one file-landed entry per job
    # One trace per file: the poll's, carried by the batch message and on into each file's own traceparent.
    assert all(m.traceparent and poll_trace in m.traceparent for m in messages)
    batch_spans = otel.spans_named("sftp.transfer_batch")
    assert len(batch_spans) == 3
    assert {format(s.context.trace_id, "032x") for s in batch_spans} == {poll_trace}
    sent = {dict(s.attributes or {})["wharf.batch_id"] for s in otel.spans_named("sftp.enqueue_batch")}
    assert {dict(s.attributes or {})["wharf.batch_id"] for s in batch_spans} == sent and len(sent) == 3
    assert {format(s.context.trace_id, "032x") for s in otel.spans_named("sftp.file")} == {poll_trace}


def test_a_batch_delivered_twice_lands_its_files_once() -> None:
    world = Backlog(12)
    world.poll(batch_files=6)
    for m in world.queues.messages(TRANSFERS):
        world.queues.send(TRANSFERS, m)
    done = world.work()
    assert sorted(s.landed for s in done) == [0, 0, 6, 6]
    assert [s.skipped_reasons for s in done if not s.landed] == [{"already_ingested": 6}] * 2
    assert len(world.inbound()) == 12 and len(world.jobs.job_ids()) == 12


def test_the_session_limit_holds_for_every_worker_of_the_partner() -> None:
    world = Backlog(40, max_sessions=2)
    world.poll(batch_files=10)
    opened_before = world.sources.opened
    done = world.work()  # concurrency 4, but the partner allows 2 sessions
    assert sum(s.landed for s in done) == 40
    assert world.slots.peak[f"sftp-{PARTNER}"] == 2 and world.slots.held(f"sftp-{PARTNER}") == 0
    assert world.sources.opened > opened_before


def test_a_batch_that_finds_every_session_busy_is_put_back_later_then_released_for_the_next_poll() -> None:
    world = Backlog(6, max_sessions=1)
    world.poll(batch_files=3)
    blocker = world.slots.acquire(f"sftp-{PARTNER}", 1, wait_seconds=0)  # another instance holds the only session
    (first, second) = world.batches()
    summary = transfers.handle(world.services, first, options=world.options())
    assert summary.status == "failed" and "sessions" in summary.error
    assert world.breakers.get("sftp", PARTNER).failures == 0  # busy is not the partner's server failing
    again = [b for b in world.batches() if b.batch_id == first.batch_id and b.deferrals == 1]
    assert len(again) == 1  # put back with a delay (invisible for now)
    visible = [TransferBatch.model_validate(m) for m in world.queues.peek(TRANSFERS)]
    assert sorted((b.batch_id, b.deferrals) for b in visible) == sorted([(first.batch_id, 0), (second.batch_id, 0)])
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.CLAIMED}  # nothing adopted meanwhile
    last = first.model_copy(update={"deferrals": transfers.MAX_DEFERRALS})
    transfers.handle(world.services, last, options=world.options())
    released = {e.key: e for e in world.ledger.entries(PARTNER) if e.key in first.keys}
    assert {e.state for e in released.values()} == {LedgerState.FAILED}
    assert all("deferrals" in e.error for e in released.values())
    blocker.release()
    later = world.poll()  # a later poll takes the released files over and lands them
    assert later.landed == 3 and {world.state(p) for p in world.names[:3]} == {LedgerState.DONE}


def test_claims_of_a_batch_no_worker_took_are_taken_over_after_the_batch_lease() -> None:
    world = Backlog(4)
    world.poll(batch_files=2)
    world.queues.receive_raw(TRANSFERS, 32)  # the messages are lost (say, dead-lettered by an operator)
    world.clock.advance(minutes=30)
    assert world.poll(batch_files=2).skipped_reasons == {"queued": 4}  # within WHARF_TRANSFER_BATCH_LEASE_MINUTES
    world.clock.advance(minutes=31)
    summary = world.poll()
    assert summary.landed == 4 and len(world.jobs.job_ids()) == 4


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "undecodable"),
    (json.dumps([PARTNER, "tb-1"]).encode(), "wrong_shape"),
    (json.dumps({"partner": PARTNER, "batch_id": "tb-1", "keys": [], "listed_at": 1}).encode(), "invalid_field"),
    (json.dumps({"partner": PARTNER, "batch_id": "tb-1", "keys": ["../etc"], "listed_at": 1}).encode(),
     "invalid_field"),
    (json.dumps({"partner": "gone", "batch_id": "tb-1", "keys": ["a" * 64], "listed_at": 1}).encode(),
     "unknown_partner"),
])
def test_a_bad_batch_message_is_dead_lettered_with_its_reason(body: bytes, reason: str) -> None:
    world = Backlog(0)
    world.queues.send_raw(TRANSFERS, body)
    assert world.work() == []
    assert world.queues.messages(TRANSFERS) == []
    (envelope,) = world.queues.messages(f"{TRANSFERS}-poison")
    assert envelope["reason"] == reason and envelope["queue"] == TRANSFERS


def test_a_batch_message_holds_at_most_max_batch_keys_and_stays_small() -> None:
    batch = TransferBatch(partner=PARTNER, batch_id="tb-x", keys=["f" * 64] * MAX_BATCH_KEYS, listed_at=1.0)
    assert len(json.dumps(batch.to_message())) < 40 * 1024
    with pytest.raises(ValueError):
        TransferBatch(partner=PARTNER, batch_id="tb-x", keys=["f" * 64] * (MAX_BATCH_KEYS + 1), listed_at=1.0)


def test_the_queue_worker_splits_and_the_cli_and_api_wait_do_not() -> None:
    from shared.domain.messages import PollRequest
    from shared.services.scheduling import run_poll_request

    world = Backlog(8)
    world.services.settings = Settings(POLL_QUEUE="poll-requests", LANDED_QUEUE="file-landed", TRANSFER_QUEUE=TRANSFERS,
                                       WHARF_EVENTS_QUEUE="events", WHARF_TRANSFER_BATCH_FILES=3)
    summary = run_poll_request(world.services, PollRequest(partner=PARTNER), scale_out=True)
    assert (summary.queued, summary.batches) == (8, 3)


def test_run_transfer_batch_refuses_a_partner_without_sftp() -> None:
    from shared.domain.errors import NotFoundError

    world = Backlog(0)
    with pytest.raises(NotFoundError):
        run_transfer_batch(world.services, TransferBatch(partner="nobody", batch_id="tb-1", keys=["a" * 64],
                                                         listed_at=0))
    assert timedelta(minutes=world.services.settings.transfer_batch_lease_minutes) == timedelta(hours=1)


def test_the_cli_refuses_a_worker_with_a_partner_and_a_poll_without_one() -> None:
    from shared.cli import build_parser
    from shared.cli.poll import cmd_poll, format_summary

    parser = build_parser()
    with pytest.raises(SystemExit, match="takes no PARTNER"):
        cmd_poll(parser.parse_args(["poll", "acme", "--worker"]))
    with pytest.raises(SystemExit, match="PARTNER is required"):
        cmd_poll(parser.parse_args(["poll"]))
    args = parser.parse_args(["poll", "--worker", "--idle-exit", "2", "--max-batches", "3"])
    assert (args.worker, args.idle_exit, args.max_batches, args.partner) == (True, 2.0, 3, None)
    line = format_summary({"partner": "acme", "status": "ok", "listed": 500, "queued": 500, "batches": 3})
    assert "500 queued in 3 transfer batches" in line


def test_the_queue_worker_and_a_batch_without_options_take_the_claim_lease_from_the_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """WHARF_POLL_LEASE_SECONDS holds on every poll path. The queue worker's splitting poll and a transfer batch
    handed no options used PollOptions' own 10-minute lease, so a claim of a crashed poll waited 10 minutes
    whatever the setting said."""
    from shared.domain.messages import PollRequest
    from shared.services import poll_sftp
    from shared.services.scheduling import run_poll_request

    world = Backlog(4)
    world.services.settings = Settings(POLL_QUEUE="poll-requests", LANDED_QUEUE="file-landed", TRANSFER_QUEUE=TRANSFERS,
                                       WHARF_EVENTS_QUEUE="events", WHARF_TRANSFER_BATCH_FILES=2,
                                       WHARF_POLL_LEASE_SECONDS=45)
    seen: list[Any] = []
    real = poll_sftp.guarded_poll

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["opts"])
        return real(*args, **kwargs)

    monkeypatch.setattr(poll_sftp, "guarded_poll", spy)
    assert run_poll_request(world.services, PollRequest(partner=PARTNER), scale_out=True).batches == 2
    batch = world.batches()[0]
    run_transfer_batch(world.services, batch)
    assert [o.lease for o in seen] == [timedelta(seconds=45)] * 2
    assert (seen[0].batch_files, seen[1].settle_seconds) == (2, batch.settle_seconds)
