"""SFTP ingestion end to end: a real OpenSSH server, real Azurite, the poll service and its bookkeeping."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import LocalSecrets
from shared.bootstrap import Services, build_services
from shared.catalog import Catalog, parse_catalog
from shared.domain.jobs import EventType, JobStatus
from shared.domain.ledger import BreakerState, LedgerState
from shared.domain.messages import FileLanded, landed_entries
from shared.domain.sanitize import decode_original, remote_bytes, remote_text
from shared.ports import BlobInfo
from shared.services.poll_sftp import PollOptions, PollProgress, PollSummary, poll_partner
from shared.settings import Settings
from tests.integration.sshd_server import SshdServer, free_port

pytestmark = [pytest.mark.sshd, pytest.mark.azurite]

MIB = 1024 * 1024
KEY_SECRET = "sftp-test-key"


def make_catalog(sshd: SshdServer, partner: str, folder: Path | str, *, port: int | None = None,
                 **sftp: Any) -> Catalog:
    block: dict[str, Any] = {
        "host": sshd.host, "port": port or sshd.port, "username": sshd.username,
        "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd.fingerprint],
        "remote_dirs": [str(folder)], "min_age_seconds": 0, "post_action": "delete",
        "connect_timeout_seconds": 5, "operation_timeout_seconds": 10,
    }
    block.update(sftp)
    return parse_catalog({"partners": [{"id": partner, "name": partner, "sftp": block}]}, env={})


class Ingest:
    """One partner on the private sshd, polled into Azurite through real adapters."""

    def __init__(self, services: Services, sshd: SshdServer, **sftp: Any) -> None:
        self.sshd = sshd
        self.partner = f"p{uuid.uuid4().hex[:12]}"
        self.folder = sftp.pop("folder", None) or sshd.folder(self.partner)
        self.services = services
        self.configure(**sftp)
        services.overrides["secrets"] = LocalSecrets(env={"WHARF_SECRET_SFTP_TEST_KEY": f"@{sshd.client_key.path}"})

    def configure(self, **sftp: Any) -> None:
        self.services.overrides["catalog"] = make_catalog(self.sshd, self.partner, self.folder, **sftp)

    def options(self, **kwargs: Any) -> PollOptions:
        base: dict[str, Any] = {"settle_seconds": 0.3, "retry_attempts": 2, "retry_initial": 0.05,
                                "retry_max": 0.1, "concurrency": 4}
        base.update(kwargs)
        return PollOptions(**base)

    def poll(self, services: Services | None = None, progress: Callable[[PollProgress], None] | None = None,
             **kwargs: Any) -> PollSummary:
        return poll_partner(services or self.services, self.partner, options=self.options(**kwargs),
                            progress=progress, requested_by="test")

    def put(self, name: str | bytes, data: bytes, *, mtime: float | None = None) -> Path:
        raw = os.fsencode(self.folder) + b"/" + (name if isinstance(name, bytes) else name.encode())
        with open(raw, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(raw, (mtime, mtime))
        return Path(os.fsdecode(raw))

    def blobs(self) -> list[BlobInfo]:
        return self.services.blobs.list_blobs("inbound", f"{self.partner}/")

    def jobs(self) -> list[Any]:
        return self.services.jobs.list_jobs(partner=self.partner, limit=1000)

    def messages(self) -> list[FileLanded]:
        return [FileLanded.model_validate(e) for m in self.services.queues.peek(self.services.settings.landed_queue)
                for e in landed_entries(m)]

    def ledger(self) -> dict[str, LedgerState]:
        return {e.path: e.state for e in self.services.ledger.entries(self.partner)}

    def remote(self) -> list[str]:
        return sorted(os.listdir(self.folder))


@contextmanager
def appending(path: Path) -> Iterator[None]:
    """A slow upload in progress: a line appended to `path` every 50 ms while the block runs."""
    stop = threading.Event()

    def writer() -> None:
        i = 1
        while not stop.is_set():
            with path.open("ab") as f:
                f.write(f"line {i}\n".encode())
            i += 1
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        while size:
            block = os.urandom(min(size, MIB))
            digest.update(block)
            f.write(block)
            size -= len(block)
    return digest.hexdigest()


def test_ingest_lands_each_file_once_with_its_bookkeeping(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)
    ingest.put("invoices.csv", b"id,amount\n1,9.99\n")
    sha = write_random(ingest.folder / "big.bin", 3 * MIB + 5)
    summary = ingest.poll()
    assert (summary.status, summary.listed, summary.landed, summary.bytes) == ("ok", 2, 2, 3 * MIB + 5 + 17)
    blobs = {b.path.rsplit("/", 1)[1]: b for b in ingest.blobs()}
    assert set(blobs) == {"invoices.csv", "big.bin"} and blobs["big.bin"].sha256 == sha
    messages = {m.file_name: m for m in ingest.messages()}
    big = messages["big.bin"]
    assert (big.container, big.blob_path, big.bytes, big.sha256) == ("inbound", blobs["big.bin"].path, 3 * MIB + 5, sha)
    assert big.source == f"sftp://{sshd_server.host}:{sshd_server.port}{ingest.folder}/big.bin"
    info = services.blobs.get_info("inbound", big.blob_path)
    assert info.metadata["job_id"] == big.job_id and info.metadata["partner"] == ingest.partner
    job = services.jobs.get_job(big.job_id)
    assert (job.status, job.bytes, job.sha256, job.blob_path) == (JobStatus.PENDING, 3 * MIB + 5, sha,
                                                                  f"inbound/{big.blob_path}")
    assert [e.type for e in services.jobs.events(big.job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
    (transfer,) = services.jobs.transfers(big.job_id)
    assert (transfer.sha256, transfer.bytes, transfer.transfer_id) == (sha, 3 * MIB + 5, big.transfer_id)
    assert services.jobs.logs(big.job_id) == []  # a plain landing: its events say it all, no log row
    assert ingest.remote() == [] and set(ingest.ledger().values()) == {LedgerState.DONE}


def test_a_second_poll_ingests_nothing_and_a_back_dated_file_is_still_taken(
        services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server, post_action="leave")
    ingest.put("today.csv", b"today")
    assert ingest.poll().landed == 1
    again = ingest.poll()
    assert (again.landed, again.skipped_reasons) == (0, {"already_ingested": 1})
    ingest.put("from-2019.csv", b"late", mtime=time.mktime((2019, 5, 1, 12, 0, 0, 0, 0, -1)))
    late = ingest.poll()
    assert (late.landed, late.skipped_reasons) == (1, {"already_ingested": 1})
    assert len(ingest.blobs()) == 2 and len(ingest.jobs()) == 2 and len(ingest.messages()) == 2


def test_a_growing_file_waits_until_it_is_stable(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)  # min_age 0: only the two looks protect it
    path = ingest.put("growing.csv", b"line 0\n")
    with appending(path):
        summary = ingest.poll(settle_seconds=0.5)
    assert (summary.landed, summary.skipped_reasons) in ((0, {"changing": 1}),)
    assert ingest.blobs() == []
    final = path.read_bytes()
    done = ingest.poll(settle_seconds=0.3)
    assert done.landed == 1
    (blob,) = ingest.blobs()
    assert b"".join(services.blobs.open_read("inbound", blob.path)) == final


def test_with_several_files_transfers_overlap_the_second_look_and_a_growing_file_is_not_committed(
        services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)  # min_age 0: only the two looks protect it
    steady = {f"steady{i}.csv": f"row {i}\n".encode() * 500 for i in range(6)}
    for name, data in steady.items():
        ingest.put(name, data)
    path = ingest.put("growing.csv", b"line 0\n")
    with appending(path):
        summary = ingest.poll(settle_seconds=0.5, concurrency=4)
    assert (summary.landed, summary.skipped_reasons) == (6, {"changing": 1})
    landed = {b.path.rsplit("/", 1)[1]: b for b in ingest.blobs()}
    assert sorted(landed) == sorted(steady)
    for name, data in steady.items():
        assert b"".join(services.blobs.open_read("inbound", landed[name].path)) == data
    assert len(ingest.jobs()) == 6 and len(ingest.messages()) == 6  # no job for the version that moved
    assert ingest.ledger()[str(path)] is LedgerState.GONE
    assert ingest.remote() == ["growing.csv"]  # post-action (delete) for the recorded files only
    final = path.read_bytes()
    again = ingest.poll(settle_seconds=0.3, concurrency=4)
    assert (again.landed, again.skipped) == (1, 0)
    (blob,) = [b for b in ingest.blobs() if b.path.endswith("/growing.csv")]
    assert b"".join(services.blobs.open_read("inbound", blob.path)) == final
    assert len(ingest.jobs()) == 7


def test_two_pollers_racing_land_each_file_once(services: Services, sshd_server: SshdServer,
                                               test_settings: Settings) -> None:
    ingest = Ingest(services, sshd_server)
    for i in range(30):
        ingest.put(f"f{i:02d}.csv", f"row {i}\n".encode() * 100)
    write_random(ingest.folder / "medium.bin", 8 * MIB)
    # A second instance: its own Services (own adapters and clients), the same storage and catalogue.
    other = build_services(test_settings, catalog=services.catalog, secrets=services.secrets)
    summaries: list[PollSummary] = []
    barrier = threading.Barrier(2)

    def run(svc: Services) -> None:
        barrier.wait(timeout=10)
        summaries.append(ingest.poll(svc, settle_seconds=0.2))

    threads = [threading.Thread(target=run, args=(svc,)) for svc in (services, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(s.landed for s in summaries) == 31, [s.model_dump() for s in summaries]
    assert len(ingest.blobs()) == 31 and len(ingest.jobs()) == 31 and len(ingest.messages()) == 31
    assert len({b.path.rsplit("/", 1)[1] for b in ingest.blobs()}) == 31
    assert ingest.remote() == []


def test_sshd_killed_mid_transfer_leaves_no_blob_and_a_later_poll_lands_it_once(
        services: Services, private_sshd: SshdServer) -> None:
    ingest = Ingest(services, private_sshd)
    sha = write_random(ingest.folder / "large.bin", 40 * MIB)
    killed = threading.Event()

    def kill_midway(p: PollProgress) -> None:
        if p.phase == "transferring" and p.bytes >= 8 * MIB and not killed.is_set():
            killed.set()
            private_sshd.kill()

    first = ingest.poll(progress=kill_midway, retry_attempts=2)
    assert killed.is_set()
    assert first.status in ("partial", "failed") and first.landed == 0
    assert first.failed_reasons == {"source_unavailable": 1}
    assert ingest.blobs() == []  # uncommitted blocks are invisible: no partial blob
    assert not services.blobs.exists("inbound", services.ledger.entries(ingest.partner)[0].blob_path)
    assert ingest.ledger() == {str(ingest.folder / "large.bin"): LedgerState.FAILED}
    private_sshd.start()
    second = ingest.poll()
    assert (second.status, second.landed) == ("ok", 1)
    (blob,) = ingest.blobs()
    assert (blob.size, blob.sha256) == (40 * MIB, sha)
    (job,) = ingest.jobs()
    assert [e.type for e in services.jobs.events(job.job_id)].count(EventType.FILE_LANDED) == 1
    assert len(ingest.messages()) == 1 and ingest.remote() == []


def test_a_wrong_host_key_stops_everything_and_says_so(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server, host_keys=[sshd_server.other_fingerprint])
    ingest.put("a.csv", b"a")
    summary = ingest.poll()
    assert summary.status == "failed"
    assert sshd_server.fingerprint in summary.error and sshd_server.other_fingerprint in summary.error
    assert "host_keys" in summary.error
    assert ingest.blobs() == [] and ingest.ledger() == {} and ingest.remote() == ["a.csv"]


def test_the_breaker_opens_after_failed_polls_and_recovers_after_the_cooldown(
        services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server, port=free_port())  # nothing listens there
    ingest.put("a.csv", b"a")
    opts: dict[str, Any] = {"retry_attempts": 1, "breaker_threshold": 2, "breaker_cooldown": timedelta(seconds=1)}
    assert [ingest.poll(**opts).status for _ in range(2)] == ["failed", "failed"]
    record = services.breakers.get("sftp", ingest.partner)
    assert (record.state, record.failures) == (BreakerState.OPEN, 2) and "cannot connect" in record.last_error
    blocked = ingest.poll(**opts)
    assert blocked.status == "circuit_open" and "cannot connect" in blocked.error
    ingest.configure()  # the partner's server is back (the right port)
    time.sleep(1.1)
    probe = ingest.poll(**opts)
    assert (probe.status, probe.landed) == ("ok", 1)
    assert services.breakers.get("sftp", ingest.partner).state is BreakerState.CLOSED


BAD_NAMES: list[bytes] = [
    b"...",
    b"..hidden..csv",
    b"ctrl\x01\x07tab\tnl\n.csv",
    b"back\\slash?hash#pct%.csv",
    b"caf\xe9 latin-1.csv",
    b"\xff\xfe\xfd",
    ("\u00e9" * 127).encode(),  # 254 bytes: the longest name ext4 and tmpfs allow
    b" lead and trail . ",
]


def test_bad_names_land_under_safe_names_with_the_original_kept(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)
    for i, name in enumerate(BAD_NAMES):
        ingest.put(name, f"file {i}".encode())
    summary = ingest.poll()
    assert (summary.status, summary.landed) == ("ok", len(BAD_NAMES))
    originals = {}
    for blob in ingest.blobs():
        segment = blob.path.rsplit("/", 1)[1]
        assert segment not in ("", ".", "..") and "/" not in segment and "\\" not in segment
        assert all(ch.isprintable() for ch in segment) and len(segment.encode()) <= 255
        assert len(blob.path) <= 1024 and all(v.isascii() for v in blob.metadata.values())
        originals[remote_bytes(decode_original(blob.metadata["original_name"]))] = segment
    assert set(originals) == set(BAD_NAMES)
    assert originals[b"..."] == "unnamed" and originals[b"\xff\xfe\xfd"] == "___"
    assert ingest.remote() == []  # non-UTF-8 names were removed by their exact bytes


def test_bad_files_are_handled_without_losing_the_others(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server, max_file_size_bytes=64 * 1024)
    ingest.put("empty.csv", b"")
    ingest.put("huge.csv", b"x" * (64 * 1024 + 1))
    ingest.put("vanishing.csv", b"here now", mtime=time.time() - 120)  # oldest: transferred first
    ingest.put("fine.csv", b"fine")

    def vanish(p: PollProgress) -> None:
        if p.phase == "transferring" and (ingest.folder / "vanishing.csv").exists():
            (ingest.folder / "vanishing.csv").unlink()

    summary = ingest.poll(progress=vanish, concurrency=1)
    assert summary.landed == 2 and summary.failed == 0
    assert summary.skipped_reasons == {"over_size": 1, "vanished": 1}
    landed = {m.file_name: m for m in ingest.messages()}
    assert set(landed) == {"empty.csv", "fine.csv"} and landed["empty.csv"].bytes == 0
    assert any("zero-byte" in line.message for line in services.jobs.logs(landed["empty.csv"].job_id))
    (skipped,) = [j for j in ingest.jobs() if j.status is JobStatus.FAILED]
    assert "over-size" in skipped.error and skipped.file_name == "huge.csv"
    assert any("not downloaded" in line.message for line in services.jobs.logs(skipped.job_id))
    states = {Path(p).name: s for p, s in ingest.ledger().items()}
    assert states == {"empty.csv": LedgerState.DONE, "fine.csv": LedgerState.DONE,
                      "huge.csv": LedgerState.SKIPPED, "vanishing.csv": LedgerState.GONE}
    assert ingest.remote() == ["huge.csv"]
    again = ingest.poll()
    assert again.skipped_reasons == {"already_skipped": 1} and len(ingest.jobs()) == 3  # logged once


def test_permission_denied_is_recorded_and_the_rest_of_the_poll_lands(
        services: Services, sshd_server: SshdServer) -> None:
    # Root reads everything, so this partner logs in as an unprivileged user (see sshd_server.py).
    folder = sshd_server.public_folder(f"perm-{uuid.uuid4().hex[:8]}")
    folder.chmod(0o777)  # the unprivileged user may delete what it could read
    ingest = Ingest(services, sshd_server, folder=folder, username=sshd_server.unprivileged_user)
    for name in ("a.csv", "b.csv"):
        ingest.put(name, name.encode()).chmod(0o644)
    ingest.put("secret.csv", b"top secret").chmod(0o600)
    summary = ingest.poll()
    assert (summary.status, summary.landed, summary.failed_reasons) == ("partial", 2, {"permission_denied": 1})
    assert "Permission denied" in summary.failed_files[0].reason
    assert {m.file_name for m in ingest.messages()} == {"a.csv", "b.csv"}
    assert ingest.remote() == ["secret.csv"]
    assert ingest.ledger()[str(folder / "secret.csv")] is LedgerState.FAILED
    assert len(ingest.jobs()) == 2  # an unreadable file leaves no job behind, only its ledger entry


def test_move_and_rename_post_actions(services: Services, sshd_server: SshdServer) -> None:
    moving = Ingest(services, sshd_server)
    moving.configure(recursive=True, post_action="move", move_to=str(sshd_server.data / f"{moving.partner}-done"))
    (moving.folder / "sub").mkdir()
    moving.put("sub/deep.csv", b"deep")
    for i in range(6):
        moving.put(f"top{i}.csv", b"top")
    # Parallel workers all create the (missing) move_to folder at once: every move must still succeed.
    assert moving.poll(concurrency=4).landed == 7
    assert sorted(os.listdir(sshd_server.data / f"{moving.partner}-done")) == ["deep.csv"] + [
        f"top{i}.csv" for i in range(6)]
    assert set(moving.ledger().values()) == {LedgerState.DONE}
    renaming = Ingest(services, sshd_server, post_action="rename", suffix=".wharf")
    renaming.put("r.csv", b"r")
    assert renaming.poll().landed == 1 and renaming.remote() == ["r.csv.wharf"]
    assert renaming.poll().listed == 0


def test_non_utf8_name_round_trips_through_the_ledger(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server, post_action="leave")
    ingest.put(b"na\xefve.csv", b"x")
    assert ingest.poll().landed == 1
    (path,) = ingest.ledger()
    assert remote_bytes(path).endswith(b"/na\xefve.csv") and path == remote_text(remote_bytes(path))
    (message,) = ingest.messages()
    assert message.source.isascii() and message.source.endswith("/na%EFve.csv")
    (transfer,) = services.jobs.transfers(message.job_id)
    assert transfer.source == message.source and message.file_name == "na_ve.csv"
    assert ingest.poll().skipped_reasons == {"already_ingested": 1}


def test_many_small_files_left_in_place_land_once_each_through_the_recorder(services: Services,
                                                                          sshd_server: SshdServer) -> None:
    # post_action leave with several workers: batches of 100 are recorded off the workers (Azurite, sshd), and
    # the ledger lookup of the second poll reads the partition in one page.
    ingest = Ingest(services, sshd_server, post_action="leave", max_files_per_poll=1000)
    data = {f"f{i:03d}.csv": f"id,n\n{i},{i * 7}\n".encode() for i in range(230)}
    for name, body in data.items():
        ingest.put(name, body)
    summary = ingest.poll(concurrency=4)
    assert (summary.status, summary.landed) == ("ok", 230)
    blobs = ingest.blobs()
    assert sorted(b.path.rsplit("/", 1)[1] for b in blobs) == sorted(data)  # one blob per file
    assert all(b.sha256 == hashlib.sha256(data[b.path.rsplit("/", 1)[1]]).hexdigest() for b in blobs)
    jobs = ingest.jobs()
    assert len(jobs) == 230 and {j.file_name for j in jobs} == set(data)  # every job visible in the list
    assert sorted(m.job_id for m in ingest.messages()) == sorted(j.job_id for j in jobs)
    assert set(ingest.ledger().values()) == {LedgerState.DONE} and ingest.remote() == sorted(data)
    again = ingest.poll(concurrency=4)
    assert again.landed == 0 and again.skipped_reasons == {"already_ingested": 230}
