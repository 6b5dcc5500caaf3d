"""Email delivery and its status checks: the real msgraph-sdk against the Graph test server, records in Azurite.

sendMail inline, a draft + upload session with its chunks checked, the attachment's bytes equal to the blob's,
429 honoured, over the limit refused or sent as a link, a crash between send and record (WHARF_FAULT) never
sending twice, and delivery reports in the sender's inbox moving the right delivery on, once."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.adapters.graph_mail import GraphMailClient, GraphMailSenders
from shared.adapters.secrets import LocalSecrets
from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.delivery import DeliveryState, DeliveryStep
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.faults import EXIT_CODE
from shared.services.deliver import DeliveryRefusedError
from shared.services.deliver_email import LINK, EmailOptions, deliver_email
from shared.services.delivery_status import check_delivery_status, check_mailbox
from shared.settings import Settings
from tests.graph_server import TEST_TOKEN, GraphTestServer
from tests.graph_server.reports import exchange_ndr, exchange_receipt, plain_mail, rfc3464

pytestmark = [pytest.mark.graph, pytest.mark.azurite, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MIB = 1024 * 1024
AUTH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret_secret": "graph-send-secret"}


@pytest.fixture(scope="module")
def services(azurite: str) -> Iterator[Services]:
    """One set of tables for the module (every test uses its own partner, jobs and mailbox): the per-test tables
    of the shared fixture cost seconds each on a loaded machine."""
    from azure.data.tables import TableServiceClient

    from shared.bootstrap import build_services
    from shared.resources import TABLES

    tag = uuid.uuid4().hex[:12]
    settings = Settings(AzureWebJobsStorage=azurite, WHARF_TABLE_PREFIX=f"em{tag}", POLL_QUEUE=f"poll-{tag}",
                        LANDED_QUEUE=f"landed-{tag}", WHARF_EVENTS_QUEUE=f"events-{tag}")
    svc = build_services(settings)
    svc.blobs.ensure_containers(["staging"])
    svc.jobs.ensure_tables()
    yield svc
    tables = TableServiceClient.from_connection_string(settings.storage_connection_string or "")
    for name in TABLES:
        tables.delete_table(f"{settings.table_prefix}{name}")


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphTestServer]:
    with GraphTestServer() as server:
        yield server


def senders(graph: GraphTestServer) -> GraphMailSenders:
    return GraphMailSenders(LocalSecrets(env={}), base_url=graph.base_url, local_token=TEST_TOKEN, retry_delay=0.05,
                            max_retries=3, backoff_factor=0.05, jitter=0.05, max_retry_wait=5)


class EmailOut:
    """A job of a fresh partner whose default route emails its output from a fresh sender mailbox."""

    def __init__(self, services: Services, graph: GraphTestServer, **dest: Any) -> None:
        self.services, self.graph = services, graph
        tag = uuid.uuid4().hex[:10]
        self.partner = f"src{tag}"
        self.sender = f"s{tag}@wharf.test"
        self.user = graph.add_user(self.sender)
        destination = {"kind": "email", "to": ["ops@partner.example"], "mailbox": self.sender, "auth": AUTH,
                       "subject": "{partner}: {name} ({job_id})", **dest}
        self.document = {"partners": [{"id": self.partner, "name": "source", "routes": [
            {"name": "out", "default": True, "destinations": [destination]}]}]}
        self.catalog = parse_catalog(self.document, env={})
        services.overrides["catalog"] = self.catalog
        services.overrides["mail_senders"] = senders(graph)
        self.job_id = new_job_id()
        services.jobs.append(self.job_id, EventType.CREATED, {"partner": self.partner, "file_name": "orders.csv",
                                                              "source": "test"})
        self.opts = EmailOptions(sent_lookups=2, sent_lookup_wait=0.05, sleep=lambda s: None)

    def stage(self, data: bytes, name: str = "orders.csv", **extra: Any) -> None:
        info = self.services.blobs.upload_stream("staging", f"{self.partner}/{self.job_id}/{name}", [data])
        self.output = {"container": "staging", "path": info.path, "name": name, "bytes": info.size,
                       "sha256": info.sha256, **extra}

    @property
    def dest(self) -> dict[str, Any]:
        return self.catalog.get(self.partner).routes[0].destinations[0].model_dump(mode="json")

    @property
    def ref(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "partner": self.partner, "route": "out", "index": 0}

    def deliver(self, **opts: Any) -> dict[str, Any]:
        options = EmailOptions(**{**self.opts.__dict__, **opts})
        return deliver_email(self.services, self.services.jobs.get_job(self.job_id), self.ref, self.output,
                             self.dest, opts=options)

    def record(self) -> Any:
        return self.services.deliveries.get(self.job_id, 0)

    def sent(self) -> list[Any]:
        return self.graph.sent_by(self.record().message_id)


def test_a_small_file_goes_inline_in_one_sendMail(services: Services, graph: GraphTestServer) -> None:
    out = EmailOut(services, graph, cc=["audit@partner.example"], receipt=True)
    data = b"order,amount\n" + b"PO-1,10.00\n" * 1000
    out.stage(data)
    result = out.deliver()

    rec = out.record()
    assert (rec.state, rec.step, rec.attempts, rec.kind) == (DeliveryState.SENT, DeliveryStep.NONE, 1, "email")
    assert result["method"] == "sendMail inline" and result["message_id"] == rec.message_id
    [sent] = out.sent()
    assert sent.via == "sendMail" and sent.message.to == ["ops@partner.example"]
    assert sent.message.cc == ["audit@partner.example"] and sent.message.receipt_requested
    assert sent.message.subject == f"{out.partner}: orders.csv ({out.job_id})"
    [att] = sent.message.attachments
    assert (att.name, att.size, att.sha256()) == ("orders.csv", len(data), hashlib.sha256(data).hexdigest())
    assert len(graph.log(rf"POST /v1.0/users/{out.sender}/sendMail$")) == 1
    assert graph.log(rf"/users/{out.sender}/messages") == []  # no draft, no upload session
    assert [t.status for t in services.jobs.transfers(out.job_id)] == ["SENT"]
    again = out.deliver()
    assert again["already_sent"] and len(out.sent()) == 1


def test_a_large_file_goes_through_a_draft_and_an_upload_session_in_checked_chunks(
        services: Services, graph: GraphTestServer) -> None:
    out = EmailOut(services, graph, html_body="<p>Orders for {partner}</p>")
    data = os.urandom(5 * MIB + 123)
    out.stage(data, name="orders.bin")
    result = out.deliver(chunk_size=MIB)

    assert result["method"] == "draft + upload session"
    [sent] = out.sent()
    assert sent.via == "draft" and sent.message.body_type == "html" and "Orders for" in sent.message.body
    [att] = sent.message.attachments
    assert att.size == len(data) and att.sha256() == hashlib.sha256(data).hexdigest() == out.output["sha256"]
    [session] = [s for s in graph.sessions.values() if s.user is out.user]
    total = len(data)
    expected = [f"{a}-{min(a + MIB, total) - 1}/{total}" for a in range(0, total, MIB)]
    assert session.puts == expected and session.done
    puts = graph.log(r"^PUT /upload/")
    mine = [r for r in puts if r.path.endswith(session.id)]
    assert [r.status for r in mine] == [200] * (len(expected) - 1) + [201]
    assert [r.headers["content-range"] for r in mine] == [f"bytes {e}" for e in expected]
    assert out.user.in_folder("Drafts") == []  # the draft was sent (moved to Sent Items)


def test_the_test_server_checks_upload_ranges_as_graph_does(graph: GraphTestServer) -> None:
    user = graph.add_user(f"r{uuid.uuid4().hex[:8]}@wharf.test")
    with GraphMailClient.with_static_token(graph.base_url, TEST_TOKEN) as client:
        from shared.ports import OutgoingMail

        draft = client.create_draft(user.address, OutgoingMail("<x.1@wharf.test>", "s", "b", ("a@b.example",)))
    created = httpx.post(f"{graph.base_url}/users/{user.address}/messages/{draft}/attachments/createUploadSession",
                         headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                         json={"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": 10}})
    url = created.json()["uploadUrl"]

    def put(body: bytes, content_range: str, **headers: str) -> int:
        return httpx.put(url, content=body, headers={"Content-Range": content_range, **headers}).status_code

    assert put(b"12345", "bytes 0-4/11") == 400  # total is not the session's size
    assert put(b"12345", "bytes 1-5/10") == 416  # not the next expected byte
    assert put(b"1234", "bytes 0-4/10") == 400  # the range and the body's length differ
    assert put(b"12345", "0-4/10") == 400  # malformed
    assert put(b"12345", "bytes 0-4/10", Authorization=f"Bearer {TEST_TOKEN}") == 401  # no bearer on upload URLs
    assert put(b"12345", "bytes 0-4/10") == 200
    assert put(b"67890", "bytes 5-9/10") == 201
    too_big = httpx.post(f"{graph.base_url}/users/{user.address}/messages/{draft}/attachments/createUploadSession",
                         headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                         json={"AttachmentItem": {"attachmentType": "file", "name": "f.bin", "size": 151 * MIB}})
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "ErrorAttachmentSizeLimitExceeded"


def test_429_retry_after_is_honoured_on_sendMail_and_on_upload_puts(services: Services,
                                                                    graph: GraphTestServer) -> None:
    small = EmailOut(services, graph)
    small.stage(b"a,b\n1,2\n")
    route = rf"POST /v1.0/users/{small.sender}/sendMail$"
    graph.fail(route, 429, retry_after="1")
    small.deliver()
    log = graph.log(route)
    assert [r.status for r in log] == [429, 202]
    assert log[1].started - log[0].finished >= 1.0  # the server's Retry-After, measured by the server
    assert len(small.sent()) == 1

    large = EmailOut(services, graph)
    large.stage(os.urandom(3 * MIB + 5), name="big.bin")
    graph.clear_log()
    graph.fail(r"^PUT /upload/", 429, nth=2, retry_after="1")
    large.deliver(chunk_size=MIB)
    puts = graph.log(r"^PUT /upload/")
    assert [r.status for r in puts] == [200, 429, 200, 200, 201]
    assert puts[2].started - puts[1].finished >= 1.0
    [sent] = large.sent()
    assert sent.message.attachments[0].sha256() == large.output["sha256"]
    graph.clear_faults()


def test_over_graphs_limit_is_refused_or_sent_as_a_link(services: Services, graph: GraphTestServer) -> None:
    refused = EmailOut(services, graph)
    refused.stage(b"x")
    refused.output["bytes"] = 151 * MIB  # what the job recorded; nothing is read
    with pytest.raises(DeliveryRefusedError, match=r"over Graph's .* attachment limit.*attach: link"):
        refused.deliver()
    rec = refused.record()
    assert rec.state is DeliveryState.FAILED and "attach: link" in rec.error and refused.sent() == []

    linked = EmailOut(services, graph, attach="link", link_expiry_hours=2)
    data = b"a,b\n" * 100
    linked.stage(data)
    linked.output["bytes"] = 151 * MIB
    result = linked.deliver()
    assert result["method"].startswith(LINK) and "service-sas" in result["method"]
    [sent] = linked.sent()
    assert sent.message.attachments == [] and "local stand-in" in sent.message.body
    url = next(line for line in sent.message.body.splitlines() if line.startswith("http"))
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - Azurite on 127.0.0.1
        assert resp.read() == data
    assert "sig=" not in linked.record().verified and "sig=" not in linked.record().error


def test_an_email_destination_without_an_app_registration_is_a_catalogue_error() -> None:
    from shared.catalog import CatalogError

    doc = {"partners": [{"id": "acme", "name": "A", "routes": [{"name": "r", "default": True, "destinations": [
        {"kind": "email", "to": ["a@b.example"], "mailbox": "out@contoso.example"}]}]}]}
    with pytest.raises(CatalogError, match=r"auth.*no partner's mailbox block reads out@contoso\.example"):
        parse_catalog(doc, env={})
    doc["partners"][0]["routes"][0]["destinations"][0]["to"] = ["not-an-address"]
    with pytest.raises(CatalogError, match="to"):
        parse_catalog(doc, env={})


# --- crashes between send and record (WHARF_FAULT, a real process death) ---------------------------------


def _child(out: EmailOut, settings: Settings, tmp: Path, fault: str) -> subprocess.CompletedProcess[str]:
    catalog = tmp / f"{out.partner}.json"
    catalog.write_text(json.dumps(out.document))
    args = json.dumps({"job_id": out.job_id, "ref": out.ref, "output": out.output, "dest": out.dest})
    code = ("import json, sys\n"
            "from shared.bootstrap import build_services\n"
            "from shared.services.deliver_email import deliver_email\n"
            "a = json.loads(sys.argv[1]); s = build_services()\n"
            "deliver_email(s, s.jobs.get_job(a['job_id']), a['ref'], a['output'], a['dest'])\n")
    env = {**os.environ, "AzureWebJobsStorage": settings.storage_connection_string or "",
           "WHARF_TABLE_PREFIX": settings.table_prefix, "WHARF_CATALOG_PATH": str(catalog),
           "GRAPH_BASE_URL": out.graph.base_url, "WHARF_GRAPH_LOCAL_TOKEN": TEST_TOKEN, "WHARF_FAULT": fault,
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-W", "ignore", "-c", code, args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize(("size", "via"), [(2000, "sendMail"), (3 * MIB + 1, "draft")])
def test_killed_after_the_send_the_retry_finds_it_in_sent_items_and_does_not_send_again(
        services: Services, graph: GraphTestServer, tmp_path: Path, size: int, via: str) -> None:
    out = EmailOut(services, graph)
    out.stage(os.urandom(size), name="orders.bin")
    run = _child(out, services.settings, tmp_path, "email.after_send")
    assert run.returncode == EXIT_CODE, run.stderr[-2000:]
    assert "WHARF_FAULT: killed at email.after_send" in run.stderr
    rec = out.record()
    assert (rec.state, rec.step) == (DeliveryState.SENDING, DeliveryStep.SUBMITTING)
    assert [s.via for s in out.sent()] == [via]

    result = out.deliver()
    assert result["delivery"] == "SENT" and not result["already_sent"]
    assert [s.via for s in out.sent()] == [via]  # once
    assert out.record().attempts == 2
    assert any("found in Sent Items" in entry.message for entry in services.jobs.logs(out.job_id))


def test_killed_after_creating_the_draft_the_retry_deletes_it_and_sends_once(
        services: Services, graph: GraphTestServer, tmp_path: Path) -> None:
    out = EmailOut(services, graph)
    out.stage(os.urandom(3 * MIB + 7), name="orders.bin")
    run = _child(out, services.settings, tmp_path, "email.after_draft")
    assert run.returncode == EXIT_CODE, run.stderr[-2000:]
    [orphan] = out.user.in_folder("Drafts")
    assert orphan.internet_message_id == out.record().message_id and out.record().draft_id == ""

    out.deliver()
    assert out.user.in_folder("Drafts") == []  # the orphan deleted, the new draft sent
    [sent] = out.sent()
    assert sent.message.id != orphan.id and sent.message.attachments[0].sha256() == out.output["sha256"]


def test_a_complete_draft_left_before_its_send_is_reused(services: Services, graph: GraphTestServer) -> None:
    out = EmailOut(services, graph)
    out.stage(os.urandom(3 * MIB + 9), name="orders.bin")
    route = rf"POST /v1.0/users/{out.sender}/messages/.*/send$"
    graph.fail(route, 500)  # the send fails once: the draft stays, complete, and the record says SUBMITTING
    with pytest.raises(Exception, match="500"):
        out.deliver()
    [draft] = out.user.in_folder("Drafts")
    assert out.record().step is DeliveryStep.SUBMITTING and out.record().draft_id == draft.id
    out.deliver()
    [sent] = out.sent()
    assert len(graph.log(rf"/users/{out.sender}/messages/.*/createUploadSession$")) == 1  # not uploaded again
    assert sent.message.attachments[0].sha256() == out.output["sha256"]


# --- status checks -------------------------------------------------------------------------------------


def _sent_job(services: Services, graph: GraphTestServer, sender: EmailOut | None = None) -> EmailOut:
    if sender is None:
        out = EmailOut(services, graph)
    else:  # another job of the same partner, sending from the same mailbox
        out = copy.copy(sender)
        out.job_id = new_job_id()
        services.jobs.append(out.job_id, EventType.CREATED, {"partner": out.partner, "file_name": "x.csv",
                                                             "source": "test"})
    out.stage(b"a,b\n1,2\n")
    out.deliver()
    services.jobs.append(out.job_id, EventType.COMPLETED, {"routes": 1})
    return out


def test_reports_in_the_sender_inbox_move_the_right_deliveries_once(
        services: Services, graph: GraphTestServer, caplog: pytest.LogCaptureFixture) -> None:
    bounced = _sent_job(services, graph)
    delayed = _sent_job(services, graph, bounced)
    delivered = _sent_job(services, graph, bounced)
    box, user = bounced.sender, bounced.user
    user.add_mime(rfc3464(bounced.record().message_id, to=box))
    user.add_mime(exchange_ndr(delayed.record().message_id, to=box, action="delayed", status="4.4.7",
                               diagnostic="Message delayed"))
    user.add_mime(exchange_receipt(delivered.record().message_id, to=box))
    user.add_mime(rfc3464("<someone.else@elsewhere.example>", to=box))  # a report about mail Wharf did not send
    user.add_mime(rfc3464(f"<wharf.{bounced.job_id}.000.000000000000@wharf.test>", to=box))  # forged: wrong id
    user.add_mime(plain_mail(to=box, in_reply_to=bounced.record().message_id))  # a human's reply: no report

    with caplog.at_level(logging.WARNING, logger="shared.services.delivery_status"):
        [summary] = check_delivery_status(services)
        again = check_mailbox(services, box, None)

    assert sorted((m["job_id"], m["outcome"]) for m in summary.matched) == sorted(
        [(bounced.job_id, "bounced"), (delayed.job_id, "delayed"), (delivered.job_id, "delivered")])
    assert (summary.unmatched, summary.not_reports) == (2, 1)
    rec = bounced.record()
    assert (rec.state, rec.status_code) == (DeliveryState.BOUNCED, "5.1.1")
    assert "Recipient address rejected" in rec.status_detail
    assert delayed.record().state is DeliveryState.DELAYED and delayed.record().status_code == "4.4.7"
    assert delivered.record().state is DeliveryState.DELIVERED
    job = services.jobs.get_job(bounced.job_id)
    assert job.status.value == "COMPLETED" and job.counts.get("deliveries_bounced") == 1  # visible after completion
    [event] = [e for e in services.jobs.events(bounced.job_id) if e.type is EventType.DELIVERY_BOUNCED]
    assert event.data["status"] == "5.1.1" and event.data["recipients"][0]["recipient"] == "partner@example.net"

    assert again.matched == [] and again.already_seen == 6  # every report once across polls
    assert len([e for e in services.jobs.events(bounced.job_id) if e.type is EventType.DELIVERY_BOUNCED]) == 1
    unmatched = [r for r in caplog.records if "matches no delivery" in r.getMessage()]
    assert len(unmatched) == 2  # logged once each, at the first check only
    assert len(user.in_folder("Inbox")) == 6  # nothing moved or deleted; unmatched ones left unread
    assert not next(m for m in user.in_folder("Inbox") if "someone.else" in (m.mime or b"").decode()).is_read

    # A later bounce of the delayed one moves it on; a later delay never moves a bounce back.
    user.add_mime(exchange_ndr(delayed.record().message_id, to=box))
    user.add_mime(exchange_ndr(bounced.record().message_id, to=box, action="delayed", status="4.4.7"))
    third = check_mailbox(services, box, None)
    assert len(third.matched) == 2
    assert delayed.record().state is DeliveryState.BOUNCED and delayed.record().status_code == "5.1.10"
    assert bounced.record().state is DeliveryState.BOUNCED and bounced.record().status_code == "5.1.1"


def test_a_check_of_a_mailbox_graph_refuses_is_reported_not_raised(services: Services,
                                                                   graph: GraphTestServer) -> None:
    out = _sent_job(services, graph)
    graph.fail(rf"GET /v1.0/users/{out.sender}/mailFolders/inbox$", 403)
    [summary] = check_delivery_status(services)
    assert "permission" in summary.error and summary.matched == []
    graph.clear_faults()


def test_sender_auth_is_borrowed_from_the_partner_that_reads_the_mailbox() -> None:
    from shared.catalog.model import email_destinations, sender_auth

    doc = {"partners": [
        {"id": "reader", "name": "R", "mailbox": {"mailbox": "ops@contoso.example", "sender_allow": ["*@x.example"],
                                                  "auth": AUTH}},
        {"id": "acme", "name": "A", "routes": [{"name": "r", "default": True, "destinations": [
            {"kind": "email", "to": ["a@b.example"], "mailbox": "OPS@contoso.example"}]}]}]}
    catalog = parse_catalog(doc, env={})
    [(_, _, dest)] = list(email_destinations(catalog.partners))
    assert sender_auth(catalog.partners, dest).client_id == AUTH["client_id"]


def test_a_report_gone_before_it_is_read_is_recorded_gone_and_not_read_again(services: Services,
                                                                             graph: GraphTestServer) -> None:
    out = _sent_job(services, graph)
    report = out.user.add_mime(rfc3464(out.record().message_id, to=out.sender))
    graph.fail(rf"GET /v1.0/users/{out.sender}/messages/{report.id}/\$value$", 404)
    first = check_mailbox(services, out.sender, None)
    assert (first.matched, first.unmatched, first.not_reports) == ([], 0, 0)
    [entry] = services.ledger.entries(f"mail-status:{out.sender}")
    assert entry.state.value == "GONE"
    second = check_mailbox(services, out.sender, None)
    assert second.already_seen == 1 and out.record().state is DeliveryState.SENT
    graph.clear_faults()


def test_repeated_graph_outages_open_the_outbound_email_breaker_and_not_the_inbound_poll_s(
        services: Services, graph: GraphTestServer) -> None:
    from datetime import timedelta

    from shared.domain.errors import DependencyUnavailableError
    from shared.domain.jobs import utcnow
    from shared.domain.ledger import BreakerState
    from shared.services import poll_mailbox
    from shared.services.deliver import DeliveryUnavailableError
    from shared.services.deliver_email import CHANNEL

    out = EmailOut(services, graph)
    out.stage(b"a,b\n1,2\n")
    route = rf"POST /v1.0/users/{out.sender}/sendMail$"
    graph.fail(route, 503, times=1000)
    now = [utcnow()]
    opts = {"breaker_threshold": 2, "breaker_cooldown": timedelta(minutes=5), "clock": lambda: now[0]}
    for _ in range(2):
        with pytest.raises(DependencyUnavailableError, match="503"):
            out.deliver(**opts)
    tried = len(graph.log(route))
    assert services.breakers.get(CHANNEL, out.sender).state is BreakerState.OPEN
    with pytest.raises(DeliveryUnavailableError, match=r"circuit email-out is open for sender .*503"):
        out.deliver(**opts)
    assert len(graph.log(route)) == tried  # nothing sent while open
    assert out.record().state is DeliveryState.FAILED and "circuit email-out is open" in out.record().error
    assert services.breakers.get(poll_mailbox.CHANNEL, out.partner).state is BreakerState.CLOSED
    assert services.breakers.get(poll_mailbox.CHANNEL, out.sender).state is BreakerState.CLOSED

    graph.clear_faults()
    now[0] += timedelta(minutes=6)  # after the cooldown one probe goes through and closes it
    assert out.deliver(**opts)["delivery"] == "SENT" and len(out.sent()) == 1
    assert services.breakers.get(CHANNEL, out.sender).state is BreakerState.CLOSED
