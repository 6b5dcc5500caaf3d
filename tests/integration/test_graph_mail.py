"""GraphMailClient (the real msgraph-sdk) against the Graph test server: contract, throttling, faults, streaming."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from shared.adapters.graph_mail import GraphMailboxes, GraphMailClient, StaticTokenProvider
from shared.adapters.secrets import LocalSecrets
from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.errors import ConfigurationError, DependencyUnavailableError
from shared.domain.jobs import Job
from shared.domain.ledger import BreakerState, LedgerEntry, LedgerState
from shared.domain.sanitize import decode_original
from shared.services.poll_mailbox import poll_mailbox
from shared.services.polls import PollOptions, PollSummary
from tests.graph_server import (
    TEST_TOKEN,
    Attachment,
    GraphTestServer,
    Message,
    User,
    file_attachment,
    item_attachment,
)
from tests.mailbox_contract import MailboxContract

pytestmark = [pytest.mark.graph, pytest.mark.azurite, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def graph_server() -> Iterator[GraphTestServer]:
    with GraphTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def client(graph_server: GraphTestServer) -> Iterator[GraphMailClient]:
    c = GraphMailClient.with_static_token(graph_server.base_url, TEST_TOKEN, retry_delay=0.05, max_retries=3,
                                          backoff_factor=0.05, jitter=0.05, max_retry_wait=5, chunk_size=256 * 1024)
    yield c
    c.close()


@pytest.fixture
def mailbox(client: GraphMailClient) -> GraphMailClient:
    return client


@pytest.fixture
def user(graph_server: GraphTestServer) -> Iterator[User]:
    yield graph_server.add_user(f"u{uuid.uuid4().hex[:8]}@wharf.test")
    graph_server.clear_faults()


class TestGraphMailClient(MailboxContract):
    pass


# --- throttling and faults -------------------------------------------------------------------------


def test_429_waits_retry_after_then_succeeds(client: GraphMailClient, graph_server: GraphTestServer,
                                             user: User) -> None:
    user.add_message("Inbox/T", subject="one")
    folder_id = client.resolve_folder(user.address, "Inbox/T")
    route = rf"GET /v1.0/users/{user.address}/mailFolders/{folder_id}/messages$"
    graph_server.fail(route, 429, retry_after="1")
    graph_server.fail(route, 429, nth=2, retry_after="2")

    assert [m.subject for m in client.list_messages(user.address, folder_id)] == ["one"]

    log = graph_server.log(route)
    assert [r.status for r in log] == [429, 429, 200]
    assert [r.retry_attempt for r in log] == ["", "1", "2"]
    # The gaps are the server's Retry-After (measured by the server, not by this test's clock).
    assert 1.0 <= log[1].started - log[0].finished < 1.8
    assert 2.0 <= log[2].started - log[1].finished < 2.8


def test_retry_after_above_the_cap_is_not_waited(graph_server: GraphTestServer, user: User) -> None:
    user.add_message("Inbox/C", subject="one")
    with GraphMailClient.with_static_token(graph_server.base_url, TEST_TOKEN, retry_delay=0.05,
                                           max_retry_wait=1) as capped:
        folder_id = capped.resolve_folder(user.address, "Inbox/C")
        route = rf"GET .*/mailFolders/{folder_id}/messages$"
        graph_server.fail(route, 429, retry_after="120")
        with pytest.raises(DependencyUnavailableError, match=r"429.*retry after 120s"):
            list(capped.list_messages(user.address, folder_id))
        assert [r.status for r in graph_server.log(route)] == [429]  # no retry: the poll backs off instead


def test_503_is_retried_with_backoff(client: GraphMailClient, graph_server: GraphTestServer, user: User) -> None:
    msg = user.add_message("Inbox", attachments=[file_attachment("a.csv", b"1,2\n")])
    route = rf"GET .*/messages/{msg.id}/attachments$"
    graph_server.fail(route, 503, times=2)
    assert [a.name for a in client.list_attachments(user.address, msg.id)] == ["a.csv"]
    assert [r.status for r in graph_server.log(route)] == [503, 503, 200]


def test_500_is_not_retried_and_maps_to_unavailable(client: GraphMailClient, graph_server: GraphTestServer,
                                                    user: User) -> None:
    msg = user.add_message("Inbox", attachments=[file_attachment("a.csv", b"1,2\n")])
    route = rf"GET .*/messages/{msg.id}/attachments$"
    graph_server.fail(route, 500)
    with pytest.raises(DependencyUnavailableError, match="HTTP 500"):
        client.list_attachments(user.address, msg.id)
    assert len(client.list_attachments(user.address, msg.id)) == 1


def test_retries_exhausted_is_unavailable(client: GraphMailClient, graph_server: GraphTestServer,
                                          user: User) -> None:
    msg = user.add_message("Inbox", attachments=[file_attachment("a.csv", b"1")])
    route = rf"GET .*/messages/{msg.id}/attachments$"
    graph_server.fail(route, 503, times=10)
    with pytest.raises(DependencyUnavailableError, match="503"):
        client.list_attachments(user.address, msg.id)
    assert len(graph_server.log(route)) == 4  # the first try and max_retries=3


def test_value_download_429_then_streams(client: GraphMailClient, graph_server: GraphTestServer,
                                         user: User) -> None:
    att = file_attachment("x.bin", size=2 * 1024 * 1024, seed=3)
    msg = user.add_message("Inbox", attachments=[att])
    route = rf"GET .*/attachments/{att.id}/\$value$"
    graph_server.fail(route, 429, retry_after="1")
    digest = hashlib.sha256()
    for chunk in client.open_attachment(user.address, msg.id, att.id):
        digest.update(chunk)
    assert digest.hexdigest() == att.sha256()
    log = graph_server.log(route)
    assert [r.status for r in log] == [429, 200]
    assert log[1].started - log[0].finished >= 1.0
    assert log[1].headers.get("accept") == "application/octet-stream"


def test_stream_cut_midway_raises_unavailable(client: GraphMailClient, graph_server: GraphTestServer,
                                              user: User) -> None:
    att = file_attachment("x.bin", size=3 * 1024 * 1024, seed=4)
    msg = user.add_message("Inbox", attachments=[att])
    graph_server.fail(rf"GET .*/attachments/{att.id}/\$value$", 0, truncate_after=1024 * 1024 + 5)
    received = 0
    with pytest.raises(DependencyUnavailableError):
        for chunk in client.open_attachment(user.address, msg.id, att.id):
            received += len(chunk)
    assert received < att.size
    # The next download is whole.
    assert sum(len(c) for c in client.open_attachment(user.address, msg.id, att.id)) == att.size


def test_requests_carry_the_token_and_encoded_ids(client: GraphMailClient, graph_server: GraphTestServer,
                                                  user: User) -> None:
    msg = user.add_message("Inbox", attachments=[file_attachment("a", b"1")])
    assert "=" in msg.id
    client.list_attachments(user.address, msg.id)
    last = graph_server.log(rf"/messages/{msg.id}/attachments$")[-1]
    assert last.authorized and last.status == 200
    # $select keeps contentBytes (the whole file, base64) out of the listing.
    assert "contentBytes" not in last.query["$select"] and "size" in last.query["$select"]


def test_wrong_token_is_a_configuration_error(graph_server: GraphTestServer, user: User) -> None:
    with GraphMailClient.with_static_token(graph_server.base_url, "wrong-token") as bad, \
            pytest.raises(ConfigurationError, match="401") as caught:
        bad.resolve_folder(user.address, "Inbox")
    assert "wrong-token" not in str(caught.value)


def test_static_token_only_for_loopback() -> None:
    with pytest.raises(ConfigurationError):
        GraphMailClient.with_static_token("https://graph.microsoft.com/v1.0", "t")
    with pytest.raises(ConfigurationError):
        StaticTokenProvider("t", ["graph.microsoft.com"])


# --- poll_mailbox: the real adapter, the test server, Azurite (ledger, blobs, tables, queues) ----------

AUTH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "00000000-0000-0000-0000-0000000000aa",
        "client_secret_secret": "mail-test-graph-secret"}


@dataclass
class MailEnv:
    services: Services
    server: GraphTestServer
    user: User
    partner: str
    mailbox_cfg: dict[str, Any]

    def configure(self, **changes: Any) -> None:
        """Replace the partner's mailbox block (the catalogue is rebuilt)."""
        self.mailbox_cfg = {**self.mailbox_cfg, **changes}
        self.services.overrides["catalog"] = parse_catalog(
            {"partners": [{"id": self.partner, "name": "Mail test partner", "mailbox": self.mailbox_cfg}]})

    def poll(self, **kw: Any) -> PollSummary:
        options = PollOptions(breaker_threshold=kw.pop("breaker_threshold", 3))
        return poll_mailbox(self.services, self.partner, options=options, requested_by="test", **kw)

    def jobs(self) -> list[Job]:
        return self.services.jobs.list_jobs(partner=self.partner, limit=500)

    def landed_messages(self) -> list[dict[str, Any]]:
        return self.services.queues.peek(self.services.settings.landed_queue)

    def blob_bytes(self, job: Job) -> bytes:
        container, _, path = job.blob_path.partition("/")
        return b"".join(self.services.blobs.open_read(container, path))

    def ledger(self) -> list[LedgerEntry]:
        return self.services.ledger.entries(self.partner)

    def add(self, *attachments: Attachment, subject: str = "Invoices", sender: str = "ops@acme.example",
            folder: str = "Inbox/Partners/Acme") -> Message:
        return self.user.add_message(folder, subject=subject, sender=sender, attachments=list(attachments))


@pytest.fixture
def mail_env(graph_server: GraphTestServer, services: Services) -> Iterator[MailEnv]:
    """The conftest's Services on Azurite (this test's own tables and queues) + the real Graph adapter."""
    uid = uuid.uuid4().hex[:8]
    services.overrides["mailboxes"] = GraphMailboxes(
        LocalSecrets(env={}), base_url=graph_server.base_url, local_token=TEST_TOKEN, retry_delay=0.05,
        backoff_factor=0.05, jitter=0.05, max_retry_wait=5)
    user = graph_server.add_user(f"ingest-{uid}@wharf.test")
    for path in ("Inbox/Partners/Acme/Done", "Inbox/Rejected"):
        user.folder_path(path)
    env = MailEnv(services, graph_server, user, f"mail-{uid}", {})
    env.configure(mailbox=user.address, folder="Inbox/Partners/Acme", sender_allow=["ops@acme.example",
                  "*@partner.example"], attachment_globs=["*.csv", "*.eml", "*.png", "*.bin"], auth=AUTH)
    yield env
    graph_server.clear_faults()


def test_poll_ingests_each_attachment_as_a_job(mail_env: MailEnv) -> None:
    msg = mail_env.add(file_attachment("invoices.csv", b"id,amount\n1,10\n", content_type="text/csv"),
                       file_attachment("credits.csv", b"id,amount\n2,-5\n"),
                       file_attachment("logo.png", b"\x89PNG...", inline=True),
                       item_attachment("Fwd: original", b"Subject: original\r\n\r\nhi\r\n"),
                       file_attachment("notes.pdf", b"%PDF"))
    summary = mail_env.poll()
    assert (summary.status, summary.listed, summary.landed, summary.failed) == ("ok", 1, 2, 0)

    jobs = {j.file_name: j for j in mail_env.jobs()}
    assert set(jobs) == {"invoices.csv", "credits.csv"}  # inline image, item and pdf skipped by rule
    job = jobs["invoices.csv"]
    assert job.job_type.value == "MAIL_INGEST" and job.source == f"mail://{mail_env.user.address}/" \
        f"{msg.internet_message_id}"
    assert mail_env.blob_bytes(job) == b"id,amount\n1,10\n"
    assert job.sha256 == hashlib.sha256(b"id,amount\n1,10\n").hexdigest()
    (transfer,) = mail_env.services.jobs.transfers(job.job_id)
    assert transfer.source == job.source and transfer.status == "LANDED" and transfer.bytes == 15
    events = [e.type.value for e in mail_env.services.jobs.events(job.job_id)]
    assert events[:2] == ["job.created", "file.landed"]
    landed = mail_env.landed_messages()
    assert sorted(m["file_name"] for m in landed) == ["credits.csv", "invoices.csv"]
    assert all(m["partner"] == mail_env.partner and m["source"] == job.source for m in landed)
    assert msg.is_read  # the after-action (mark_read)
    assert {e.state for e in mail_env.ledger()} == {LedgerState.DONE}


def test_second_poll_ingests_nothing_again(mail_env: MailEnv) -> None:
    msg = mail_env.add(file_attachment("a.csv", b"1\n"))
    assert mail_env.poll().landed == 1
    assert mail_env.poll().listed == 0  # read mails are filtered out by Graph
    msg.is_read = False  # someone marks it unread again: it is listed, recognised, and only marked read
    again = mail_env.poll()
    assert (again.listed, again.landed, again.failed) == (1, 0, 0)
    assert msg.is_read
    assert len(mail_env.jobs()) == 1 and len(mail_env.landed_messages()) == 1


def test_senders_and_subjects_are_filtered_and_logged_once(mail_env: MailEnv,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    mail_env.configure(subject_regex=r"^Invoices\b")
    good = mail_env.add(file_attachment("a.csv", b"1\n"), sender="someone@PARTNER.example")
    stranger = mail_env.add(file_attachment("b.csv", b"2\n"), sender="x@evil.example")
    lookalike = mail_env.add(file_attachment("c.csv", b"3\n"), sender="ops@acme.example.evil.example")
    wrong_subject = mail_env.add(file_attachment("d.csv", b"4\n"), subject="Hello")
    no_match = mail_env.add(file_attachment("e.pdf", b"%PDF"))
    with caplog.at_level(logging.WARNING, logger="shared.services.poll_mailbox"):
        first = mail_env.poll()
        second = mail_env.poll()
    assert first.landed == 1 and [j.file_name for j in mail_env.jobs()] == ["a.csv"]
    assert first.skipped_reasons == {"sender_not_allowed": 2, "subject_mismatch": 1, "no_matching_attachment": 1}
    assert second.landed == 0 and second.skipped_reasons == {"already_rejected": 4}
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 4  # once per mail, not per poll
    assert {e.state for e in mail_env.ledger()} == {LedgerState.DONE, LedgerState.REJECTED}
    assert good.is_read and not any(m.is_read for m in (stranger, lookalike, wrong_subject, no_match))


def test_rejected_mail_moves_to_the_rejected_folder(mail_env: MailEnv) -> None:
    mail_env.configure(rejected_folder="Inbox/Rejected", after_action="both", move_to="Inbox/Partners/Acme/Done")
    mail_env.add(file_attachment("a.csv", b"1\n"))
    mail_env.add(file_attachment("b.csv", b"2\n"), sender="x@evil.example")
    mail_env.user.add_message("Inbox/Partners/Acme", subject="no attachment at all", sender="ops@acme.example")
    summary = mail_env.poll()
    assert summary.landed == 1
    assert [m.subject for m in mail_env.user.in_folder("Inbox/Partners/Acme")] == []
    done = mail_env.user.in_folder("Inbox/Partners/Acme/Done")
    assert [(m.subject, m.is_read) for m in done] == [("Invoices", True)]
    assert sorted(m.subject for m in mail_env.user.in_folder("Inbox/Rejected")) == ["Invoices",
                                                                                      "no attachment at all"]


def test_paging_across_pages(mail_env: MailEnv) -> None:
    for i in range(12):
        mail_env.add(file_attachment(f"f{i:02d}.csv", f"{i}\n".encode()))
    summary = mail_env.poll(page_size=5)
    assert (summary.listed, summary.landed) == (12, 12)
    pages = mail_env.server.log(rf"GET /v1.0/users/{mail_env.user.address}/mailFolders/[^/]+/messages$")
    assert [r.query.get("$skip") for r in pages] == [None, "5", "10"]
    assert pages[0].query["$filter"] == "isRead eq false and hasAttachments eq true"
    assert sorted(j.file_name for j in mail_env.jobs()) == [f"f{i:02d}.csv" for i in range(12)]


def test_large_attachment_streams_into_the_blob(mail_env: MailEnv) -> None:
    big = file_attachment("big.bin", size=40 * 1024 * 1024 + 123, seed=42)
    mail_env.add(big)
    summary = mail_env.poll()
    assert summary.landed == 1 and summary.bytes == big.size
    (job,) = mail_env.jobs()
    assert job.bytes == big.size and job.sha256 == big.sha256()
    container, _, path = job.blob_path.partition("/")
    digest = hashlib.sha256()
    for chunk in mail_env.services.blobs.open_read(container, path):
        digest.update(chunk)
    assert digest.hexdigest() == big.sha256()
    value = mail_env.server.log(rf"/attachments/{big.id}/\$value$")
    assert [r.status for r in value] == [200] and value[0].bytes_sent == big.size


def test_429_with_retry_after_is_waited_then_succeeds(mail_env: MailEnv) -> None:
    att = file_attachment("a.csv", b"1\n")
    mail_env.add(att)
    listing = rf"GET /v1.0/users/{mail_env.user.address}/mailFolders/[^/]+/messages$"
    download = rf"GET .*/attachments/{att.id}/\$value$"
    mail_env.server.fail(listing, 429, retry_after="1")
    mail_env.server.fail(download, 429, retry_after="2")
    summary = mail_env.poll()
    assert (summary.status, summary.landed) == ("ok", 1)
    for route, wait in ((listing, 1.0), (download, 2.0)):
        log = mail_env.server.log(route)
        assert [r.status for r in log] == [429, 200]
        assert log[1].retry_attempt == "1"
        assert wait <= log[1].started - log[0].finished < wait + 0.8


def test_5xx_fails_the_poll_and_the_breaker_counts_it(mail_env: MailEnv) -> None:
    mail_env.add(file_attachment("a.csv", b"1\n"))
    listing = rf"GET /v1.0/users/{mail_env.user.address}/mailFolders/[^/]+/messages$"
    mail_env.server.fail(listing, 500, times=3)
    for _ in range(3):
        failed = mail_env.poll(breaker_threshold=3)
        assert failed.status == "failed" and "HTTP 500" in failed.error
    assert mail_env.poll(breaker_threshold=3).status == "circuit_open"
    assert mail_env.services.breakers.get("mail", mail_env.partner).failures == 3
    assert mail_env.jobs() == []
    mail_env.server.fail(listing, 503, times=2)  # retried inside one call: invisible to the poll
    mail_env.services.breakers.save(replace(mail_env.services.breakers.get("mail", mail_env.partner),
                                            state=BreakerState.CLOSED, failures=0))
    ok = mail_env.poll()
    assert (ok.status, ok.landed) == ("ok", 1)


def test_failure_midway_then_next_poll_completes_without_duplicates(mail_env: MailEnv) -> None:
    atts = [file_attachment(f"part{i}.csv", f"part {i}\n".encode() * 1000) for i in range(3)]
    msg = mail_env.add(*atts)
    mail_env.server.fail(rf"GET .*/attachments/{atts[1].id}/\$value$", 500)
    first = mail_env.poll()
    assert (first.status, first.landed, first.failed) == ("partial", 1, 1)
    assert not msg.is_read  # not tidied: the mail is not complete
    states = {e.path.rsplit("/", 1)[1]: e.state for e in mail_env.ledger()}
    assert states == {atts[0].id: LedgerState.LANDED, atts[1].id: LedgerState.FAILED}

    second = mail_env.poll()
    assert (second.status, second.landed, second.failed) == ("ok", 2, 0)
    assert msg.is_read
    jobs = mail_env.jobs()
    assert sorted(j.file_name for j in jobs) == ["part0.csv", "part1.csv", "part2.csv"]
    assert len(mail_env.landed_messages()) == 3
    assert {e.state for e in mail_env.ledger()} == {LedgerState.DONE}
    for job, att in zip(sorted(jobs, key=lambda j: j.file_name), atts, strict=True):
        assert mail_env.blob_bytes(job) == att.data
    assert len(mail_env.server.log(rf"/attachments/{atts[0].id}/\$value$")) == 1  # never downloaded twice


def test_stream_cut_midway_commits_nothing_then_lands_whole(mail_env: MailEnv) -> None:
    att = file_attachment("cut.bin", size=12 * 1024 * 1024, seed=9)
    mail_env.add(att)
    mail_env.server.fail(rf"GET .*/attachments/{att.id}/\$value$", 0, truncate_after=9 * 1024 * 1024)
    first = mail_env.poll()
    assert (first.landed, first.failed) == (0, 1)
    (entry,) = mail_env.ledger()
    assert entry.state is LedgerState.FAILED
    assert not mail_env.services.blobs.exists(entry.container, entry.blob_path)
    second = mail_env.poll()
    assert second.landed == 1
    (job,) = mail_env.jobs()
    assert job.sha256 == att.sha256() and job.job_id == entry.job_id  # the same job, retried


@pytest.mark.parametrize("name", [
    "../../../etc/passwd.csv",
    "..\\..\\windows\\system32.csv",
    "a/b/c.csv",
    "evil\x00\x1b[31mred\r\nX-Injected: 1.csv",
    "x" * 400 + ".csv",
    " .. .csv",
])
def test_malicious_attachment_names_are_sanitised(mail_env: MailEnv, name: str) -> None:
    mail_env.add(file_attachment(name, b"data\n"))
    assert mail_env.poll().landed == 1
    (job,) = mail_env.jobs()
    container, _, path = job.blob_path.partition("/")
    assert container == "inbound" and path.startswith(f"{mail_env.partner}/")
    segments = path.split("/")
    assert len(segments) == 6  # partner/yyyy/MM/dd/transfer/name: no extra directories
    leaf = segments[-1]
    assert leaf == job.file_name and leaf not in (".", "..") and len(leaf.encode()) <= 255
    assert not any(c in leaf for c in "/\\\x00\r\n\x1b")
    assert leaf.endswith(".csv")
    meta = mail_env.services.blobs.get_info(container, path).metadata
    assert decode_original(meta["original_name"]) == name  # the exact original, encoded, for people


def test_item_attachments_and_inline_images_when_kept(mail_env: MailEnv) -> None:
    mail_env.configure(item_attachments="keep", inline_images="keep")
    mime = b"From: a@b\r\nSubject: original\r\n\r\nbody\r\n"
    mail_env.add(item_attachment("Fwd: original", mime),
                 file_attachment("logo.png", b"\x89PNG", inline=True))
    # A mail whose only attachment is inline: Graph says hasAttachments=false, so that filter is off.
    mail_env.add(file_attachment("only-inline.png", b"\x89PNG2", inline=True))
    summary = mail_env.poll()
    assert summary.landed == 3
    jobs = {j.file_name: j for j in mail_env.jobs()}
    assert set(jobs) == {"Fwd_ original.eml", "logo.png", "only-inline.png"}
    assert mail_env.blob_bytes(jobs["Fwd_ original.eml"]) == mime


def test_over_size_attachment_is_refused_once(mail_env: MailEnv) -> None:
    mail_env.configure(max_attachment_bytes=1000)
    msg = mail_env.add(file_attachment("small.csv", b"1\n"), file_attachment("huge.csv", size=5000, seed=1))
    first = mail_env.poll()
    assert first.landed == 1 and first.skipped_reasons == {"over_size": 1}
    assert msg.is_read
    msg.is_read = False
    assert mail_env.poll().skipped_reasons == {"already_ingested": 1}  # the refusal is not repeated
    by_name = {j.file_name: j for j in mail_env.jobs()}
    assert by_name["huge.csv"].status.value == "FAILED" and "max_attachment_bytes" in by_name["huge.csv"].error
    assert by_name["small.csv"].blob_path


# --- construction: credentials, the local-only static token, the retry cap -----------------------------


def test_mailbox_client_uses_the_app_secret_and_follows_its_rotation() -> None:
    from azure.identity import ClientSecretCredential

    from shared.adapters import graph_mail

    secrets = LocalSecrets(env={"WHARF_SECRET_ACME_GRAPH_SECRET": "s3cret-value-1"})
    auth = type("Auth", (), {"tenant_id": "contoso.onmicrosoft.com", "client_id": AUTH["client_id"],
                             "client_secret_secret": "acme-graph-secret", "certificate_secret": None})()
    first = graph_mail.mailbox_client(auth, secrets)  # builds a ClientSecretCredential; no network yet
    assert first.credential is not None
    credential = first.credential.current
    assert isinstance(credential, ClientSecretCredential)
    assert graph_mail.mailbox_client(auth, secrets) is first and first.credential.current is credential
    # A changed (cached) value: the same client, a new credential from the new secret (tokens, connections kept).
    rotated = graph_mail.mailbox_client(auth, LocalSecrets(env={"WHARF_SECRET_ACME_GRAPH_SECRET": "s3cret-value-2"}))
    assert rotated is first and first.credential.current is not credential and first.credential.rotations == 1
    assert first.base_url == "https://graph.microsoft.com/v1.0"
    assert all("s3cret" not in "".join(map(str, key)) for key in graph_mail._CLIENTS)  # no value in the key
    with pytest.raises(ConfigurationError, match="WHARF_GRAPH_LOCAL_TOKEN"):
        graph_mail.mailbox_client(auth, secrets, base_url="http://127.0.0.1:1/v1.0")
    with pytest.raises(ConfigurationError, match="https"):
        GraphMailClient.with_client_secret("t", "c", "s", base_url="http://graph.example/v1.0")


def test_retry_delays_honour_retry_after_up_to_the_cap() -> None:
    import httpx

    from shared.adapters.graph_mail import CappedRetryHandler, RetryHandlerOption

    handler = CappedRetryHandler(RetryHandlerOption(delay=0.5, max_retries=3), max_wait=30, jitter=0)
    throttled = httpx.Response(429, headers={"Retry-After": "7"})
    assert handler.get_delay_time(0, throttled, 0.5) == 7
    assert handler.get_delay_time(0, httpx.Response(429, headers={"Retry-After": "600"}), 0.5) \
        == RetryHandlerOption.MAX_DELAY  # not waited: kiota does not retry at MAX_DELAY
    assert handler.get_delay_time(2, httpx.Response(503), 0.5) == 0.5 + 0.5 * 4
    assert handler.get_delay_time(9, httpx.Response(503), 0.5) == 30
    with pytest.raises(ValueError, match="max_wait"):
        CappedRetryHandler(RetryHandlerOption(), max_wait=500)
