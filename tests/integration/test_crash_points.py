"""A poll killed at every named fault point (WHARF_FAULT), then polled again: every file one blob, one visible job."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from shared.bootstrap import Services
from shared.domain.jobs import EventType, JobStatus
from shared.domain.ledger import LedgerState
from shared.domain.messages import landed_entries
from shared.faults import EXIT_CODE, POINTS
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.sshd, pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]
KEY_SECRET = "crash-test-key"
FILES = {"a.csv": b"id,amount\n1,9.99\n", "b.csv": b"id,amount\n2,1.50\n" * 40, "c.csv": b"x" * 3000}

# Each scenario: the faults of successive polls (each killed at its point), then one poll without a fault.
# The first poll claims the files fresh (batched path: create_jobs); a second faulted poll takes them over
# (the one-by-one path the mail poll uses too: Landing.land, JobStore.append).
SCENARIOS: list[tuple[str, ...]] = [
    ("landing.after_claim",),
    ("landing.after_upload",),
    ("create_jobs.after_events",),
    ("create_jobs.after_transfers",),
    ("create_jobs.after_logs",),
    ("create_jobs.after_projection",),
    ("landing.after_send",),
    ("landing.after_ledger",),
    ("sftp.after_post_action",),
    ("landing.after_upload", "jobs.append.after_event:1"),  # job.created stored, no projection yet
    ("landing.after_upload", "jobs.append.after_event:2"),  # file.landed stored, projection one behind
    ("create_jobs.after_events", "landing.after_send"),  # the take-over killed too, after its message
]


def test_every_fault_point_is_in_a_scenario() -> None:
    """Every landing point is killed here; the delivery points (email.*) in tests/integration/test_email_delivery.py,
    the mail poll's own (mail.*) in tests/integration/test_crash_points_mail.py."""
    named = {fault.split(":")[0] for scenario in SCENARIOS for fault in scenario}
    assert named == {p for p in POINTS if not p.startswith(("email.", "mail."))}
    mail_tests = (ROOT / "tests" / "integration" / "test_crash_points_mail.py").read_text()
    assert all(f'"{p}"' in mail_tests for p in POINTS if p.startswith("mail."))
    delivery_tests = (ROOT / "tests" / "integration" / "test_email_delivery.py").read_text()
    assert all(f'"{p}"' in delivery_tests for p in POINTS if p.startswith("email."))


class CrashPoll:
    """One partner on the session's sshd, polled by `wharf poll` subprocesses against this test's storage."""

    def __init__(self, services: Services, sshd: SshdServer, tmp_path: Path) -> None:
        self.services, self.sshd = services, sshd
        self.partner = f"p{uuid.uuid4().hex[:12]}"
        self.folder = sshd.folder(self.partner)
        catalog = tmp_path / "partners.yaml"
        catalog.write_text(yaml.safe_dump({"partners": [{"id": self.partner, "name": self.partner, "sftp": {
            "host": sshd.host, "port": sshd.port, "username": sshd.username,
            "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd.fingerprint],
            "remote_dirs": [str(self.folder)], "min_age_seconds": 0, "post_action": "delete",
            "connect_timeout_seconds": 5, "operation_timeout_seconds": 10}}]}))
        s = services.settings
        self.env = {"PATH": "/usr/bin:/bin", "AzureWebJobsStorage": s.storage_connection_string or "",
                    "WHARF_TABLE_PREFIX": s.table_prefix, "LANDED_QUEUE": s.landed_queue,
                    "POLL_QUEUE": s.poll_queue, "WHARF_EVENTS_QUEUE": s.events_queue,
                    "WHARF_CATALOG_PATH": str(catalog), "WHARF_STACK_ENV": "/nonexistent",
                    "WHARF_SECRET_CRASH_TEST_KEY": f"@{sshd.client_key.path}"}
        for name, data in FILES.items():
            (self.folder / name).write_bytes(data)

    def poll(self, fault: str | None = None) -> subprocess.CompletedProcess[str]:
        # Concurrency 1: the files pass every point in the same order in every run. Lease 0.2 s: the next
        # poll (a new process, a second later) takes over what a killed one left CLAIMED.
        env = dict(self.env, **({"WHARF_FAULT": fault} if fault else {}))
        return subprocess.run([sys.executable, "-m", "shared.cli", "poll", self.partner, "--json", "--quiet",
                               "--concurrency", "1", "--settle", "0.1", "--lease", "0.2"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False)


@pytest.mark.parametrize("faults", SCENARIOS, ids=["+".join(s) for s in SCENARIOS])
def test_a_poll_killed_at_a_fault_point_leaves_every_file_landed_once_and_visible(
        faults: tuple[str, ...], services: Services, sshd_server: SshdServer, tmp_path: Path) -> None:
    crash = CrashPoll(services, sshd_server, tmp_path)
    for fault in faults:
        run = crash.poll(fault)
        point = fault.split(":")[0]
        assert run.returncode == EXIT_CODE, (fault, run.returncode, run.stdout, run.stderr)
        assert f"WHARF_FAULT: killed at {point}" in run.stderr
    run = crash.poll()
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert json.loads(run.stdout)["status"] == "ok"

    svc, partner = services, crash.partner
    entries = {os.path.basename(e.path): e for e in svc.ledger.entries(partner)}
    assert sorted(entries) == sorted(FILES)
    blobs = svc.blobs.list_blobs("inbound", f"{partner}/")
    assert sorted(b.path.rsplit("/", 1)[1] for b in blobs) == sorted(FILES)  # one blob per file
    assert {b.path for b in blobs} == {e.blob_path for e in entries.values()}

    listed = {j.job_id: j for j in svc.jobs.list_jobs(partner=partner, limit=100)}  # wharf jobs list, GET /api/jobs
    assert sorted(listed) == sorted(e.job_id for e in entries.values())  # one job per file, every one visible
    for name, entry in entries.items():
        data = FILES[name]
        job = listed[entry.job_id]
        assert job == svc.jobs.get_job(entry.job_id)  # wharf jobs show, GET /api/jobs/{id}
        assert (job.status, job.file_name, job.bytes, job.sha256, job.blob_path, job.event_count) == (
            JobStatus.PENDING, name, len(data), hashlib.sha256(data).hexdigest(),
            f"inbound/{entry.blob_path}", 2)
        assert [e.type for e in svc.jobs.events(entry.job_id)] == [EventType.CREATED, EventType.FILE_LANDED]
        assert len(svc.jobs.transfers(entry.job_id)) == 1

    messages = svc.queues.peek(svc.settings.landed_queue)  # this test's own queue; at most 6 messages
    sent = [e for m in messages for e in landed_entries(m)]  # a recorded batch sends one FileLandedBatch
    # A message sent before a kill is sent again by the take-over: intake starts one orchestration per job id.
    assert {e["job_id"] for e in sent} == set(listed)
    assert len(sent) <= 2 * len(FILES) and len(messages) <= 2 * len(FILES)

    # Killed after deleting a.csv and before the ledger said DONE (sftp.after_post_action): a.csv is not listed
    # any more, and the next poll, past the lease, marks its LANDED entry DONE (its post-action is done).
    assert {name: e.state for name, e in entries.items()} == dict.fromkeys(FILES, LedgerState.DONE)
    assert sorted(os.listdir(crash.folder)) == []  # every post-action done
