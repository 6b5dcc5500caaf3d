"""Through devhost: the same file name twice in one day gives two outputs, each where its job says."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.test_processing import GOOD, catalog_yaml, events_for, land

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]

OTHER = b"invoice_id,customer,amount,currency,issued_on\n7,Initech,1.25,EUR,2026-12-01\n"
DAY_PATH = '{ kind: blob, container: processed, path: "{partner}/{yyyy}/{MM}/{dd}/{stem}.jsonl" }'


def test_a_daily_resend_of_the_same_name_keeps_both_outputs(e2e: E2E) -> None:
    partner = f"p{uuid.uuid4().hex[:8]}"
    # The catalogue's default blob path (no path given), as the demo partner now uses it.
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD").replace(DAY_PATH, "{ kind: blob }"))
    jobs = {land(e2e, partner, "invoices_20261201.csv", content): content for content in (GOOD, OTHER)}
    customers = {GOOD: ["Acme", "Globex"], OTHER: ["Initech"]}
    targets = set()
    for job_id, content in jobs.items():
        detail = e2e.wait_job(job_id)
        assert detail["job"]["status"] == "COMPLETED", detail["job"]["error"]
        (routed,) = [e["data"] for e in detail["events"] if e["type"] == "file.routed" and e["data"]["kind"] == "blob"]
        container, _, path = routed["target"].partition("/")
        data = b"".join(e2e.services.blobs.open_read(container, path))
        assert hashlib.sha256(data).hexdigest() == routed["sha256"]
        assert [json.loads(line)["customer"] for line in data.decode().splitlines()] == customers[content]
        event = e2e.wait_for("file.processed", lambda job_id=job_id: events_for(e2e, job_id))[0]
        assert (event["data"]["blob"], event["data"]["sha256"]) == (routed["target"], routed["sha256"])
        targets.add(routed["target"])
    assert len(targets) == 2
