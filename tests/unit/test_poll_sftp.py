"""SFTP polling with fakes: exactly once, stability, crash recovery, post-actions, bad input, resilience."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bootstrap import Services, build_services
from shared.catalog import Catalog, parse_catalog
from shared.domain.jobs import EventType, JobStatus, JobType
from shared.domain.ledger import BreakerState, LedgerState
from shared.domain.messages import FileLanded, is_batch, landed_entries
from shared.domain.sanitize import decode_original, remote_text
from shared.services.landing import Arrival, Landing
from shared.services.poll_sftp import PollOptions, PollProgress, PollSummary, poll_partner
from shared.settings import Settings
from tests.fakes import (
    Clock,
    Crash,
    FakeBlobStore,
    FakeBreakers,
    FakeFileSources,
    FakeJobStore,
    FakeLedger,
    FakeMessageQueue,
    FakePublisher,
    FakeSftpServer,
    remote_error,
    unavailable,
)

FINGERPRINT = "SHA256:" + "A" * 43
PARTNER = "acme"


def make_catalog(**sftp: Any) -> Catalog:
    block = {"host": "fake-sftp.example", "username": "wharf", "auth": {"private_key_secret": "acme-key"},
             "host_keys": [FINGERPRINT], "remote_dirs": ["/out"], "min_age_seconds": 30, "post_action": "delete"}
    block.update(sftp)
    return parse_catalog({"partners": [{"id": PARTNER, "name": "Acme", "sftp": block}]}, env={})


class World:
    def __init__(self, **sftp: Any) -> None:
        self.server = FakeSftpServer()
        self.clock = Clock()
        self.blobs, self.jobs, self.ledger = FakeBlobStore(), FakeJobStore(), FakeLedger()
        self.queues, self.breakers = FakeMessageQueue(), FakeBreakers()
        self.sources = FakeFileSources(self.server)
        settings = Settings(POLL_QUEUE="poll-requests", LANDED_QUEUE="file-landed", WHARF_EVENTS_QUEUE="events",
                            TRANSFER_QUEUE="transfer-batches")
        self.services: Services = build_services(
            settings, blobs=self.blobs, jobs=self.jobs, queues=self.queues, ledger=self.ledger,
            breakers=self.breakers, file_sources=self.sources, catalog=make_catalog(**sftp),
            publisher=FakePublisher())
        self.queues.ensure_queues(self.services.queue_names())
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], object] | None = None

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(seconds)

    def options(self, **kwargs: Any) -> PollOptions:
        base: dict[str, Any] = {"settle_seconds": 1.0, "retry_initial": 0.001, "retry_max": 0.002,
                                "clock": self.clock, "sleep": self.sleep, "concurrency": 1}
        base.update(kwargs)
        return PollOptions(**base)

    def poll(self, **kwargs: Any) -> PollSummary:
        progress = kwargs.pop("progress", None)
        return poll_partner(self.services, PARTNER, options=self.options(**kwargs), progress=progress,
                            requested_by="test")

    def inbound(self) -> list[str]:
        return [b.path for b in self.blobs.list_blobs("inbound", f"{PARTNER}/")]

    def landed_messages(self) -> list[FileLanded]:
        """One per landed file, whether it came alone or in a FileLandedBatch."""
        return [FileLanded.model_validate(e) for m in self.queues.messages("file-landed") for e in landed_entries(m)]

    def queued(self) -> list[dict[str, Any]]:
        return list(self.queues.messages("file-landed"))

    def state(self, path: str) -> LedgerState:
        (entry,) = [e for e in self.ledger.entries(PARTNER) if e.path == path]
        return entry.state


@pytest.fixture
def world() -> World:
    return World()


# --- the happy path and exactly-once -------------------------------------------------------------


def test_a_stable_file_lands_whole_with_all_its_bookkeeping(world: World) -> None:
    world.server.put("/out/invoice.csv", b"id,amount\n1,9.99\n")
    summary = world.poll()
    assert (summary.status, summary.listed, summary.landed, summary.bytes) == ("ok", 1, 1, 17)
    (path,) = world.inbound()
    assert path.startswith(f"{PARTNER}/{world.clock.now:%Y/%m/%d}/tr-") and path.endswith("/invoice.csv")
    assert world.blobs.read("inbound", path) == b"id,amount\n1,9.99\n"
    info = world.blobs.get_info("inbound", path)
    (message,) = world.landed_messages()
    assert info.metadata["original_name"] == "invoice.csv" and info.metadata["partner"] == PARTNER
    assert info.metadata["job_id"] == message.job_id and info.metadata["sha256"] == message.sha256
    assert message.source == "sftp://fake-sftp.example:22/out/invoice.csv"
    assert (message.container, message.blob_path, message.bytes) == ("inbound", path, 17)
    job = world.jobs.get_job(message.job_id)
    assert (job.partner, job.job_type.value, job.blob_path, job.sha256) == (
        PARTNER, "SFTP_INGEST", f"inbound/{path}", message.sha256)
    assert [e.type for e in world.jobs.events(message.job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
    (transfer,) = world.jobs.transfers(message.job_id)
    assert (transfer.sha256, transfer.bytes, transfer.status) == (message.sha256, 17, "LANDED")
    assert world.jobs.logs(message.job_id) == []  # a plain landing: its events say it all, no log row
    assert world.server.names() == []  # post_action: delete
    assert world.state("/out/invoice.csv") is LedgerState.DONE


def test_a_second_poll_ingests_nothing() -> None:
    world = World(post_action="leave")
    world.server.put("/out/a.csv", b"a")
    world.server.put("/out/b.csv", b"b")
    assert world.poll().landed == 2
    again = world.poll()
    assert (again.landed, again.skipped, again.skipped_reasons) == (0, 2, {"already_ingested": 2})
    assert len(world.inbound()) == 2 and len(world.jobs.job_ids()) == 2 and len(world.landed_messages()) == 2
    assert world.server.names() == ["/out/a.csv", "/out/b.csv"]


def test_a_back_dated_file_is_still_ingested(world: World) -> None:
    world.server.put("/out/new.csv", b"new")
    assert world.poll().landed == 1
    world.server.put("/out/old.csv", b"old", mtime=int(datetime(2001, 1, 1, tzinfo=UTC).timestamp()))
    assert world.poll().landed == 1
    assert len(world.inbound()) == 2


def test_a_changed_file_with_the_same_name_is_a_new_version() -> None:
    world = World(post_action="leave")
    world.server.put("/out/a.csv", b"v1", age=600)
    world.poll()
    world.server.put("/out/a.csv", b"version 2", age=300)
    assert world.poll().landed == 1
    assert sorted(world.blobs.read("inbound", p) for p in world.inbound()) == [b"v1", b"version 2"]


# --- stability -----------------------------------------------------------------------------------


def test_a_file_younger_than_min_age_waits(world: World) -> None:
    world.server.put("/out/fresh.csv", b"x", age=5)
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (0, {"too_new": 1})
    world.clock.advance(seconds=60)
    assert world.poll().landed == 1


def test_a_file_growing_between_the_two_looks_waits_until_stable(world: World) -> None:
    world.server.put("/out/big.csv", b"part 1", age=3600)  # an old mtime: the age check alone would pass it
    world.on_sleep = lambda _: world.server.files["/out/big.csv"].data.extend(b" part 2")
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (0, {"changing": 1})
    assert world.sleeps == [pytest.approx(1.0, abs=0.2)]
    world.on_sleep = None
    world.clock.advance(minutes=1)
    assert world.poll().landed == 1
    assert world.blobs.read("inbound", world.inbound()[0]) == b"part 1 part 2"


def test_a_file_that_changes_while_read_is_not_committed(world: World) -> None:
    world.server.put("/out/a.csv", b"x" * 200_000)
    world.server.chunk_size = 50_000
    world.server.on_read = lambda path, done: world.server.append(path, b"more") if done == 50_000 else None
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (0, {"changing": 1})
    assert world.inbound() == [] and world.state("/out/a.csv") is LedgerState.GONE
    world.server.on_read = None
    world.clock.advance(minutes=5)
    assert world.poll().landed == 1
    assert len(world.inbound()) == 1 and world.blobs.read("inbound", world.inbound()[0]).endswith(b"more")


# --- crash recovery ------------------------------------------------------------------------------


def _crash_on_read(world: World, at: int = 1) -> None:
    def crash(path: str, done: int) -> None:
        if done >= at:
            raise Crash

    world.server.on_read = crash


def test_crash_mid_transfer_leaves_no_blob_and_a_later_poll_takes_over_after_the_lease(world: World) -> None:
    world.server.put("/out/a.csv", b"x" * 300_000)
    world.server.chunk_size = 100_000
    _crash_on_read(world, 100_000)
    with pytest.raises(Crash):
        world.poll()
    assert world.inbound() == [] and world.state("/out/a.csv") is LedgerState.CLAIMED
    # A fresh claim's job is written with its bookkeeping, after the upload: a crash before leaves none.
    assert world.jobs.job_ids() == []
    (claimed,) = world.ledger.entries(PARTNER)
    job_id = claimed.job_id
    world.server.on_read = None
    world.clock.advance(minutes=5)
    early = world.poll()  # the lease (10 min) still holds: someone might be working on it
    assert (early.landed, early.skipped_reasons) == (0, {"claimed_elsewhere": 1})
    world.clock.advance(minutes=6)
    assert world.poll().landed == 1
    assert world.jobs.job_ids() == [job_id]  # the same job, reused from the ledger
    (entry,) = world.ledger.entries(PARTNER)
    assert (entry.state, entry.attempts) == (LedgerState.DONE, 2)
    assert [e.type for e in world.jobs.events(job_id)].count(EventType.FILE_LANDED) == 1
    assert len(world.landed_messages()) == 1 and world.server.names() == []


def test_crash_after_commit_reuses_the_blob_and_records_once(world: World) -> None:
    world.server.put("/out/a.csv", b"payload")
    original_send = world.queues.send
    calls = {"n": 0}

    def crash_on_first_send(queue: str, message: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash
        original_send(queue, message, **kwargs)

    world.queues.send = crash_on_first_send  # type: ignore[method-assign]
    with pytest.raises(Crash):
        world.poll()
    assert len(world.inbound()) == 1 and world.landed_messages() == []
    world.clock.advance(minutes=11)
    assert world.poll().landed == 1
    assert world.server.reads == {"/out/a.csv": 1}  # not downloaded again: the committed blob is reused
    (job_id,) = world.jobs.job_ids()
    assert [e.type for e in world.jobs.events(job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
    assert len(world.landed_messages()) == 1 and len(world.inbound()) == 1
    assert world.state("/out/a.csv") is LedgerState.DONE


def test_crash_after_landing_only_does_the_post_action(world: World) -> None:
    world.server.put("/out/a.csv", b"payload")
    world.server.fail("remove", lambda path: Crash())
    with pytest.raises(Crash):
        world.poll()
    assert world.state("/out/a.csv") is LedgerState.LANDED and world.server.names() == ["/out/a.csv"]
    summary = world.poll()  # no lease wait: LANDED means only the post-action is left
    assert (summary.landed, summary.skipped_reasons) == (0, {"already_ingested": 1})
    assert world.server.names() == [] and world.state("/out/a.csv") is LedgerState.DONE
    assert world.server.reads == {"/out/a.csv": 1} and len(world.jobs.job_ids()) == 1
    assert len(world.landed_messages()) == 1


def _crash_after_post_action(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """The process dies right after the post-action of `path` (the `sftp.after_post_action` fault point)."""
    import shared.services.poll_sftp as poll_sftp

    def fault(point: str) -> None:
        if point == "sftp.after_post_action" and path not in world_removed:
            world_removed.add(path)
            raise Crash

    world_removed: set[str] = set()
    monkeypatch.setattr(poll_sftp, "fault_point", fault)


def test_crash_after_the_post_action_is_finished_by_a_later_poll_once_the_lease_is_over(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.server.put("/out/a.csv", b"payload")
    world.server.put("/out/b.csv", b"other", age=3000)  # younger: landed after a.csv
    _crash_after_post_action(monkeypatch, "/out/a.csv")
    with pytest.raises(Crash):
        world.poll()
    assert world.state("/out/a.csv") is LedgerState.LANDED and world.server.names() == ["/out/b.csv"]
    (a,) = [e for e in world.ledger.entries(PARTNER) if e.path == "/out/a.csv"]
    world.clock.advance(minutes=5)
    world.poll()  # within the lease: the poll that deleted it might still be about to say DONE
    assert world.state("/out/a.csv") is LedgerState.LANDED and world.state("/out/b.csv") is LedgerState.DONE
    world.clock.advance(minutes=6)
    summary = world.poll()
    assert summary.status == "ok" and summary.landed == 0
    assert world.state("/out/a.csv") is LedgerState.DONE  # no longer on the source: its post-action is done
    assert world.server.reads == {"/out/a.csv": 1, "/out/b.csv": 1} and len(world.jobs.job_ids()) == 2
    assert world.ledger.get(PARTNER, a.key).job_id == a.job_id and len(world.landed_messages()) == 2


def test_a_landed_entry_is_finished_only_when_its_directory_was_listed_and_its_file_is_not_there() -> None:
    world = World(remote_dirs=["/out", "/in"], include=["*.csv"])
    for path in ("/out/gone.csv", "/out/kept.csv", "/out/sub/deep.csv", "/in/ignored.txt", "/old/moved.csv"):
        world.server.put(path, b"x")
    landing = Landing(world.services, PARTNER, channel="sftp", job_type=JobType.SFTP_INGEST, owner="crashed",
                      clock=world.clock)
    for path in ("/out/gone.csv", "/out/kept.csv", "/out/sub/deep.csv", "/in/ignored.txt", "/old/moved.csv"):
        world.ledger.create(landing.new_entry(Arrival(channel="sftp", path=path, name=path.rsplit("/", 1)[1],
                                                      size=1, mtime=1, source=f"sftp://x{path}"),
                                              state=LedgerState.LANDED))
    for path in ("/out/gone.csv", "/out/sub/deep.csv", "/old/moved.csv", "/in/ignored.txt"):
        del world.server.files[path]
    world.server.put("/in/ignored.txt", b"changed")  # still there (a new version): its entry is not finished
    world.server.fail("remove", remote_error(errno.EACCES))  # kept.csv: its post-action keeps failing
    world.clock.advance(minutes=11)
    assert world.poll().status == "partial"  # kept.csv's post-action failed
    states = {e.path: e.state for e in world.ledger.entries(PARTNER)}
    assert states["/out/gone.csv"] is LedgerState.DONE
    assert states["/out/kept.csv"] is LedgerState.LANDED  # listed: only its post-action finishes it
    assert states["/out/sub/deep.csv"] is LedgerState.LANDED  # not recursive: /out/sub was not listed
    assert states["/old/moved.csv"] is LedgerState.LANDED  # not a remote_dirs entry any more
    assert states["/in/ignored.txt"] is LedgerState.LANDED  # still on the source (not included, but listed)


def test_a_failed_listing_finishes_no_landed_entry(world: World) -> None:
    world.server.put("/out/a.csv", b"payload")
    world.server.fail("remove", remote_error(errno.EACCES))
    world.poll()
    del world.server.files["/out/a.csv"]
    world.server.fail("list", remote_error(errno.ENOENT))
    world.clock.advance(minutes=11)
    assert world.poll().status == "failed"
    assert world.state("/out/a.csv") is LedgerState.LANDED
    assert world.poll().status == "ok" and world.state("/out/a.csv") is LedgerState.DONE


def test_landed_entries_of_vanished_files_are_finished_at_most_a_hundred_per_poll() -> None:
    world = World(post_action="leave")
    landing = Landing(world.services, PARTNER, channel="sftp", job_type=JobType.SFTP_INGEST, owner="crashed",
                      clock=world.clock)
    world.server.mkdir("/out")
    for i in range(130):
        path = f"/out/f{i:03}.csv"
        world.ledger.create(landing.new_entry(Arrival(channel="sftp", path=path, name=path[5:], size=1, mtime=1,
                                                      source=f"sftp://x{path}"), state=LedgerState.LANDED))
    world.clock.advance(minutes=11)
    world.poll()
    assert len(world.ledger.entries(PARTNER, state="LANDED")) == 30
    world.poll()
    assert world.ledger.entries(PARTNER, state="LANDED") == []


def test_a_failed_post_action_is_retried_by_the_next_poll(world: World) -> None:
    world.server.put("/out/a.csv", b"payload")
    world.server.fail("remove", remote_error(errno.EACCES))
    assert world.poll().landed == 1
    assert world.state("/out/a.csv") is LedgerState.LANDED
    world.poll()
    assert world.server.names() == [] and world.state("/out/a.csv") is LedgerState.DONE


def test_a_transient_drop_mid_transfer_is_retried_on_a_new_session(world: World) -> None:
    world.server.put("/out/a.csv", b"y" * 300_000)
    world.server.chunk_size = 100_000
    world.server.fail("read", unavailable, after_bytes=100_000)
    summary = world.poll()
    assert (summary.status, summary.landed) == ("ok", 1)
    assert world.server.reads == {"/out/a.csv": 2} and len(world.inbound()) == 1
    assert world.sources.opened == 2
    (job_id,) = world.jobs.job_ids()
    assert len(world.jobs.transfers(job_id)) == 1


def test_a_transfer_that_keeps_failing_is_released_and_retried_by_a_later_poll(world: World) -> None:
    world.server.put("/out/a.csv", b"y" * 300_000)
    world.server.chunk_size = 100_000
    world.server.fail("read", unavailable, after_bytes=100_000, times=3)
    first = world.poll()
    assert (first.status, first.failed_reasons) == ("partial", {"source_unavailable": 1})
    assert world.inbound() == [] and world.state("/out/a.csv") is LedgerState.FAILED
    (job_id,) = world.jobs.job_ids()
    notes = [e for e in world.jobs.events(job_id) if e.type is EventType.NOTE]
    assert len(notes) == 3 and "transfer attempt 1 failed" in notes[0].data["message"]
    assert world.poll().landed == 1
    assert world.jobs.job_ids() == [job_id] and len(world.inbound()) == 1


def test_two_pollers_racing_land_each_file_once() -> None:
    world = World(post_action="leave")
    for i in range(40):
        world.server.put(f"/out/f{i:02d}.csv", f"file {i}".encode())
    barrier = threading.Barrier(2)
    lookup = world.ledger.get_many

    def both_listed(partner: str, keys: Any) -> Any:
        barrier.wait(timeout=10)  # both have listed and read the ledger before either claims
        return lookup(partner, keys)

    world.ledger.get_many = both_listed  # type: ignore[method-assign]
    summaries: list[PollSummary] = []

    def run() -> None:
        summaries.append(world.poll(concurrency=3))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(s.landed for s in summaries) == 40
    assert len(world.inbound()) == 40 and len(world.jobs.job_ids()) == 40 and len(world.landed_messages()) == 40
    # The loser finds each file claimed by the winner, or already done.
    assert sum(s.skipped for s in summaries) == 40
    assert {r for s in summaries for r in s.skipped_reasons} <= {"claimed_elsewhere", "already_ingested"}


# --- post-actions --------------------------------------------------------------------------------


def test_move_puts_the_file_in_move_to() -> None:
    world = World(post_action="move", move_to="/archive")
    world.server.put("/out/a.csv", b"a")
    world.poll()
    assert world.server.names() == ["/archive/a.csv"]


def test_rename_adds_the_suffix_and_the_renamed_file_is_not_taken_again() -> None:
    world = World(post_action="rename", suffix=".taken")
    world.server.put("/out/a.csv", b"a")
    world.poll()
    assert world.server.names() == ["/out/a.csv.taken"]
    again = world.poll()
    assert (again.listed, again.landed) == (0, 0)


def test_leave_keeps_the_file_and_marks_it_done() -> None:
    world = World(post_action="leave")
    world.server.put("/out/a.csv", b"a")
    world.poll()
    assert world.server.names() == ["/out/a.csv"] and world.state("/out/a.csv") is LedgerState.DONE


# --- bad input -----------------------------------------------------------------------------------


def test_bad_names_are_sanitised_and_the_original_kept() -> None:
    world = World(include=["*"])
    names = ["..", "a\x07b\nc.csv", "x" * 300 + ".csv", remote_text(b"caf\xe9.csv"), "r\u00e9sum\u00e9 (1).csv"]
    for name in names:
        world.server.put(f"/out/{name}", name.encode("utf-8", "surrogateescape"))
    summary = world.poll()
    assert summary.landed == len(names)
    originals = set()
    for path in world.inbound():
        segment = path.rsplit("/", 1)[1]
        assert len(segment.encode()) <= 255 and segment not in (".", "..")
        assert all(ch.isprintable() for ch in segment)
        info = world.blobs.get_info("inbound", path)
        originals.add(decode_original(info.metadata["original_name"]))
        assert all(v.isascii() for v in info.metadata.values())
    assert originals == set(names)


def test_a_zero_byte_file_lands_with_a_log_line(world: World) -> None:
    world.server.put("/out/empty.csv", b"")
    summary = world.poll()
    assert (summary.landed, summary.bytes) == (1, 0)
    (message,) = world.landed_messages()
    assert message.bytes == 0 and world.blobs.read("inbound", message.blob_path) == b""
    assert any("zero-byte" in line.message for line in world.jobs.logs(message.job_id))


def test_a_renamed_file_keeps_its_log_line_and_a_plain_one_gets_none(world: World) -> None:
    world.server.put("/out/a\tb.csv", b"tab")  # a control character: landed under a safe name
    world.server.put("/out/plain.csv", b"plain")
    world.poll()
    landed = {m.file_name: m for m in world.landed_messages()}
    assert set(landed) == {"a_b.csv", "plain.csv"}
    (line,) = world.jobs.logs(landed["a_b.csv"].job_id)
    assert (line.level, line.message.startswith("landed a\\tb.csv as a_b.csv from ")) == ("INFO", True), line
    assert world.jobs.logs(landed["plain.csv"].job_id) == []


def test_an_over_size_file_is_skipped_once_with_a_log_line_and_an_event() -> None:
    world = World(max_file_size_bytes=100)
    world.server.put("/out/huge.csv", b"x" * 101)
    world.server.put("/out/ok.csv", b"x" * 100)
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (1, {"over_size": 1})
    assert world.server.reads == {"/out/ok.csv": 1}  # never downloaded
    (entry,) = [e for e in world.ledger.entries(PARTNER) if e.state is LedgerState.SKIPPED]
    job = world.jobs.get_job(entry.job_id)
    assert job.status is JobStatus.FAILED and "over-size" in job.error
    assert any("not downloaded" in line.message for line in world.jobs.logs(entry.job_id))
    again = world.poll()
    assert again.skipped_reasons == {"already_skipped": 1} and len(world.jobs.job_ids()) == 2
    assert world.server.names() == ["/out/huge.csv"]  # not ours to delete


def test_a_file_vanishing_between_list_and_get_does_not_stop_the_others(world: World) -> None:
    world.server.put("/out/a.csv", b"a")
    world.server.put("/out/gone.csv", b"g")
    world.server.put("/out/z.csv", b"z")
    world.server.fail("open", remote_error(errno.ENOENT), path="/out/gone.csv")
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons, summary.failed) == (2, {"vanished": 1}, 0)
    assert world.state("/out/gone.csv") is LedgerState.GONE
    assert len(world.jobs.job_ids()) == 2  # no job for a file that was never read


def test_a_file_gone_before_the_second_look_is_skipped(world: World) -> None:
    world.server.put("/out/a.csv", b"a")
    world.on_sleep = lambda _: world.server.files.pop("/out/a.csv")
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (0, {"vanished": 1})


def test_permission_denied_is_recorded_the_rest_lands_and_it_is_given_up_after_max_attempts(world: World) -> None:
    world.server.put("/out/a.csv", b"a")
    world.server.put("/out/secret.csv", b"s")
    world.server.denied.add("/out/secret.csv")
    summary = world.poll(max_attempts=2)
    assert (summary.status, summary.landed, summary.failed_reasons) == ("partial", 1, {"permission_denied": 1})
    assert "Permission denied" in summary.failed_files[0].reason
    assert world.state("/out/secret.csv") is LedgerState.FAILED
    second = world.poll(max_attempts=2)
    assert second.failed_reasons == {"permission_denied": 1}
    third = world.poll(max_attempts=2)
    assert (third.failed, third.skipped_reasons) == (0, {"gave_up": 1})
    world.server.denied.clear()
    assert world.poll(max_attempts=3).landed == 1  # an operator raising the limit lets it through


def test_include_exclude_and_max_files_per_poll() -> None:
    world = World(include=["*.csv"], exclude=["tmp*"], max_files_per_poll=2)
    for name in ("a.csv", "b.csv", "c.csv", "tmp1.csv", "notes.txt"):
        world.server.put(f"/out/{name}", b"x")
    summary = world.poll()
    assert (summary.listed, summary.ignored, summary.landed, summary.skipped_reasons) == (3, 2, 2, {"deferred": 1})
    assert world.poll().landed == 1


def test_recursive_listing_skips_the_move_to_folder() -> None:
    world = World(recursive=True, post_action="move", move_to="/archive")
    world.server.put("/out/sub/deep.csv", b"d")
    world.server.put("/out/top.csv", b"t")
    assert world.poll().landed == 2
    assert sorted(world.server.names()) == ["/archive/deep.csv", "/archive/top.csv"]


# --- resilience ----------------------------------------------------------------------------------


def test_host_key_mismatch_fails_the_poll_plainly_and_is_not_retried(world: World) -> None:
    world.server.put("/out/a.csv", b"a")
    world.server.host_key_ok = False
    summary = world.poll()
    assert summary.status == "failed" and "host key mismatch" in summary.error and "host_keys" in summary.error
    assert world.sources.opened == 1 and world.inbound() == [] and world.server.reads == {}


def test_a_missing_remote_dir_fails_the_poll_naming_the_setting() -> None:
    world = World(remote_dirs=["/out", "/nope"])
    world.server.put("/out/a.csv", b"a")
    summary = world.poll()
    assert summary.status == "failed" and "/nope" in summary.error and "remote_dirs" in summary.error
    assert world.breakers.get("sftp", PARTNER).failures == 1


def test_login_failure_is_not_retried(world: World) -> None:
    world.server.auth_ok = False
    summary = world.poll()
    assert summary.status == "failed" and "login refused" in summary.error and world.sources.opened == 1


def test_unreachable_server_is_retried_with_backoff_then_counted_by_the_breaker(world: World) -> None:
    world.server.down = True
    summary = world.poll(retry_attempts=3)
    assert summary.status == "failed" and world.sources.opened == 3 and len(world.sleeps) == 2
    assert world.breakers.get("sftp", PARTNER).failures == 1


def test_breaker_opens_after_n_failed_polls_and_recovers_after_the_cooldown(world: World) -> None:
    world.server.put("/out/a.csv", b"a")
    world.server.down = True
    opts: dict[str, Any] = {"retry_attempts": 1, "breaker_threshold": 3, "breaker_cooldown": timedelta(minutes=2)}
    assert [world.poll(**opts).status for _ in range(3)] == ["failed"] * 3
    assert world.breakers.get("sftp", PARTNER).state is BreakerState.OPEN
    opened = world.sources.opened
    blocked = world.poll(**opts)
    assert blocked.status == "circuit_open" and blocked.retry_at is not None and world.sources.opened == opened
    world.server.down = False
    world.clock.advance(minutes=2, seconds=1)
    probe = world.poll(**opts)
    assert (probe.status, probe.landed) == ("ok", 1)
    record = world.breakers.get("sftp", PARTNER)
    assert (record.state, record.failures) == (BreakerState.CLOSED, 0)


def test_a_failed_half_open_probe_opens_the_circuit_again(world: World) -> None:
    world.server.down = True
    opts: dict[str, Any] = {"retry_attempts": 1, "breaker_threshold": 1, "breaker_cooldown": timedelta(minutes=1)}
    world.poll(**opts)
    world.clock.advance(minutes=2)
    assert world.poll(**opts).status == "failed"  # the probe
    assert world.poll(**opts).status == "circuit_open"


def test_progress_reports_files_and_bytes(world: World) -> None:
    for i in range(3):
        world.server.put(f"/out/{i}.csv", b"z" * 1000)
    seen: list[PollProgress] = []
    world.poll(progress=seen.append, concurrency=2)
    phases = [p.phase for p in seen]
    assert phases[0] == "connecting" and phases[-1] == "done" and "transferring" in phases
    assert (seen[-1].landed, seen[-1].bytes, seen[-1].to_transfer) == (3, 3000, 3)


def test_a_disabled_partner_is_not_polled() -> None:
    world = World()
    catalog = world.services.catalog
    partner = catalog.partners[0].model_copy(update={"enabled": False})
    world.services.overrides["catalog"] = catalog.model_copy(update={"partners": [partner]})
    assert world.poll().status == "disabled" and world.sources.opened == 0


# --- the landing API, as the mailbox work will use it ---------------------------------------------


def test_landing_is_channel_neutral_and_idempotent(world: World) -> None:
    landing = Landing(world.services, PARTNER, channel="mail", job_type=JobType.MAIL_INGEST, owner="test")
    arrival = Arrival(channel="mail", path="mbx/msg-1/att-1", name="order.csv", size=3, mtime=1700000000,
                      source="mail:orders@example.com/msg-1")
    claims, lost = landing.claim_new([arrival])
    assert lost == {} and len(claims) == 1
    landed = landing.land(claims[0], lambda: iter([b"abc"]))
    assert landed.message.file_name == "order.csv" and landed.blob.size == 3
    again, lost = landing.claim_new([arrival])
    assert again == [] and lost == {arrival.key: "post_action_pending"}
    assert landing.finish(landed.claim) is not None
    assert world.jobs.get_job(landed.claim.job_id).job_type.value == "MAIL_INGEST"


# --- telemetry -----------------------------------------------------------------------------------


def test_one_trace_covers_the_poll_with_ids_on_every_file_span_and_no_secret(world: World) -> None:
    from shared.observability import redaction, setup

    otel = setup.for_tests()
    secret = redaction.register_secret("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n")
    world.server.put("/out/a.csv", b"")  # zero bytes: its landing keeps a log row, whose trace id is checked below
    world.server.put("/out/b.csv", b"defg")
    world.server.denied.add("/out/b.csv")
    world.poll(concurrency=2)
    poll_span = otel.span("sftp.poll")
    assert poll_span.attributes is not None and poll_span.attributes["wharf.partner"] == PARTNER
    assert otel.trace_ids() == {format(poll_span.context.trace_id, "032x")}  # the workers' spans too
    files = otel.spans_named("sftp.file")
    assert len(files) == 2
    for s in files:
        attrs = dict(s.attributes or {})
        assert {"server.address", "server.port", "file.size", "wharf.partner", "wharf.job_id",
                "wharf.transfer_id"} <= set(attrs)
    (message,) = world.landed_messages()
    assert message.traceparent and format(poll_span.context.trace_id, "032x") in message.traceparent
    assert world.blobs.get_info("inbound", message.blob_path).metadata["traceparent"] == message.traceparent
    assert {line.trace_id for line in world.jobs.logs(message.job_id)} == {format(poll_span.context.trace_id,
                                                                                 "032x")}
    names = {s.name for s in otel.finished_spans()}
    assert {"breaker.allow", "landing.claim", "landing.upload", "landing.record_many", "sftp.post_action"} <= names
    dumped = repr([(s.name, s.attributes, s.events) for s in otel.finished_spans()])
    assert secret.splitlines()[1] not in dumped


# --- many files: the second look overlaps the transfers, bookkeeping is written in batches ----------------


def test_with_several_workers_transfers_start_before_the_second_look_and_commits_wait_for_it() -> None:
    world = World(post_action="leave")
    for name in ("a", "b", "c"):
        world.server.put(f"/out/{name}.csv", name.encode() * 10)
    seen: dict[str, Any] = {}

    def during_settle(_: float) -> None:
        deadline = threading.Event()
        for _ in range(200):  # the workers read while the poll waits for the second look
            if len(world.server.reads) == 3:
                break
            deadline.wait(0.01)
        seen["reads"] = dict(world.server.reads)
        seen["blobs"] = list(world.inbound())
        world.server.append("/out/b.csv", b"still writing")

    world.on_sleep = during_settle
    summary = world.poll(concurrency=3)
    assert seen["reads"] == {"/out/a.csv": 1, "/out/b.csv": 1, "/out/c.csv": 1}
    assert seen["blobs"] == []  # read, but nothing committed before the second look
    assert (summary.landed, summary.skipped_reasons) == (2, {"changing": 1})
    assert sorted(p.rsplit("/", 1)[1] for p in world.inbound()) == ["a.csv", "c.csv"]
    # The changed version leaves no job and no blob behind; its ledger entry is GONE and the next poll takes the
    # version that stays.
    assert len(world.jobs.job_ids()) == 2 and world.state("/out/b.csv") is LedgerState.GONE
    world.on_sleep = None
    world.clock.advance(minutes=1)
    assert world.poll(concurrency=3).landed == 1
    assert len(world.jobs.job_ids()) == 3 and len(world.landed_messages()) == 3


def test_bookkeeping_of_many_files_is_written_in_batches() -> None:
    world = World(post_action="delete", max_files_per_poll=1000)
    for i in range(250):
        world.server.put(f"/out/f{i:03d}.csv", f"row {i}\n".encode())
    batches: list[int] = []
    appends: list[Any] = []
    create_jobs, append = world.jobs.create_jobs, world.jobs.append

    def counted_create(jobs: Any) -> list[str]:
        batches.append(len(jobs))
        return create_jobs(jobs)

    def counted_append(*args: Any, **kwargs: Any) -> Any:
        appends.append(args)
        return append(*args, **kwargs)

    world.jobs.create_jobs = counted_create  # type: ignore[method-assign]
    world.jobs.append = counted_append  # type: ignore[method-assign]
    summary = world.poll(concurrency=4)
    assert (summary.status, summary.landed) == ("ok", 250)
    assert sum(batches) == 250 and len(batches) <= 5 and appends == []
    assert len(world.landed_messages()) == 250 and world.server.names() == []  # post-actions after recording
    # One FileLandedBatch per recorded batch (two when 100 entries pass the message size bound), not one per file.
    queued = world.queued()
    assert all(is_batch(m) for m in queued) and len(batches) <= len(queued) <= 2 * len(batches)
    assert len({m.traceparent for m in world.landed_messages()}) == 250  # each file's own trace context
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.DONE}
    job_ids = world.jobs.job_ids()
    assert len(job_ids) == 250
    for job_id in job_ids[:5] + job_ids[-5:]:
        assert [e.type for e in world.jobs.events(job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
        assert len(world.jobs.transfers(job_id)) == 1 and world.jobs.logs(job_id) == []  # plain landings: no log row


def test_a_failed_recording_keeps_the_source_and_a_later_poll_records_from_the_committed_blob() -> None:
    from azure.core.exceptions import HttpResponseError

    world = World(post_action="delete")
    for name in ("a", "b"):
        world.server.put(f"/out/{name}.csv", name.encode())
    create_jobs = world.jobs.create_jobs

    def storage_down(jobs: Any) -> list[str]:
        # Refused, not unreachable (an outage stops the whole poll: tests/unit/test_storage_outage.py).
        raise HttpResponseError(message="table service refused the batch")

    world.jobs.create_jobs = storage_down  # type: ignore[method-assign]
    first = world.poll(concurrency=2)
    assert (first.status, first.landed, first.failed_reasons) == ("partial", 0, {"storage_error": 2})
    assert len(world.inbound()) == 2 and world.landed_messages() == []  # blobs committed, nothing else
    assert world.server.names() == ["/out/a.csv", "/out/b.csv"]  # no post-action before the file is recorded
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.FAILED}
    world.jobs.create_jobs = create_jobs  # type: ignore[method-assign]
    second = world.poll(concurrency=2)
    assert (second.status, second.landed) == ("ok", 2)
    assert world.server.reads == {"/out/a.csv": 1, "/out/b.csv": 1}  # the committed blobs were reused
    assert len(world.inbound()) == 2 and len(world.landed_messages()) == 2 and world.server.names() == []
    for job_id in world.jobs.job_ids():
        assert [e.type for e in world.jobs.events(job_id)].count(EventType.FILE_LANDED) == 1


def test_a_failed_second_look_commits_nothing_and_releases_the_claims() -> None:
    world = World(post_action="leave")
    for name in ("a", "b"):
        world.server.put(f"/out/{name}.csv", name.encode())
    # The server drops every listing attempt (3, with retries) once the first listing is done.
    armed = [True]

    def drop_listings(_: float) -> None:
        if armed.pop() if armed else False:  # only the settle wait, not the retries' back-off sleeps
            world.server.fail("list", unavailable, times=3)

    world.on_sleep = drop_listings
    summary = world.poll(concurrency=2)
    assert summary.status == "failed" and summary.landed == 0
    assert world.inbound() == [] and world.jobs.job_ids() == [] and world.landed_messages() == []
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.FAILED}
    world.on_sleep = None
    world.clock.advance(minutes=1)
    again = world.poll(concurrency=2)
    assert (again.status, again.landed) == ("ok", 2), again


def test_with_one_worker_the_second_look_is_a_stat_on_the_same_session(world: World) -> None:
    world.server.put("/out/a.csv", b"abc")
    seen: list[dict[str, int]] = []
    world.on_sleep = lambda _: seen.append(dict(world.server.reads))
    summary = world.poll()
    assert (summary.landed, world.sources.opened) == (1, 1)  # no second connection
    assert seen == [{"/out/a.csv": 1}]  # read before the settle wait: the wait overlaps the transfer
    assert world.sleeps == [pytest.approx(1.0, abs=0.2)]


def test_with_one_worker_a_file_gone_before_the_second_look_is_not_committed(world: World) -> None:
    world.server.put("/out/a.csv", b"abc")
    world.server.put("/out/b.csv", b"def", age=7200)  # older: transferred first, then the wait, then its stat
    world.on_sleep = lambda _: world.server.files.pop("/out/b.csv")
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (1, {"vanished": 1})
    assert [p.rsplit("/", 1)[1] for p in world.inbound()] == ["a.csv"] and len(world.jobs.job_ids()) == 1
    assert world.state("/out/b.csv") is LedgerState.GONE and world.server.reads["/out/b.csv"] == 1


def test_with_leave_batches_are_recorded_off_the_workers_which_go_on_transferring() -> None:
    world = World(post_action="leave", max_files_per_poll=1000)
    for i in range(250):
        world.server.put(f"/out/f{i:03d}.csv", f"row {i}\n".encode())
    recording = threading.Event()
    both_went_on = threading.Event()
    uploaders: set[str] = set()
    recorded_on: list[str] = []
    lock = threading.Lock()
    create_jobs, upload = world.jobs.create_jobs, world.blobs.upload_stream

    started = [0]

    def counted_upload(*args: Any, **kwargs: Any) -> Any:
        with lock:
            started[0] += 1
            later = started[0] > 100
        if later:  # past the first batch: wait until it is being recorded, then note who goes on transferring
            recording.wait(timeout=30)
            with lock:
                uploaders.add(threading.current_thread().name)
                if len(uploaders) == 2:
                    both_went_on.set()
        return upload(*args, **kwargs)

    def slow_create(jobs: Any) -> list[str]:
        recorded_on.append(threading.current_thread().name)
        if len(recorded_on) == 1:  # hold the first batch until both workers have started another file
            recording.set()
            both_went_on.wait(timeout=30)
        return create_jobs(jobs)

    world.blobs.upload_stream = counted_upload  # type: ignore[method-assign]
    world.jobs.create_jobs = slow_create  # type: ignore[method-assign]
    summary = world.poll(concurrency=2)
    assert (summary.status, summary.landed) == ("ok", 250)
    # The worker that filled the first batch did not wait for its recording.
    assert both_went_on.is_set() and len(uploaders) == 2, (uploaders, recorded_on)
    assert all(name.startswith("sftp-acme-record") for name in recorded_on[:-1])  # the last: after the workers
    assert len(world.jobs.job_ids()) == 250 and len(world.landed_messages()) == 250
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.DONE}
    assert len(world.server.names()) == 250  # leave: the source is untouched


def _claim_transactions(world: World, on_call: Callable[[int], None]) -> list[int]:
    """Wrap the ledger's batched claims: `on_call(n)` runs before the n-th (from 1); returns the sizes."""
    sizes: list[int] = []
    create_many = world.ledger.create_many

    def counted(entries: Any) -> Any:
        batch = list(entries)
        sizes.append(len(batch))
        on_call(len(sizes))
        return create_many(batch)

    world.ledger.create_many = counted  # type: ignore[method-assign]
    return sizes


def test_transfers_start_while_the_later_claim_batches_are_written() -> None:
    world = World(post_action="delete", max_files_per_poll=1000)
    for i in range(250):
        world.server.put(f"/out/f{i:03d}.csv", f"row {i}\n".encode())
    uploading = threading.Event()
    upload = world.blobs.upload_stream

    def noted_upload(*args: Any, **kwargs: Any) -> Any:
        uploading.set()
        return upload(*args, **kwargs)

    world.blobs.upload_stream = noted_upload  # type: ignore[method-assign]
    waited: list[bool] = []
    # The second claim transaction waits for a first upload: one that only starts after every claim never comes.
    sizes = _claim_transactions(world, lambda n: waited.append(uploading.wait(timeout=30)) if n == 2 else None)
    summary = world.poll(concurrency=2)
    assert (summary.status, summary.landed) == ("ok", 250) and sizes == [100, 100, 50]
    assert waited == [True]
    entries = world.ledger.entries(PARTNER)
    assert len(entries) == 250 and {e.state for e in entries} == {LedgerState.DONE}
    assert len(world.jobs.job_ids()) == 250 and len(world.inbound()) == 250 and world.server.names() == []


@pytest.mark.parametrize("outage", [True, False])
def test_a_failed_claim_batch_lands_the_claims_before_it_and_the_next_poll_the_rest(outage: bool) -> None:
    from azure.core.exceptions import ServiceRequestError

    from shared.adapters.ledger import LedgerStorageError

    world = World(post_action="delete", max_files_per_poll=1000)
    names = [f"/out/f{i:03d}.csv" for i in range(250)]
    for i, name in enumerate(names):
        world.server.put(name, f"row {i}\n".encode())
    error: Exception = (ServiceRequestError("<urlopen error [Errno 111] Connection refused>") if outage else
                        LedgerStorageError("ledger batch: table storage refused it: HTTP 400", status_code=400,
                                           error_code="InvalidInput"))

    def fail_second(n: int) -> None:
        if n == 2:
            raise error

    sizes = _claim_transactions(world, fail_second)
    with pytest.raises(type(error)):
        world.poll(concurrency=2)
    assert sizes == [100, 100]  # nothing claimed after the failed transaction
    entries = world.ledger.entries(PARTNER)
    assert len(entries) == 100  # the first batch's claims only
    if not outage:  # not an outage: the claimed files were landed and recorded before the error was raised
        assert {e.state for e in entries} == {LedgerState.DONE} and len(world.server.names()) == 150
    done_before = sum(1 for e in entries if e.state is LedgerState.DONE)
    world.ledger.create_many = FakeLedger.create_many.__get__(world.ledger)  # type: ignore[method-assign]
    world.clock.advance(minutes=11)  # past the lease: what an outage left CLAIMED is taken over
    summary = world.poll(concurrency=2)
    assert summary.status == "ok" and summary.landed == 250 - done_before
    entries = world.ledger.entries(PARTNER)
    assert sorted(e.path for e in entries) == names and {e.state for e in entries} == {LedgerState.DONE}
    assert len(world.jobs.job_ids()) == 250 and len(world.inbound()) == 250 and world.server.names() == []
