"""Processing end to end through devhost: landed file -> orchestration -> routes; failure; replay."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from tests.e2e.conftest import E2E

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]
ROOT = Path(__file__).resolve().parents[2]

GOOD = b"invoice_id,customer,amount,currency,issued_on\n1,Acme,10.50,EUR,2026-11-01\n2,Globex,7,USD,2026-11-02\n"
BAD = (b"invoice_id,customer,amount,currency,issued_on\n1,Acme,10.50,EUR,2026-11-01\n"
       b"2,Globex,lots,CHF,2026-11-02\n")


def processing_yaml(blob_path: str, currencies: str | None = None) -> str:
    """A partner's processing and routes (YAML at a partner's depth): invoice CSVs, their columns typed when
    `currencies` is given, turned into JSONL at `processed/<blob_path>` and announced by a file.processed event."""
    columns = "" if currencies is None else f"""            columns:
              invoice_id: {{ type: integer, required: true }}
              amount: {{ type: decimal, required: true }}
              currency: {{ type: enum, values: [{currencies}] }}
              issued_on: {{ type: date, format: "%Y-%m-%d" }}
"""
    return f"""    processing:
      rules:
        - match: "*.csv"
          type: csv
          csv:
            required_columns: [invoice_id, customer, amount, currency, issued_on]
{columns}          transform: {{ name: csv_to_jsonl }}
    routes:
      - name: invoices
        match: {{ file_glob: "*.csv" }}
        destinations:
          - {{ kind: blob, container: processed, path: "{blob_path}" }}
          - {{ kind: event, type: file.processed }}
"""


def catalog_yaml(partner: str, currencies: str) -> str:
    return f"""
partners:
  - id: {partner}
    name: E2E partner
{processing_yaml("{partner}/{yyyy}/{MM}/{dd}/{stem}.jsonl", currencies)}"""


def land(e2e: E2E, partner: str, name: str, content: bytes) -> str:
    """Land a file as an ingestion would: raw blob, job events, file-landed message."""
    services = e2e.services
    job_id = new_job_id()
    path = f"{partner}/{datetime.now(UTC):%Y/%m/%d}/{job_id}/{name}"
    info = services.blobs.upload_stream("inbound", path, [content])
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD",
                                                     "source": "e2e", "file_name": name})
    services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{path}", "bytes": info.size,
                                                         "sha256": info.sha256, "file_name": name})
    services.queues.send(e2e.env["LANDED_QUEUE"], {"job_id": job_id, "partner": partner, "container": "inbound",
                                                   "blob_path": path, "file_name": name})
    return job_id


def events_for(e2e: E2E, job_id: str) -> list[dict]:
    return [m for m in e2e.services.queues.peek(e2e.env["WHARF_EVENTS_QUEUE"], 32)
            if m["data"].get("job_id") == job_id]


def test_good_file_completes_and_is_routed(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    job_id = land(e2e, partner, "invoices-1.csv", GOOD)
    detail = e2e.wait_job(job_id)
    assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
    assert detail["job"]["steps_completed"] == ["validate", "transform", "archive"]
    today = datetime.now(UTC)
    target = f"{partner}/{today:%Y/%m/%d}/invoices-1.jsonl"
    lines = b"".join(e2e.services.blobs.open_read("processed", target)).decode().splitlines()
    assert [json.loads(line)["customer"] for line in lines] == ["Acme", "Globex"]
    event = e2e.wait_for("file.processed event", lambda: events_for(e2e, job_id))[0]
    assert event["type"] == "file.processed"
    assert event["data"]["blob_url"].endswith(f"/processed/{target}")
    assert event["data"]["rows"] == 2
    assert e2e.services.blobs.list_blobs("archive", f"{partner}/")


def test_bad_file_fails_is_quarantined_and_replays_after_the_catalogue_is_fixed(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    job_id = land(e2e, partner, "invoices-2.csv", BAD)
    detail = e2e.wait_job(job_id)
    job = detail["job"]
    assert job["status"] == "FAILED"
    assert job["error"].startswith("validation failed")
    failed = next(e for e in detail["events"] if e["type"] == "step.failed")
    errors = failed["data"]["report"]["errors"]
    assert {(e["row"], e["line"], e["column"], e["field"]) for e in errors} == {
        (2, 3, 3, "amount"), (2, 3, 4, "currency")}
    quarantined = [b.path for b in e2e.services.blobs.list_blobs("quarantine", f"{partner}/")]
    assert any(p.endswith("/invoices-2.csv") for p in quarantined)
    assert any(p.endswith("/invoices-2.csv.validation.json") for p in quarantined)
    failed_event = e2e.wait_for("job.failed event", lambda: events_for(e2e, job_id))[0]
    assert failed_event["type"] == "job.failed"

    # The operator reads the report with the CLI.
    shown = subprocess.run([sys.executable, "-m", "shared.cli", "jobs", "show", job_id], capture_output=True,
                           text=True, env={**e2e.env, "PATH": "/usr/bin:/bin"}, cwd=ROOT, check=True)
    assert "row 2, line 3, column 3 (amount):" in shown.stdout and "[FAILED]" in shown.stdout

    # Fix the catalogue (CHF is accepted, amount becomes free text), then replay the stored raw file.
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD, CHF").replace("type: decimal", "type: string"))
    code, body = e2e.request("POST", f"/jobs/{job_id}/replay")
    assert code == 202
    new_id = body["job_id"]
    replayed = e2e.wait_job(new_id)
    assert replayed["job"]["status"] == "COMPLETED", replayed["job"]["error"]
    assert replayed["job"]["parent_job_id"] == job_id
    _code, old = e2e.request("GET", f"/jobs/{job_id}")
    assert old["job"]["replayed_by"] == new_id
    assert [e["type"] for e in old["events"]][-1] == "job.replayed"


def test_routes_need_a_key_and_health_does_not(e2e: E2E) -> None:
    assert e2e.request("GET", "/jobs", key=False)[0] == 401
    code, body = e2e.request("GET", "/health", key=False)
    assert code == 200 and set(body) == {"status"}  # the details are for callers with a key
    code, body = e2e.request("GET", "/health/details")
    assert code == 200 and body["dependencies"]["storage.table"]["state"] == "ok"


def test_unknown_job_is_404(e2e: E2E) -> None:
    code, body = e2e.request("GET", "/jobs/job-does-not-exist")
    assert code == 404 and "not found" in body["error"]


def test_redelivered_message_starts_nothing_twice(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    job_id = land(e2e, partner, "invoices-3.csv", GOOD)
    first = e2e.wait_job(job_id)
    assert first["job"]["status"] == "COMPLETED"
    # The same message again, as a queue redelivery or a duplicate event would bring it.
    container, _, path = first["job"]["blob_path"].partition("/")
    e2e.services.queues.send(e2e.env["LANDED_QUEUE"], {"job_id": job_id, "partner": partner, "container": container,
                                                       "blob_path": path, "file_name": "invoices-3.csv"})
    e2e.wait_for("the duplicate to be consumed", lambda: not e2e.services.queues.peek(e2e.env["LANDED_QUEUE"]))
    e2e.host.wait_idle(30)
    _code, again = e2e.request("GET", f"/jobs/{job_id}")
    assert [e["type"] for e in again["events"]].count("job.started") == 1
    assert again["job"]["event_count"] == first["job"]["event_count"]


def test_blob_dropped_in_drop_folder_becomes_a_completed_job(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD"))
    e2e.services.blobs.upload_stream(e2e.drop_container, f"{partner}/dropped.csv", [GOOD])

    def job() -> dict | None:
        jobs = e2e.services.jobs.list_jobs(partner=partner)
        return jobs[0].model_dump() if jobs and jobs[0].status.value in ("COMPLETED", "FAILED") else None

    done = e2e.wait_for("the drop job", job)
    assert (done["status"], done["job_type"], done["file_name"]) == ("COMPLETED", "DROP", "dropped.csv")
    assert done["job_id"].startswith("job-drop-")
    assert done["blob_path"].startswith(f"inbound/{partner}/") and done["sha256"]
    assert not e2e.services.blobs.exists(e2e.drop_container, f"{partner}/dropped.csv")  # taken once copied
    assert e2e.services.blobs.exists("processed", f"{partner}/{datetime.now(UTC):%Y/%m/%d}/dropped.jsonl")
