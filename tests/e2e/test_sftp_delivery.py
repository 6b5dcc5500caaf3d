"""Outbound SFTP through devhost: a CSV landed from one partner, routed to another partner's SFTP inbox."""

from __future__ import annotations

import json
import uuid

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
