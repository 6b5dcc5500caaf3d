"""A mail poll killed after a mail's after-action and before its attachments' ledger said DONE (WHARF_FAULT=
mail.after_action), then polled again: the tidied mail is no longer listed, and its LANDED entries become DONE all
the same; every attachment one blob and one visible job, each mail tidied once. The mailbox is the Graph test
server, driven by the real msgraph-based adapter; storage is the session's Azurite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from shared.adapters.secrets import env_name
from shared.bootstrap import Services
from shared.domain.ledger import LedgerState
from shared.faults import EXIT_CODE
from tests.graph_server import TEST_TOKEN, GraphTestServer, file_attachment

pytestmark = [pytest.mark.azurite, pytest.mark.graph]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def graph() -> Iterator[GraphTestServer]:
    with GraphTestServer() as server:
        yield server


@pytest.mark.parametrize("after_action", ["move", "mark_read"])
def test_a_mail_poll_killed_after_the_after_action_leaves_no_entry_landed_for_good(
        after_action: str, services: Services, graph: GraphTestServer, tmp_path: Path) -> None:
    partner = f"m{uuid.uuid4().hex[:12]}"
    user = graph.add_user(f"{partner}@wharf.test")
    done = user.folder_path("Inbox/Partners/Done")
    names: list[str] = []
    mails = []
    for m in range(2):
        atts = [file_attachment(f"m{m}a{a}.csv", f"id,n\n{m},{a}\n".encode()) for a in range(2)]
        names += [a.name for a in atts]
        mails.append(user.add_message("Inbox/Partners", subject=f"batch {m}", sender="ops@acme.example",
                                      attachments=atts))
    secret = f"{partner}-graph"
    mailbox = {"mailbox": user.address, "folder": "Inbox/Partners", "sender_allow": ["ops@acme.example"],
               "attachment_globs": ["*.csv"], "after_action": after_action,
               "auth": {"tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-2222-3333-4444-555555555555",
                        "client_secret_secret": secret}}
    if after_action == "move":
        mailbox["move_to"] = "Inbox/Partners/Done"
    catalog = tmp_path / "partners.yaml"
    catalog.write_text(yaml.safe_dump({"partners": [{"id": partner, "name": partner, "mailbox": mailbox}]}))
    s = services.settings
    env = {"PATH": "/usr/bin:/bin", "AzureWebJobsStorage": s.storage_connection_string or "",
           "WHARF_TABLE_PREFIX": s.table_prefix, "LANDED_QUEUE": s.landed_queue, "POLL_QUEUE": s.poll_queue,
           "WHARF_EVENTS_QUEUE": s.events_queue, "WHARF_CATALOG_PATH": str(catalog),
           "WHARF_STACK_ENV": "/nonexistent", "GRAPH_BASE_URL": graph.base_url, "WHARF_GRAPH_LOCAL_TOKEN": TEST_TOKEN,
           env_name(secret): "unused-with-the-local-token", "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}

    def poll(fault: str | None = None) -> subprocess.CompletedProcess[str]:
        # Lease 0.2 s: the next poll (a new process, a second later) is past it.
        return subprocess.run([sys.executable, "-m", "shared.cli", "poll", partner, "--channel", "mail", "--json",
                               "--quiet", "--lease", "0.2"], capture_output=True, text=True, cwd=ROOT, timeout=60,
                              check=False, env=dict(env, **({"WHARF_FAULT": fault} if fault else {})))

    killed = poll("mail.after_action")
    assert killed.returncode == EXIT_CODE, (killed.returncode, killed.stdout, killed.stderr)
    assert "WHARF_FAULT: killed at mail.after_action" in killed.stderr
    first = {e.path.rsplit("/", 1)[0] for e in services.ledger.entries(partner)}
    assert [e.state for e in services.ledger.entries(partner)] == [LedgerState.LANDED] * 2, first  # the first mail
    tidied = [m for m in mails if (m.folder_id == done.id if after_action == "move" else m.is_read)]
    assert len(tidied) == 1  # its after-action done, its ledger not yet DONE

    run = poll()
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert json.loads(run.stdout)["status"] == "ok", run.stdout

    entries = services.ledger.entries(partner)
    assert sorted(os.path.basename(e.blob_path) for e in entries) == sorted(names)
    assert {e.state for e in entries} == {LedgerState.DONE}, [(e.path, e.state) for e in entries]
    blobs = [b.path for b in services.blobs.list_blobs("inbound", f"{partner}/")]
    assert sorted(blobs) == sorted(e.blob_path for e in entries)  # one blob per attachment
    jobs = services.jobs.list_jobs(partner=partner, limit=100)
    assert sorted(j.job_id for j in jobs) == sorted(e.job_id for e in entries)  # one visible job each
    if after_action == "move":
        assert {m.folder_id for m in mails} == {done.id}
    else:
        assert all(m.is_read for m in mails)
    assert len(user.messages) == 2  # moved, never copied
