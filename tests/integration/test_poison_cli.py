"""`wharf poison ...` against Azurite, and what `wharf` prints when storage is down or not set up."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.bootstrap import Services, build_services
from shared.cli import main
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, JobStatus
from shared.services import poison
from shared.settings import AZURITE_ACCOUNT, AZURITE_KEY, Settings

pytestmark = pytest.mark.azurite
ROOT = Path(__file__).resolve().parents[2]
CATALOG = """
partners:
  - id: acme
    name: Acme
    processing:
      rules:
        - {match: "*.csv", type: csv}
"""


@pytest.fixture
def world(azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    run = uuid.uuid4().hex[:10]
    catalog = tmp_path / "partners.yaml"
    catalog.write_text(CATALOG)
    env = {"AzureWebJobsStorage": azurite, "LANDED_QUEUE": f"pl{run}", "POLL_QUEUE": f"pp{run}",
           "TRANSFER_QUEUE": f"pt{run}", "REDELIVERY_QUEUE": f"pr{run}", "WHARF_EVENTS_QUEUE": f"pe{run}",
           "WHARF_TABLE_PREFIX": f"pc{run}",
           "WHARF_CATALOG_PATH": str(catalog),
           "WHARF_STACK_ENV": "/nonexistent"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    services = build_services(Settings())
    services.ensure_resources()
    yield services
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    queues = QueueServiceClient.from_connection_string(azurite)
    for name in services.queue_names():
        queues.delete_queue(name)
    tables = TableServiceClient.from_connection_string(azurite)
    for table in tables.list_tables():
        if table.name.startswith(services.settings.table_prefix):
            tables.delete_table(table.name)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def pending_job(services: Services, partner: str) -> str:
    job_id = new_job_id()
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD", "source": "t",
                                                     "file_name": "a.csv"})
    services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{partner}/{job_id}/a.csv",
                                                         "bytes": 1, "sha256": "", "file_name": "a.csv"})
    return job_id


def landed(job_id: str, partner: str) -> bytes:
    return json.dumps({"job_id": job_id, "partner": partner, "container": "inbound",
                       "blob_path": f"{partner}/{job_id}/a.csv", "file_name": "a.csv"}).encode()


def test_list_show_requeue_and_drop(world: Services, capsys: pytest.CaptureFixture[str]) -> None:
    landed_q = world.settings.landed_queue
    poison_q = f"{landed_q}-poison"
    job_id = pending_job(world, "gone")
    delivery = poison.Delivery(queue=landed_q, id="orig-1", body=landed(job_id, "gone"), dequeue_count=1)
    assert poison.accept_file_landed(world, delivery) is None
    assert world.jobs.get_job(job_id).status is JobStatus.FAILED
    raw = QueueClient.from_connection_string(world.settings.storage_connection_string or "", poison_q)
    host_body = landed(pending_job(world, "acme"), "acme")
    raw.send_message(base64.b64encode(host_body).decode())  # the host's copy after maxDequeueCount: as it was
    raw.send_message("{\"not\": \"base64\"}")  # a tool's message the host could not even decode

    code, out, _ = cli(capsys, "poison", "list", "--json")
    assert code == 0
    listings = {entry["queue"]: entry for entry in json.loads(out)}
    assert set(listings) == {poison_q, f"{world.settings.poll_queue}-poison",
                             f"{world.settings.transfer_queue}-poison", f"{world.settings.redelivery_queue}-poison"}
    assert listings[poison_q]["depth"] == 3
    wharf, host, tool = listings[poison_q]["messages"]
    assert (wharf["reason"], wharf["job_id"], wharf["dead_lettered_by"], wharf["dequeue_count"]) == (
        "unknown_partner", job_id, "wharf", 0)
    assert wharf["inserted_at"] and "body" not in wharf
    assert (host["reason"], host["dead_lettered_by"]) == (poison.UNKNOWN_REASON, "host")

    code, out, _ = cli(capsys, "poison", "list", landed_q)
    assert code == 0 and out.startswith(f"{poison_q}: 3 message(s)")
    assert wharf["id"] in out and "unknown_partner" in out and job_id in out and poison.UNKNOWN_REASON in out

    code, out, _ = cli(capsys, "poison", "show", poison_q, wharf["id"], "--json")
    shown = json.loads(out)
    assert code == 0 and json.loads(shown["body"]) == json.loads(landed(job_id, "gone"))
    assert "not in the catalogue" in shown["detail"] and shown["original_message_id"] == "orig-1"
    code, out, _ = cli(capsys, "poison", "show", poison_q, tool["id"])
    assert code == 0 and "reason unknown" in out and "\"not\": \"base64\"" in out

    code, out, _ = cli(capsys, "poison", "requeue", poison_q, wharf["id"])
    assert code == 0 and f"requeued {wharf['id']} to {landed_q}" in out and job_id in out
    (back,) = world.queues.peek_raw(landed_q)
    assert back.body == landed(job_id, "gone")  # the envelope unwrapped: the original body
    assert any("requeued" in str(e.data.get("reason")) for e in world.jobs.events(job_id))
    code, _, _ = cli(capsys, "poison", "requeue", landed_q, host["id"])
    assert code == 0 and world.queues.peek_raw(landed_q)[1].body == host_body

    code, out, _ = cli(capsys, "poison", "drop", poison_q, tool["id"])
    assert code == 0 and f"dropped {tool['id']}" in out
    assert world.queues.depth(poison_q) == 0
    code, _, err = cli(capsys, "poison", "drop", poison_q, tool["id"])
    assert code == 2 and err.startswith(f"error: no message {tool['id']} in {poison_q}")


def test_a_message_beyond_the_first_32_is_found_and_the_others_stay(world: Services,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    poison_q = f"{world.settings.poll_queue}-poison"
    ids = [world.queues.send_raw(poison_q, json.dumps({"partner": f"p{i:02d}"}).encode()) for i in range(40)]
    code, out, _ = cli(capsys, "poison", "list", poison_q)
    assert code == 0 and "40 message(s) (showing the first 32" in out and ids[37] not in out
    code, out, _ = cli(capsys, "poison", "show", poison_q, ids[37], "--json")
    assert code == 0 and json.loads(json.loads(out)["body"]) == {"partner": "p37"}
    code, _, _ = cli(capsys, "poison", "drop", poison_q, ids[38])
    assert code == 0
    left = [m.id for m in world.queues.peek_raw(poison_q, 32)]
    assert left == ids[:32]  # everything looked through is visible again, in order
    assert world.queues.depth(poison_q) == 39


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "WHARF_STACK_ENV": "/nonexistent", **env}
    return subprocess.run([sys.executable, "-m", "shared.cli", *argv], capture_output=True, text=True, env=base,
                          cwd=ROOT, timeout=180, check=False)


def test_storage_down_is_one_line_and_exit_3(azurite: str) -> None:
    blob, queue, table = (_closed_port() for _ in range(3))
    down = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{blob}/{AZURITE_ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{queue}/{AZURITE_ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{table}/{AZURITE_ACCOUNT};")
    run = _run("jobs", "list", AzureWebJobsStorage=down)
    assert run.returncode == 3, run.stderr
    assert run.stderr.splitlines() == [
        f"error: table storage at http://127.0.0.1:{table} is unreachable (connection refused)"]
    assert AZURITE_KEY not in run.stderr
    debug = _run("--debug", "jobs", "list", AzureWebJobsStorage=down)
    assert debug.returncode == 3 and "Traceback (most recent call last)" in debug.stderr
    assert "ServiceRequestError" in debug.stderr and debug.stderr.splitlines()[-1] == run.stderr.strip()


def test_tables_not_created_yet_say_to_run_resources_ensure(azurite: str) -> None:
    run = _run("jobs", "list", AzureWebJobsStorage=azurite, WHARF_TABLE_PREFIX=f"none{uuid.uuid4().hex[:8]}")
    assert run.returncode == 4, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith("error: the table none") and "does not exist in table storage at http://127.0.0.1:" in line
    assert line.endswith("run `wharf resources ensure`")


def test_an_unexpected_error_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.cli import jobs

    def boom(args: Any) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "cmd_jobs_list", boom)
    with pytest.raises(RuntimeError, match="a bug"):  # not a storage failure: not hidden behind one line
        main(["jobs", "list"])
