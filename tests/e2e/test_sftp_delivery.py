"""Outbound SFTP through devhost: a CSV landed from one partner, routed to another partner's SFTP inbox."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared.adapters.secrets import env_name
from shared.domain.delivery import DeliveryState
from tests.e2e.conftest import E2E
from tests.e2e.test_processing import GOOD, catalog_yaml, land
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.e2e, pytest.mark.azurite, pytest.mark.sshd]


def test_a_landed_csv_is_delivered_to_another_partners_sftp_inbox_once(
        e2e: E2E, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    sender, receiver = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    inbox = sshd_server.folder(f"{receiver}-home") / "inbound"
    secret = f"{receiver}-key"
    monkeypatch.setenv(env_name(secret), f"@{sshd_server.client_key.path}")
    catalog = catalog_yaml(sender, "EUR, USD").replace(
        '          - { kind: event, type: file.processed }\n',
        f'          - {{ kind: sftp, partner: {receiver}, name: "{{partner}}_{{stem}}.{{ext}}" }}\n'
        '          - { kind: event, type: file.processed }\n', 1)
    catalog += f"""  - id: {receiver}
    name: E2E receiver
    sftp:
      host: 127.0.0.1
      port: {sshd_server.port}
      username: {sshd_server.username}
      auth: {{ private_key_secret: {secret} }}
      host_keys: ["{sshd_server.known_hosts_line}"]
      remote_dirs: ["{inbox.parent}/outbound"]
      outbound_dir: "{inbox}"
"""
    e2e.catalog_path.write_text(catalog)
    job_id = land(e2e, sender, "invoices.csv", GOOD)

    detail = e2e.wait_job(job_id)
    assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
    delivered = sorted(p.name for p in inbox.iterdir())
    assert delivered == [f"{sender}_invoices.jsonl"]  # the transform's output, once, no temporary file left
    rows = [json.loads(line) for line in (inbox / delivered[0]).read_bytes().splitlines()]
    assert [row["invoice_id"] for row in rows] == [1, 2]
    routed = [e["data"] for e in detail["events"] if e["type"] == "file.routed" and e["data"]["kind"] == "sftp"]
    assert [r["target"] for r in routed] == [f"sftp:{receiver}:{inbox}/{delivered[0]}"]
    deliveries = e2e.services.deliveries.for_job(job_id)
    # Every destination has its record (#15: blob and event too); the SFTP one is SENT once.
    assert [(d.kind, d.state) for d in deliveries] == [("blob", DeliveryState.SENT), ("sftp", DeliveryState.SENT),
                                                       ("event", DeliveryState.SENT)]
    assert any(t["status"] == "SENT" and t["destination"].startswith(f"sftp:{receiver}:")
               for t in detail["transfers"])


@pytest.mark.graph
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_dropped_csv_goes_to_blob_sftp_and_email_and_a_later_bounce_shows_on_the_job(
        e2e: E2E, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.services.delivery_status import check_delivery_status
    from tests.graph_server.reports import rfc3464

    sender, receiver = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    mailbox = f"out-{sender}@wharf.test"
    user = e2e.graph.add_user(mailbox)
    inbox = sshd_server.folder(f"{receiver}-home") / "inbound"
    secret = f"{receiver}-key"
    monkeypatch.setenv(env_name(secret), f"@{sshd_server.client_key.path}")
    catalog = catalog_yaml(sender, "EUR, USD").replace(
        '          - { kind: event, type: file.processed }\n',
        f'          - {{ kind: sftp, partner: {receiver} }}\n'
        f'          - kind: email\n'
        f'            to: ["ops@partner.example"]\n'
        f'            subject: "{{partner}}: {{name}} ({{job_id}})"\n'
        f'            mailbox: {mailbox}\n'
        f'            auth: {{ tenant_id: contoso.onmicrosoft.com, client_id: 11111111-2222-3333-4444-555555555555,'
        f' client_secret_secret: graph-send-secret }}\n'
        '          - { kind: event, type: file.processed }\n', 1)
    catalog += f"""  - id: {receiver}
    name: E2E receiver
    sftp:
      host: 127.0.0.1
      port: {sshd_server.port}
      username: {sshd_server.username}
      auth: {{ private_key_secret: {secret} }}
      host_keys: ["{sshd_server.known_hosts_line}"]
      remote_dirs: ["{inbox.parent}/outbound"]
      outbound_dir: "{inbox}"
"""
    e2e.catalog_path.write_text(catalog)
    e2e.services.blobs.upload_stream(e2e.drop_container, f"{sender}/invoices.csv", [GOOD])

    def finished() -> Any:
        jobs = [j for j in e2e.services.jobs.list_jobs(partner=sender) if j.status.value in ("COMPLETED", "FAILED")]
        return jobs[0] if jobs else None

    job = e2e.wait_for("the dropped file's job", finished, 120)
    detail = e2e.wait_job(job.job_id)
    assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
    routed = sorted(e["data"]["kind"] for e in detail["events"] if e["type"] == "file.routed")
    assert routed == ["blob", "email", "event", "sftp"]
    deliveries = e2e.services.deliveries.for_job(job.job_id)
    # Every destination has its Deliveries row (decision 51): blob and event too.
    assert sorted((d.kind, d.state) for d in deliveries) == [
        ("blob", DeliveryState.SENT), ("email", DeliveryState.SENT), ("event", DeliveryState.SENT),
        ("sftp", DeliveryState.SENT)]
    assert sorted(p.name for p in inbox.iterdir()) == ["invoices.jsonl"]
    email = next(d for d in deliveries if d.kind == "email")
    [sent] = e2e.graph.sent_by(email.message_id)
    assert sent.message.subject == f"{sender}: invoices.jsonl ({job.job_id})"
    [attachment] = sent.message.attachments
    assert attachment.name == "invoices.jsonl" and attachment.sha256() == email.sha256

    # The partner's server bounces it after the job completed: the status check puts it on the job.
    user.add_mime(rfc3464(email.message_id, to=mailbox, recipient="ops@partner.example"))
    check_delivery_status(e2e.services)
    detail = e2e.wait_job(job.job_id)
    assert detail["job"]["status"] == "COMPLETED" and detail["job"]["counts"]["deliveries_bounced"] == 1
    [bounce] = [e["data"] for e in detail["events"] if e["type"] == "delivery.bounced"]
    assert bounce["status"] == "5.1.1" and bounce["index"] == email.index
    assert e2e.services.deliveries.get(job.job_id, email.index).state is DeliveryState.BOUNCED
