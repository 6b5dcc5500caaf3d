"""From a partner's SFTP folder or mailbox, through devhost, to a COMPLETED job with its routes done."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.adapters.secrets import env_name
from shared.observability import setup
from tests.e2e.conftest import E2E
from tests.e2e.test_processing import GOOD, catalog_yaml
from tests.graph_server import file_attachment
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.e2e, pytest.mark.azurite, pytest.mark.sshd, pytest.mark.graph]


def test_file_dropped_on_the_partner_sftp_server_is_ingested_and_processed(
        e2e: E2E, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    partner = f"s{uuid.uuid4().hex[:8]}"
    outbound = sshd_server.folder(f"{partner}-out")
    secret = f"{partner}-key"
    monkeypatch.setenv(env_name(secret), f"@{sshd_server.client_key.path}")
    sftp_block = f"""    sftp:
      host: 127.0.0.1
      port: {sshd_server.port}
      username: {sshd_server.username}
      auth: {{ private_key_secret: {secret} }}
      host_keys: ["{sshd_server.known_hosts_line}"]
      remote_dirs: ["{outbound}"]
      min_age_seconds: 0
      post_action: delete
"""
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD").replace("    processing:\n",
                                                                        sftp_block + "    processing:\n", 1))
    (outbound / "invoices-sftp.csv").write_bytes(GOOD)

    code, summary = e2e.request("POST", f"/partners/{partner}/poll?wait=true")
    assert code == 200, summary
    assert summary["landed"] == 1
    job = e2e.wait_for("the SFTP job", lambda: e2e.services.jobs.list_jobs(partner=partner))[0]
    detail = e2e.wait_job(job.job_id)
    assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
    assert detail["job"]["job_type"] == "SFTP_INGEST"
    assert [t["status"] for t in detail["transfers"]]
    assert not (outbound / "invoices-sftp.csv").exists()  # post-action: delete
    assert e2e.services.blobs.exists("processed", f"{partner}/{datetime.now(UTC):%Y/%m/%d}/invoices-sftp.jsonl")
    # A second poll finds nothing new.
    code, again = e2e.request("POST", f"/partners/{partner}/poll?wait=true")
    assert code == 200 and again["landed"] == 0


def test_attachment_in_the_partner_mailbox_is_ingested_and_processed(
        e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = setup.for_tests()
    partner = f"m{uuid.uuid4().hex[:8]}"
    address = f"{partner}@wharf.test"
    user = e2e.graph.add_user(address)
    secret = f"{partner}-graph"
    monkeypatch.setenv(env_name(secret), "unused-with-the-local-token")
    mailbox_block = f"""    mailbox:
      mailbox: {address}
      folder: Inbox/Partners
      sender_allow: ["billing@partner.example"]
      attachment_globs: ["*.csv"]
      after_action: mark_read
      auth:
        tenant_id: contoso.onmicrosoft.com
        client_id: 11111111-2222-3333-4444-555555555555
        client_secret_secret: {secret}
"""
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD").replace("    processing:\n",
                                                                        mailbox_block + "    processing:\n", 1))
    user.add_message("Inbox/Partners", subject="November invoices", sender="billing@partner.example",
                     attachments=[file_attachment("invoices-mail.csv", GOOD)])
    user.add_message("Inbox/Partners", subject="spam", sender="someone@else.example",
                     attachments=[file_attachment("evil.csv", GOOD)])

    code, summary = e2e.request("POST", f"/partners/{partner}/poll?channel=mail&wait=true")
    assert code == 200, summary
    assert summary["landed"] == 1
    job = e2e.wait_for("the mail job", lambda: e2e.services.jobs.list_jobs(partner=partner))[0]
    detail = e2e.wait_job(job.job_id)
    assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
    assert detail["job"]["file_name"] == "invoices-mail.csv"
    assert e2e.services.blobs.exists("processed", f"{partner}/{datetime.now(UTC):%Y/%m/%d}/invoices-mail.jsonl")
    assert len(e2e.services.jobs.list_jobs(partner=partner)) == 1  # the unknown sender's mail made no job
    # Each call to Graph is a client span in the poll's trace.
    graph_calls = capture.spans_named("graph.request")
    assert graph_calls and {s.attributes["server.address"] for s in graph_calls} == {"127.0.0.1"}
    [poll] = capture.spans_named("mail.poll")
    assert {s.context.trace_id for s in graph_calls} == {poll.context.trace_id}
