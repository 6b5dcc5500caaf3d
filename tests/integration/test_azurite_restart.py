"""Azurite stopped in the middle of an SFTP poll, then started again (same ports, same data): the poll fails
clearly and soon, the next one finishes the work; every file one blob and one visible job, nothing CLAIMED."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from azure.storage.blob import BlobServiceClient

from shared.bootstrap import Services, build_services
from shared.cli.errors import EXIT_STORAGE
from shared.domain.ledger import LedgerState
from shared.resources import EVENTS_QUEUE, LANDED_QUEUE, POLL_QUEUE, TRANSFER_BATCHES_QUEUE
from shared.settings import Settings
from tests.integration.azurite_server import PrivateAzurite
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.sshd, pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]
KEY_SECRET = "restart-test-key"
COUNT = 20
# Bounds, not measurements: a poll that outlives them hangs on a storage that is gone (the defect this guards).
FIRST_POLL_LIMIT = 45.0
SECOND_POLL_LIMIT = 60.0


@pytest.fixture
def private_azurite(tmp_path: Path) -> Iterator[PrivateAzurite]:
    server = PrivateAzurite(tmp_path / "azurite").start()
    try:
        yield server
    finally:
        server.stop()


def _poll_cmd(partner: str) -> list[str]:
    # Concurrency 1 and a 1 s lease: the second poll (a new process, seconds later) takes over the claims
    # the failed one held.
    return [sys.executable, "-m", "shared.cli", "poll", partner, "--json", "--quiet", "--concurrency", "1",
            "--settle", "0.1", "--lease", "1"]


def test_a_poll_fails_clearly_when_azurite_stops_and_the_next_one_lands_every_file_once(
        private_azurite: PrivateAzurite, sshd_server: SshdServer, tmp_path: Path) -> None:
    azurite = private_azurite
    prefix = f"t{uuid.uuid4().hex[:12]}"
    # The queue names the polls' clean environment uses (the defaults), whatever this process's environment says.
    settings = Settings(AzureWebJobsStorage=azurite.connection_string, WHARF_TABLE_PREFIX=prefix,
                        POLL_QUEUE=POLL_QUEUE, LANDED_QUEUE=LANDED_QUEUE, TRANSFER_QUEUE=TRANSFER_BATCHES_QUEUE,
                        WHARF_EVENTS_QUEUE=EVENTS_QUEUE)
    svc: Services = build_services(settings)
    svc.ensure_resources()
    partner = f"p{uuid.uuid4().hex[:12]}"
    folder = sshd_server.folder(partner)
    names = [f"f{i:02d}.csv" for i in range(COUNT)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(f"id,n\n{i},{'x' * 64}\n".encode() * 500)  # ~35 KiB each
    catalog = tmp_path / "partners.yaml"
    catalog.write_text(yaml.safe_dump({"partners": [{"id": partner, "name": partner, "sftp": {
        "host": sshd_server.host, "port": sshd_server.port, "username": sshd_server.username,
        "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd_server.fingerprint],
        "remote_dirs": [str(folder)], "min_age_seconds": 0, "post_action": "delete",
        "connect_timeout_seconds": 5, "operation_timeout_seconds": 10}}]}))
    env = {"PATH": "/usr/bin:/bin", "AzureWebJobsStorage": azurite.connection_string,
           "WHARF_TABLE_PREFIX": prefix, "WHARF_CATALOG_PATH": str(catalog), "WHARF_STACK_ENV": "/nonexistent",
           "WHARF_SECRET_RESTART_TEST_KEY": f"@{sshd_server.client_key.path}",
           "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}
    inbound = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("inbound")

    # The first poll: paused once 3 blobs have landed, Azurite stopped (SIGTERM: it saves its data), resumed.
    first = subprocess.Popen(_poll_cmd(partner), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)
    try:
        landed = 0
        deadline = time.monotonic() + 30
        while landed < 3 and first.poll() is None and time.monotonic() < deadline:
            landed = sum(1 for _ in inbound.list_blobs(name_starts_with=f"{partner}/"))
            time.sleep(0.02)
        assert first.poll() is None, "the poll ended before Azurite could be stopped under it"
        os.kill(first.pid, signal.SIGSTOP)
        azurite.stop()
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=FIRST_POLL_LIMIT)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == EXIT_STORAGE, (first.returncode, out, err)
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "storage" in last and f"127.0.0.1:{azurite.blob_port}" in err, err
    assert out == ""  # no summary: the poll did not finish

    # Azurite again, same ports and data; the next poll finishes the work.
    azurite.start()
    second = subprocess.run(_poll_cmd(partner), capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=SECOND_POLL_LIMIT, check=False)
    assert second.returncode == 0, (second.stdout, second.stderr)
    assert json.loads(second.stdout)["status"] == "ok"

    entries = {os.path.basename(e.path): e for e in svc.ledger.entries(partner)}
    assert sorted(entries) == names
    assert {e.state for e in entries.values()} == {LedgerState.DONE}  # nothing CLAIMED, nothing left LANDED
    blobs = [b.path for b in svc.blobs.list_blobs("inbound", f"{partner}/")]
    assert sorted(blobs) == sorted(e.blob_path for e in entries.values())  # one blob per file, no stray one
    listed = subprocess.run([sys.executable, "-m", "shared.cli", "jobs", "list", "--partner", partner,
                             "--limit", "100", "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=30, check=True)
    jobs = json.loads(listed.stdout)
    assert sorted(j["job_id"] for j in jobs) == sorted(e.job_id for e in entries.values())  # one visible job each
    assert sorted(j["file_name"] for j in jobs) == names
    assert os.listdir(folder) == []  # every post-action done
