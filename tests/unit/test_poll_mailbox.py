"""Mailbox polling with fakes: exactly once, rules, after-actions, crash recovery, resilience, dispatch."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.bootstrap import Services, build_services
from shared.catalog import Catalog, parse_catalog
from shared.domain.errors import ConfigurationError, DependencyUnavailableError, NotFoundError
from shared.domain.jobs import EventType, JobStatus
from shared.domain.ledger import BreakerState, LedgerState
from shared.domain.messages import FileLanded, PollRequest
from shared.services.poll_mailbox import poll_mailbox
from shared.services.polls import PollOptions, PollProgress, PollSummary
from shared.services.scheduling import run_poll_request, schedule_polls
from shared.settings import Settings
from tests.fake_mailbox import FakeMailbox
from tests.fakes import (
    Clock,
    Crash,
    FakeBlobStore,
    FakeBreakers,
    FakeJobStore,
    FakeLedger,
    FakeMessageQueue,
    FakePublisher,
)
from tests.graph_server.model import Attachment, Message, file_attachment, item_attachment
from tests.http_calls import http_caller

PARTNER = "acme"
BOX = "ingest@wharf.test"
FOLDER = "Inbox/Partners/Acme"
AUTH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "00000000-0000-0000-0000-0000000000aa",
        "client_secret_secret": "acme-graph-secret"}


def make_catalog(**mailbox: Any) -> Catalog:
    block: dict[str, Any] = {"mailbox": BOX, "folder": FOLDER, "sender_allow": ["ops@acme.example", "*@acme.test"],
                             "attachment_globs": ["*.csv"], "auth": AUTH}
    block.update(mailbox)
    return parse_catalog({"partners": [{"id": PARTNER, "name": "Acme", "mailbox": block}]}, env={})


class World:
    def __init__(self, **mailbox: Any) -> None:
        self.clock = Clock()
        self.mail = FakeMailbox()
        self.user = self.mail.add_user(BOX)
        for path in (FOLDER, f"{FOLDER}/Done", "Inbox/Rejected"):
            self.user.folder_path(path)
        self.blobs, self.jobs, self.ledger = FakeBlobStore(), FakeJobStore(), FakeLedger()
        self.queues, self.breakers = FakeMessageQueue(), FakeBreakers()
        settings = Settings(POLL_QUEUE="poll-requests", LANDED_QUEUE="file-landed", WHARF_EVENTS_QUEUE="events")
        self.services: Services = build_services(
            settings, blobs=self.blobs, jobs=self.jobs, queues=self.queues, ledger=self.ledger,
            breakers=self.breakers, mailboxes=self.mail, catalog=make_catalog(**mailbox), publisher=FakePublisher())
        self.queues.ensure_queues(self.services.queue_names())

    def configure(self, **mailbox: Any) -> None:
        self.services.overrides["catalog"] = make_catalog(**mailbox)

    def add(self, *attachments: Attachment, subject: str = "Invoices", sender: str = "ops@acme.example",
            folder: str = FOLDER) -> Message:
        return self.user.add_message(folder, subject=subject, sender=sender, attachments=list(attachments))

    def poll(self, **kwargs: Any) -> PollSummary:
        progress = kwargs.pop("progress", None)
        extra = {k: kwargs.pop(k) for k in ("max_messages", "page_size") if k in kwargs}
        options = PollOptions(clock=self.clock, **kwargs)
        return poll_mailbox(self.services, PARTNER, options=options, progress=progress, requested_by="test", **extra)

    def landed(self) -> list[FileLanded]:
        return [FileLanded.model_validate(m) for m in self.queues.messages("file-landed")]

    def blob(self, message: FileLanded) -> bytes:
        return b"".join(self.blobs.open_read(message.container, message.blob_path))

    def states(self) -> list[LedgerState]:
        return [e.state for e in self.ledger.entries(PARTNER)]


@pytest.fixture
def world() -> World:
    return World()


# --- happy path and exactly once ---------------------------------------------------------------------


def test_each_wanted_attachment_lands_with_its_bookkeeping(world: World) -> None:
    msg = world.add(file_attachment("a.csv", b"id\n1\n"), file_attachment("b.csv", b"id\n2\n"),
                    file_attachment("c.pdf", b"%PDF"))
    summary = world.poll()
    assert (summary.status, summary.channel, summary.listed, summary.landed, summary.bytes) == ("ok", "mail", 1, 2,
                                                                                               10)
    landed = {m.file_name: m for m in world.landed()}
    assert set(landed) == {"a.csv", "b.csv"}
    message = landed["a.csv"]
    assert world.blob(message) == b"id\n1\n"
    assert message.source == f"mail://{BOX}/{msg.internet_message_id}"
    job = world.jobs.get_job(message.job_id)
    assert (job.job_type.value, job.partner, job.source, job.file_name) == ("MAIL_INGEST", PARTNER, message.source,
                                                                          "a.csv")
    assert [e.type for e in world.jobs.events(message.job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
    (transfer,) = world.jobs.transfers(message.job_id)
    assert (transfer.source, transfer.status, transfer.bytes) == (message.source, "LANDED", 5)
    assert world.jobs.logs(message.job_id) == []  # a plain landing: its events say it all, no log row
    assert msg.is_read and world.states() == [LedgerState.DONE, LedgerState.DONE]
    paths = {e.path for e in world.ledger.entries(PARTNER)}
    assert paths == {f"{BOX}/{msg.internet_message_id}/{a.id}" for a in msg.attachments[:2]}


def test_nothing_is_landed_twice(world: World) -> None:
    msg = world.add(file_attachment("a.csv", b"1"))
    world.poll()
    msg.is_read = False
    again = world.poll()
    assert (again.landed, again.skipped_reasons) == (0, {"already_ingested": 1})
    assert len(world.landed()) == 1 and msg.is_read


def test_mail_without_internet_message_id_uses_the_graph_id(world: World) -> None:
    msg = world.add(file_attachment("a.csv", b"1"))
    msg.internet_message_id = ""
    world.poll()
    (entry,) = world.ledger.entries(PARTNER)
    assert entry.path.startswith(f"{BOX}/graph-id:")


# --- rules ---------------------------------------------------------------------------------------------


def test_rejections_are_recorded_and_logged_once(world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.configure(subject_regex="^Invoices")
    world.add(file_attachment("a.csv", b"1"), sender="x@evil.example")
    world.add(file_attachment("a.csv", b"1"), subject="Newsletter")
    world.add(file_attachment("a.pdf", b"1"))
    with caplog.at_level(logging.WARNING):
        first = world.poll()
        second = world.poll()
    assert first.skipped_reasons == {"sender_not_allowed": 1, "subject_mismatch": 1, "no_matching_attachment": 1}
    assert second.skipped_reasons == {"already_rejected": 3}
    assert len([r for r in caplog.records if "rejected" in r.getMessage()]) == 3
    assert world.states() == [LedgerState.REJECTED] * 3
    assert world.landed() == [] and world.jobs.list_jobs() == []  # rejected mail makes no jobs


def test_rejected_mail_is_moved_when_a_folder_is_configured(world: World) -> None:
    world.configure(rejected_folder="Inbox/Rejected")
    world.add(file_attachment("a.csv", b"1"), sender="x@evil.example")
    world.user.add_message(FOLDER, subject="plain text", sender="ops@acme.example")
    world.poll()
    assert sorted(m.subject for m in world.user.in_folder("Inbox/Rejected")) == ["Invoices", "plain text"]
    assert world.user.in_folder(FOLDER) == []


def test_a_failed_rejection_move_is_retried_without_logging_again(world: World,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    world.configure(rejected_folder="Inbox/Rejected")
    world.add(file_attachment("a.csv", b"1"), sender="x@evil.example")
    world.mail.fail("move")
    with caplog.at_level(logging.WARNING):
        world.poll()
        world.poll()
    assert [m.sender for m in world.user.in_folder("Inbox/Rejected")] == ["x@evil.example"]
    assert len([r for r in caplog.records if "rejected:" in r.getMessage()]) == 1


def test_inline_and_item_attachments_follow_the_rules(world: World) -> None:
    world.configure(attachment_globs=["*.csv", "*.png", "*.eml"])
    world.add(file_attachment("logo.png", b"png", inline=True), item_attachment("", b"Subject: x\r\n\r\n"),
              file_attachment("a.csv", b"1"))
    world.poll()
    assert [m.file_name for m in world.landed()] == ["a.csv"]
    world.configure(attachment_globs=["*.csv", "*.png", "*.eml"], inline_images="keep", item_attachments="keep")
    world.add(file_attachment("logo.png", b"png", inline=True), item_attachment("", b"Subject: x\r\n\r\n"))
    world.poll()
    assert sorted(m.file_name for m in world.landed())[1:] == ["attachment.eml", "logo.png"]


def test_server_side_filters_follow_the_configuration(world: World) -> None:
    seen: list[dict[str, Any]] = []
    original = world.mail.list_messages

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return original(*args, **kwargs)

    world.mail.list_messages = spy  # type: ignore[method-assign]
    world.poll()
    world.configure(after_action="move", move_to=f"{FOLDER}/Done", inline_images="keep")
    world.poll()
    world.configure(rejected_folder="Inbox/Rejected")
    world.poll()
    assert [(k["unread_only"], k["with_attachments"]) for k in seen] == [(True, True), (False, False),
                                                                        (True, False)]


def test_over_size_attachments_are_refused_once_and_the_rest_lands(world: World) -> None:
    world.configure(max_attachment_bytes=10)
    msg = world.add(file_attachment("big.csv", b"x" * 11), file_attachment("ok.csv", b"y"))
    summary = world.poll()
    assert (summary.landed, summary.skipped_reasons) == (1, {"over_size": 1})
    (refused,) = [j for j in world.jobs.list_jobs() if j.file_name == "big.csv"]
    assert refused.status is JobStatus.FAILED and "max_attachment_bytes" in refused.error
    assert msg.is_read
    assert ("open_attachment", msg.id, msg.attachments[0].id) not in world.mail.calls  # never downloaded


# --- after-actions ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("action", "read", "moved"), [("mark_read", True, False), ("move", False, True),
                                                       ("both", True, True)])
def test_after_actions(action: str, read: bool, moved: bool) -> None:
    world = World(after_action=action, **({"move_to": f"{FOLDER}/Done"} if moved else {}))
    msg = world.add(file_attachment("a.csv", b"1"))
    world.poll()
    assert msg.is_read is read
    assert [m.subject for m in world.user.in_folder(f"{FOLDER}/Done")] == (["Invoices"] if moved else [])


def test_a_failed_after_action_is_retried_without_landing_again(world: World) -> None:
    msg = world.add(file_attachment("a.csv", b"1"))
    world.mail.fail("mark_read", error=DependencyUnavailableError("graph", "mark read: HTTP 503"))
    first = world.poll()
    assert first.landed == 1 and not msg.is_read and world.states() == [LedgerState.LANDED]
    second = world.poll()
    assert (second.landed, second.skipped_reasons) == (0, {"already_ingested": 1})
    assert msg.is_read and world.states() == [LedgerState.DONE] and len(world.landed()) == 1


def test_missing_move_to_folder_fails_the_poll_before_landing(world: World) -> None:
    world.configure(after_action="move", move_to="Inbox/Nowhere")
    world.add(file_attachment("a.csv", b"1"))
    summary = world.poll()
    assert summary.status == "failed" and "Inbox/Nowhere" in summary.error and "move_to" in summary.error
    assert world.landed() == []


# --- failures and recovery ---------------------------------------------------------------------------------


def test_download_failure_midway_resumes_without_duplicates(world: World) -> None:
    atts = [file_attachment(f"p{i}.csv", bytes([65 + i]) * 300_000) for i in range(3)]
    msg = world.add(*atts)
    world.mail.chunk_size = 64 * 1024
    world.mail.fail("open_attachment", key=atts[1].id, after_bytes=100_000)
    first = world.poll()
    assert (first.status, first.landed, first.failed, first.failed_reasons) == ("partial", 1, 1,
                                                                                 {"graph_unavailable": 1})
    assert not msg.is_read
    assert len(world.blobs.list_blobs("inbound", f"{PARTNER}/")) == 1  # nothing half-written is visible
    assert world.breakers.get("mail", PARTNER).failures == 1
    second = world.poll()
    assert (second.status, second.landed) == ("ok", 2)
    landed = {m.file_name: m for m in world.landed()}
    assert len(world.landed()) == 3 and all(world.blob(landed[a.name]) == a.data for a in atts)
    assert msg.is_read and world.states() == [LedgerState.DONE] * 3
    assert world.breakers.get("mail", PARTNER).failures == 0
    assert len([c for c in world.mail.calls if c[0] == "open_attachment" and c[2] == atts[0].id]) == 1


def test_a_crashed_poller_claim_is_taken_over_after_the_lease(world: World) -> None:
    att = file_attachment("a.csv", b"1")
    world.add(att)
    original = world.mail.open_attachment

    def crash(*args: Any) -> Any:
        raise Crash()

    world.mail.open_attachment = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        world.poll()
    world.mail.open_attachment = original  # type: ignore[method-assign]
    assert world.states() == [LedgerState.CLAIMED]
    assert world.poll().skipped_reasons == {"claimed_elsewhere": 1}  # the lease still runs
    world.clock.advance(minutes=11)
    summary = world.poll()
    assert summary.landed == 1 and world.states() == [LedgerState.DONE] and len(world.landed()) == 1


def test_a_mail_that_vanishes_midway_is_skipped(world: World) -> None:
    msg = world.add(file_attachment("a.csv", b"1"))
    world.mail.fail("list_attachments", key=msg.id, error=NotFoundError("message gone"))
    assert world.poll().skipped_reasons == {"vanished": 1}


def test_graph_outage_fails_the_poll_and_opens_the_breaker(world: World) -> None:
    world.add(file_attachment("a.csv", b"1"))
    world.mail.fail("list_messages", times=3, error=DependencyUnavailableError("graph", "list messages: HTTP 503"))
    for _ in range(3):
        assert world.poll(breaker_threshold=3).status == "failed"
    blocked = world.poll(breaker_threshold=3)
    assert blocked.status == "circuit_open" and blocked.retry_at is not None
    world.clock.advance(minutes=6)
    probe = world.poll(breaker_threshold=3)  # half-open: one probe, which succeeds and closes it
    assert (probe.status, probe.landed) == ("ok", 1)
    assert world.breakers.get("mail", PARTNER).state is BreakerState.CLOSED


def test_bad_credentials_and_missing_folder_are_clear_failures(world: World) -> None:
    world.mail.fail("resolve_folder", error=ConfigurationError("folder: Graph refused the app's credentials"))
    assert "credentials" in world.poll().error
    world.configure(folder="Inbox/Typo")
    summary = world.poll()
    assert summary.status == "failed" and "'Inbox/Typo' (folder) does not exist" in summary.error


def test_max_messages_defers_the_rest_oldest_first(world: World) -> None:
    for i in range(5):
        world.add(file_attachment(f"f{i}.csv", b"x"))
    assert world.poll(max_messages=2, page_size=2).landed == 2
    assert sorted(m.file_name for m in world.landed()) == ["f0.csv", "f1.csv"]
    assert world.poll(max_messages=10, page_size=2).landed == 3


def test_progress_is_reported(world: World) -> None:
    world.add(file_attachment("a.csv", b"1"))
    seen: list[PollProgress] = []
    world.poll(progress=seen.append)
    phases = [p.phase for p in seen]
    assert phases[0] == "connecting" and "listing" in phases and phases[-1] == "done" and seen[-1].landed == 1


def test_disabled_and_unknown_partners() -> None:
    world = World()
    world.services.overrides["catalog"] = parse_catalog({"partners": [{"id": PARTNER, "name": "Acme",
                                                                        "enabled": False, "mailbox": {
        "mailbox": BOX, "sender_allow": ["*@acme.test"], "auth": AUTH}}]}, env={})
    assert world.poll().status == "disabled"
    with pytest.raises(NotFoundError):
        poll_mailbox(world.services, "nobody")


# --- dispatch and scheduling ----------------------------------------------------------------------------------


def test_poll_requests_with_channel_mail_are_dispatched_here(world: World) -> None:
    world.add(file_attachment("a.csv", b"1"))
    summary = run_poll_request(world.services, PollRequest(partner=PARTNER, channel="mail", requested_by="cli"))
    assert (summary.channel, summary.landed, summary.requested_by) == ("mail", 1, "cli")


def test_the_mail_timer_enqueues_due_mailbox_partners(world: World) -> None:
    world.configure(schedule="0 */5 * * * *")
    due = schedule_polls(world.services, now=datetime(2024, 5, 1, 10, 5, 0, tzinfo=UTC), channel="mail")
    not_due = schedule_polls(world.services, now=datetime(2024, 5, 1, 10, 6, 0, tzinfo=UTC), channel="mail")
    assert (due, not_due) == ([PARTNER], [])
    (request,) = world.queues.messages("poll-requests")
    assert (request["partner"], request["channel"], request["requested_by"]) == (PARTNER, "mail", "timer")


def test_http_poll_and_mail_timer_triggers(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import azure.functions as func

    from functions import mail, polling

    monkeypatch.setattr(polling, "get_services", lambda: world.services)
    monkeypatch.setattr(mail, "get_services", lambda: world.services)
    world.add(file_attachment("a.csv", b"1"))
    api = http_caller(polling.api_partner_poll)
    req = func.HttpRequest(method="POST", url=f"/api/partners/{PARTNER}/poll", body=b"",
                           route_params={"partner": PARTNER}, params={"wait": "true"})
    resp = api(req)
    body = json.loads(resp.get_body())
    assert (resp.status_code, body["channel"], body["landed"], body["requested_by"]) == (200, "mail", 1, "api")
    queued = api(func.HttpRequest(method="POST", url=f"/api/partners/{PARTNER}/poll", body=b"",
                                  route_params={"partner": PARTNER}, params={"channel": "mail"}))
    assert queued.status_code == 202 and json.loads(queued.get_body())["channel"] == "mail"

    world.configure(schedule="0 * * * * *")
    mail.mail_schedule.build().get_user_function()(None)
    requests = [m for m in world.queues.messages("poll-requests") if m["requested_by"] == "timer"]
    assert [(m["partner"], m["channel"]) for m in requests] == [(PARTNER, "mail")]
