"""Nothing overwritten, with fakes: unique names, the catalogue's on_exists, and SFTP post-actions that never
replace a partner's file (tests/integration has the same against Azurite and OpenSSH)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.catalog import CatalogError, parse_catalog
from shared.domain.jobs import EventType
from shared.domain.ledger import LedgerState
from shared.domain.naming import numbered, stamped, tagged
from shared.domain.routing import DEFAULT_BLOB_PATH, render_path
from tests.fakes import remote_error
from tests.unit.test_poll_sftp import World

MTIME = int(datetime(2026, 12, 1, 8, 30, 5, tzinfo=UTC).timestamp())


def test_tags_go_before_the_extension_of_the_last_segment() -> None:
    assert tagged("a.b/invoices.jsonl", "2") == "a.b/invoices.2.jsonl"
    assert tagged("README", "2") == "README.2" and tagged(".profile", "2") == ".profile.2"
    assert list(numbered("x.csv", 3)) == ["x.csv", "x.2.csv", "x.3.csv"]
    assert list(stamped("orders.csv", MTIME, 2)) == [
        "orders.csv", "orders.20261201T083005Z.csv", "orders.20261201T083005Z.2.csv"]


def test_the_default_blob_path_is_unique_per_job() -> None:
    when = datetime(2026, 12, 1, tzinfo=UTC)
    paths = {render_path(DEFAULT_BLOB_PATH, partner="demo", name="invoices.jsonl", job_id=job, when=when)
             for job in ("job-1", "job-2")}
    assert paths == {"demo/2026/12/01/job-1/invoices.jsonl", "demo/2026/12/01/job-2/invoices.jsonl"}


def _partner(destination: dict[str, Any] | None = None, **sftp: Any) -> dict[str, Any]:
    partner: dict[str, Any] = {"id": "acme", "name": "Acme"}
    if destination is not None:
        partner["routes"] = [{"name": "all", "default": True, "destinations": [destination]}]
    if sftp:
        partner["sftp"] = {"host": "h.example", "username": "u", "auth": {"private_key_secret": "k"},
                           "host_keys": ["SHA256:" + "A" * 43], "remote_dirs": ["/out"], **sftp}
    return {"partners": [partner]}


def test_blob_destinations_default_to_fail_on_a_per_job_path() -> None:
    (dest,) = parse_catalog(_partner({"kind": "blob"}), env={}).get("acme").routes[0].destinations
    assert (dest.path, dest.on_exists) == (DEFAULT_BLOB_PATH, "fail")
    for value in ("overwrite", "unique"):
        (dest,) = parse_catalog(_partner({"kind": "blob", "on_exists": value}), env={}).get("acme").routes[0] \
            .destinations
        assert dest.on_exists == value
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_partner({"kind": "blob", "on_exists": "replace"}), env={})
    assert any("on_exists" in p and "'fail', 'overwrite' or 'unique'" in p for p in caught.value.problems), \
        caught.value.problems


def test_sftp_post_actions_default_to_unique_names_and_refuse_overwrite() -> None:
    sftp = parse_catalog(_partner(post_action="move", move_to="/archive"), env={}).get("acme").sftp
    assert sftp is not None and sftp.on_exists == "unique"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(_partner(post_action="move", move_to="/archive", on_exists="overwrite"), env={})
    assert any("on_exists" in p for p in caught.value.problems), caught.value.problems


# --- SFTP post-actions on the fake server --------------------------------------------------------


def test_move_takes_a_stamped_then_numbered_name_and_keeps_every_file() -> None:
    world = World(post_action="move", move_to="/archive", recursive=True)
    world.server.put("/archive/orders.csv", b"yesterday")
    for folder in ("a", "b"):
        world.server.put(f"/out/{folder}/orders.csv", folder.encode(), mtime=MTIME)
    assert world.poll().landed == 2
    assert world.server.names() == ["/archive/orders.20261201T083005Z.2.csv", "/archive/orders.20261201T083005Z.csv",
                                    "/archive/orders.csv"]
    assert world.server.files["/archive/orders.csv"].data == b"yesterday"
    assert {bytes(world.server.files[p].data) for p in world.server.names()} == {b"yesterday", b"a", b"b"}
    assert {e.state for e in world.ledger.entries("acme")} == {LedgerState.DONE}


def test_rename_keeps_the_suffix_last_so_the_renamed_file_is_never_taken() -> None:
    world = World(post_action="rename", suffix=".done")
    world.server.put("/out/a.csv.done", b"old")
    world.server.put("/out/a.csv", b"new", mtime=MTIME)
    world.poll()
    assert world.server.names() == ["/out/a.20261201T083005Z.csv.done", "/out/a.csv.done"]
    assert world.poll().listed == 0


def test_on_exists_fail_leaves_the_file_and_says_so_once() -> None:
    world = World(post_action="move", move_to="/archive", on_exists="fail")
    world.server.put("/archive/a.csv", b"old")
    world.server.put("/out/a.csv", b"new")
    first = world.poll()
    assert (first.status, first.landed, first.failed_reasons) == ("partial", 1, {"post_action_failed": 1})
    assert "/archive/a.csv already exists" in first.failed_files[0].reason
    assert world.server.names() == ["/archive/a.csv", "/out/a.csv"] and world.state("/out/a.csv") is LedgerState.LANDED
    second = world.poll()
    assert (second.landed, second.skipped_reasons) == (0, {"already_ingested": 1})
    (job_id,) = world.jobs.job_ids()
    notes = [e.data for e in world.jobs.events(job_id) if e.type is EventType.NOTE]
    assert len(notes) == 1 and notes[0]["post_action"] == "move" and "on_exists: fail" in notes[0]["message"]
    assert len(world.landed_messages()) == 1


def test_a_post_action_refused_by_the_server_is_recorded_on_the_job() -> None:
    world = World(post_action="rename")
    world.server.put("/out/a.csv", b"x")
    world.server.fail("rename", remote_error(errno.EACCES))
    summary = world.poll()
    assert summary.failed_reasons == {"post_action_failed": 1} and "Permission denied" in summary.failed_files[0].reason
    (job_id,) = world.jobs.job_ids()
    assert any("Permission denied" in e.data.get("message", "") for e in world.jobs.events(job_id)
               if e.type is EventType.NOTE)
    world.poll()  # the fault was once: the next poll finishes the rename
    assert world.server.names() == ["/out/a.csv.done"] and world.state("/out/a.csv") is LedgerState.DONE
