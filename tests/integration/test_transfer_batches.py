"""One partner's backlog over several workers: a poll queues claim batches, two `wharf poll --worker` processes
share them against the real sshd and Azurite, every file lands once, and the partner's session limit holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from shared.adapters.secrets import LocalSecrets
from shared.bootstrap import Services
from shared.catalog import load_catalog
from shared.domain.ledger import LedgerState
from shared.domain.messages import landed_entries
from shared.domain.sanitize import decode_original
from shared.services import transfers
from shared.services.poll_sftp import PollOptions, PollSummary, poll_partner
from tests.integration.session_counter import peak
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.sshd, pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]
KEY_SECRET = "scaleout-test-key"
FILES = 120
BATCH = 20
MAX_SESSIONS = 2


class Backlog:
    """One partner with FILES waiting on the session's sshd; `wharf` subprocesses against this test's storage."""

    def __init__(self, services: Services, sshd: SshdServer, tmp_path: Path, *, files: int = FILES) -> None:
        self.services, self.tmp = services, tmp_path
        self.partner = f"p{uuid.uuid4().hex[:12]}"
        self.folder = sshd.folder(self.partner)
        self.catalog = catalog = tmp_path / "partners.yaml"
        catalog.write_text(yaml.safe_dump({"partners": [{"id": self.partner, "name": self.partner, "sftp": {
            "host": sshd.host, "port": sshd.port, "username": sshd.username,
            "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd.fingerprint],
            "remote_dirs": [str(self.folder)], "min_age_seconds": 0, "post_action": "delete",
            "max_files_per_poll": 5000, "max_sessions": MAX_SESSIONS,
            "connect_timeout_seconds": 5, "operation_timeout_seconds": 10}}]}))
        s = services.settings
        self.env = {"PATH": "/usr/bin:/bin", "AzureWebJobsStorage": s.storage_connection_string or "",
                    "WHARF_TABLE_PREFIX": s.table_prefix, "LANDED_QUEUE": s.landed_queue,
                    "POLL_QUEUE": s.poll_queue, "WHARF_EVENTS_QUEUE": s.events_queue,
                    "TRANSFER_QUEUE": s.transfer_queue, "WHARF_CATALOG_PATH": str(catalog),
                    "WHARF_STACK_ENV": "/nonexistent", "WHARF_SECRET_SCALEOUT_TEST_KEY": f"@{sshd.client_key.path}",
                    "WHARF_LOG_LEVEL": "WARNING"}
        self.names = [f"f{i:04d}.csv" for i in range(files)]
        for name in self.names:
            (self.folder / name).write_bytes(f"id,name\n{name},{'x' * 50}\n".encode())
        self.events = tmp_path / "sessions.log"

    def wharf(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tests.integration.session_counter", str(self.events), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.wharf(*args), capture_output=True, text=True, env=self.env, cwd=ROOT,
                              timeout=120, check=False)

    def workers(self, count: int) -> list[subprocess.CompletedProcess[str]]:
        # Output to files, not pipes: a worker must never block on a full pipe while another is waited for.
        logs = [(self.tmp / f"worker-{i}.out", self.tmp / f"worker-{i}.err") for i in range(count)]
        procs = [subprocess.Popen(self.wharf("poll", "--worker", "--idle-exit", "2", "--json", "--concurrency", "4"),
                                  stdout=out.open("w"), stderr=err.open("w"), text=True, env=self.env, cwd=ROOT)
                 for out, err in logs]
        done = []
        for proc, (out, err) in zip(procs, logs, strict=True):
            proc.wait(timeout=180)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text()))
        return done


def summaries(text: str) -> list[dict[str, object]]:
    """The JSON summaries a `--json` worker printed (one pretty-printed object per batch)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


def test_two_workers_share_one_partners_backlog_each_file_once_within_the_session_limit(
        services: Services, sshd_server: SshdServer, tmp_path: Path) -> None:
    backlog = Backlog(services, sshd_server, tmp_path)
    poll = backlog.run("poll", backlog.partner, "--json", "--quiet", "--settle", "0.1", "--batch-files", str(BATCH))
    assert poll.returncode == 0, (poll.stdout, poll.stderr)
    queued = json.loads(poll.stdout)
    assert (queued["queued"], queued["batches"], queued["landed"]) == (FILES, FILES // BATCH, 0)
    assert services.queues.depth(services.settings.transfer_queue) == FILES // BATCH
    assert {e.state for e in services.ledger.entries(backlog.partner)} == {LedgerState.CLAIMED}

    runs = backlog.workers(2)
    for run in runs:
        assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    per_worker = [summaries(run.stdout) for run in runs]
    handled = [len(s) for s in per_worker]
    assert sum(handled) == FILES // BATCH  # every batch handled once, by one worker or the other
    assert sum(int(s["landed"]) for w in per_worker for s in w) == FILES  # type: ignore[call-overload]
    assert services.queues.depth(services.settings.transfer_queue) == 0
    assert services.queues.depth(f"{services.settings.transfer_queue}-poison") == 0

    partner = backlog.partner
    entries = services.ledger.entries(partner)
    assert sorted(os.path.basename(e.path) for e in entries) == backlog.names
    assert {e.state for e in entries} == {LedgerState.DONE}
    blobs = services.blobs.list_blobs("inbound", f"{partner}/")
    originals = Counter(decode_original(b.metadata["original_name"]) for b in blobs)
    assert sorted(originals) == backlog.names and set(originals.values()) == {1}  # one blob per file, none missing
    jobs = services.jobs.list_jobs(partner=partner, limit=1000)  # what `wharf jobs list` and GET /api/jobs show
    assert len(jobs) == FILES and sorted(j.file_name for j in jobs) == backlog.names
    assert {j.job_id for j in jobs} == {e.job_id for e in entries} == {b.metadata["job_id"] for b in blobs}
    landed: list[str] = []
    while batch := services.queues.receive(services.settings.landed_queue, max_messages=32):
        for m in batch:
            landed += [e["job_id"] for e in landed_entries(json.loads(m.body))]
            services.queues.delete(services.settings.landed_queue, m.id, m.pop_receipt)
    assert sorted(landed) == sorted(j.job_id for j in jobs)  # one file-landed entry per job, none twice
    assert os.listdir(backlog.folder) == []  # every post-action (delete) done

    most, opened = peak(backlog.events)
    assert opened >= 2 and 1 <= most <= MAX_SESSIONS, (most, opened, handled)


def test_a_batch_delivered_again_transfers_nothing_twice(services: Services, sshd_server: SshdServer,
                                                         tmp_path: Path) -> None:
    backlog = Backlog(services, sshd_server, tmp_path, files=30)
    services.overrides["catalog"] = load_catalog(backlog.catalog)
    key = f"@{sshd_server.client_key.path}"
    services.overrides["secrets"] = LocalSecrets(env={"WHARF_SECRET_SCALEOUT_TEST_KEY": key})
    summary = poll_partner(services, backlog.partner, options=PollOptions(settle_seconds=0.1, batch_files=15))
    assert (summary.queued, summary.batches) == (30, 2)
    queue = services.settings.transfer_queue
    messages = services.queues.peek_raw(queue)
    assert len(messages) == 2
    for m in messages:  # the host delivers at least once: the same two batches again
        services.queues.send_raw(queue, m.body)
    done: list[PollSummary] = []
    assert transfers.work(services, idle_exit=0, on_summary=done.append) == 4
    assert sorted(s.landed for s in done) == [0, 0, 15, 15]  # the repeats find their claims taken
    assert all(s.status == "ok" for s in done)
    assert len(services.blobs.list_blobs("inbound", f"{backlog.partner}/")) == 30
    assert len(services.jobs.list_jobs(partner=backlog.partner, limit=1000)) == 30
