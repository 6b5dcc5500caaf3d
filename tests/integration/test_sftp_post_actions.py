"""SFTP post-actions against a real OpenSSH server: moving or renaming a landed file never replaces a
partner's file; a post-action that cannot complete leaves the file in place, says why on the job, and the
next poll does not land it again."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from shared.bootstrap import Services
from shared.domain.jobs import EventType
from shared.domain.ledger import LedgerState
from tests.integration.sshd_server import SshdServer
from tests.integration.test_sftp_ingest import Ingest

pytestmark = [pytest.mark.sshd, pytest.mark.azurite]

YESTERDAY = b"order_id\n1 (yesterday)\n"
TODAY = b"order_id\n2 (today)\n"


def stamped(name: str, mtime: float) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem}.{datetime.fromtimestamp(int(mtime), UTC):%Y%m%dT%H%M%SZ}{ext}"


def test_move_keeps_yesterdays_file_of_the_same_name_in_the_archive(
        services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)
    archive = sshd_server.data / f"{ingest.partner}-archive"
    ingest.configure(post_action="move", move_to=str(archive))
    archive.mkdir()
    (archive / "orders.csv").write_bytes(YESTERDAY)
    mtime = datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC).timestamp()
    ingest.put("orders.csv", TODAY, mtime=mtime)
    summary = ingest.poll()
    assert (summary.status, summary.landed) == ("ok", 1)
    assert sorted(os.listdir(archive)) == sorted(["orders.csv", "orders.20261201T083005Z.csv"])
    assert (archive / "orders.csv").read_bytes() == YESTERDAY
    assert (archive / "orders.20261201T083005Z.csv").read_bytes() == TODAY
    assert ingest.remote() == [] and set(ingest.ledger().values()) == {LedgerState.DONE}


def test_move_of_two_files_of_one_name_from_recursive_folders_keeps_both(
        services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)
    archive = sshd_server.data / f"{ingest.partner}-archive"
    ingest.configure(post_action="move", move_to=str(archive), recursive=True)
    mtime = datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC).timestamp()
    for folder in ("east", "west"):
        (ingest.folder / folder).mkdir()
        ingest.put(f"{folder}/orders.csv", folder.encode(), mtime=mtime)
    assert ingest.poll(concurrency=2).landed == 2
    names = sorted(os.listdir(archive))
    assert names == sorted(["orders.csv", "orders.20261201T083005Z.csv"])
    assert sorted((archive / n).read_bytes() for n in names) == [b"east", b"west"]


def test_rename_keeps_an_earlier_renamed_file_of_the_same_name(services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server, post_action="rename", suffix=".done")
    (ingest.folder / "orders.csv.done").write_bytes(YESTERDAY)
    mtime = datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC).timestamp()
    ingest.put("orders.csv", TODAY, mtime=mtime)
    assert ingest.poll().landed == 1
    assert ingest.remote() == sorted(["orders.csv.done", stamped("orders.csv", mtime) + ".done"])
    assert (ingest.folder / "orders.csv.done").read_bytes() == YESTERDAY
    assert (ingest.folder / (stamped("orders.csv", mtime) + ".done")).read_bytes() == TODAY
    assert ingest.poll().listed == 0  # renamed files are never taken again


def test_on_exists_fail_leaves_the_file_records_why_and_never_lands_it_twice(
        services: Services, sshd_server: SshdServer) -> None:
    ingest = Ingest(services, sshd_server)
    archive = sshd_server.data / f"{ingest.partner}-archive"
    ingest.configure(post_action="move", move_to=str(archive), on_exists="fail")
    archive.mkdir()
    (archive / "orders.csv").write_bytes(YESTERDAY)
    ingest.put("orders.csv", TODAY)
    first = ingest.poll()
    assert (first.landed, first.failed_reasons) == (1, {"post_action_failed": 1})
    assert str(archive / "orders.csv") in first.failed_files[0].reason
    assert (archive / "orders.csv").read_bytes() == YESTERDAY and (ingest.folder / "orders.csv").read_bytes() == TODAY
    (job,) = ingest.jobs()
    notes = [e.data["message"] for e in services.jobs.events(job.job_id) if e.type is EventType.NOTE]
    assert len(notes) == 1 and "already exists" in notes[0] and str(archive / "orders.csv") in notes[0]
    assert set(ingest.ledger().values()) == {LedgerState.LANDED}
    again = ingest.poll()  # the file is still there: only the post-action is tried again, never a second job
    assert (again.landed, again.skipped_reasons, again.failed_reasons) == (
        0, {"already_ingested": 1}, {"post_action_failed": 1})
    assert len(ingest.jobs()) == 1 and len(ingest.messages()) == 1
    assert len([e for e in services.jobs.events(job.job_id) if e.type is EventType.NOTE]) == 1  # said once
    (archive / "orders.csv").rename(archive / "orders-yesterday.csv")  # the operator makes room
    ingest.poll()
    assert (archive / "orders.csv").read_bytes() == TODAY and ingest.remote() == []
    assert set(ingest.ledger().values()) == {LedgerState.DONE}

