"""Against Azurite: JobsByTime paging and filters agree with the fake (the same contract), the index follows status
changes and bulk creation, partner keys are stored as hashes, and `wharf keys` works end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from shared.bootstrap import Services
from shared.domain.ids import new_job_id
from shared.domain.job_index import JobQuery
from shared.domain.jobs import EventType, NewEvent, NewJob, utcnow
from shared.ports import JobStore
from shared.services.partner_keys import check_key, create_key, revoke_key
from tests.api_world import CATALOG
from tests.fakes import FakeJobStore

pytestmark = pytest.mark.azurite


def _seed(store: JobStore) -> list[str]:
    ids = []
    for i in range(6):
        job_id = new_job_id()
        store.append(job_id, EventType.CREATED, {"partner": "acme" if i % 2 else "globex", "job_type": "DROP",
                                                 "source": "t", "file_name": f"f{i}.csv"})
        ids.append(job_id)
    store.append(ids[1], EventType.STARTED, {})
    store.append(ids[1], EventType.FAILED, {"reason": "bad"})
    now = utcnow()
    bulk = new_job_id(now)
    store.create_jobs([NewJob(job_id=bulk, events=[NewEvent(type=EventType.CREATED, data={
        "partner": "acme", "job_type": "SFTP_INGEST", "source": "t", "file_name": "bulk.csv"})])])
    return [*ids, bulk]


def _pages(store: JobStore, query: JobQuery, limit: int) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = store.query_jobs(query, limit=limit, cursor=cursor)
        pages.append([j.job_id for j in page.jobs])
        cursor = page.next_cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize("kind", ["azurite", "fake"])
def test_query_jobs_contract(services: Services, kind: str) -> None:
    store: JobStore = services.jobs if kind == "azurite" else FakeJobStore()
    ids = _seed(store)
    newest_first = list(reversed(ids))
    assert [i for p in _pages(store, JobQuery(), 3) for i in p] == newest_first
    assert [len(p) for p in _pages(store, JobQuery(), 3)] == [3, 3, 1]
    assert [i for p in _pages(store, JobQuery(partner="acme"), 2) for i in p] == [ids[6], ids[5], ids[3], ids[1]]
    failed = store.query_jobs(JobQuery(status="FAILED")).jobs
    assert [(j.job_id, j.status.value, j.error) for j in failed] == [(ids[1], "FAILED", "bad")]
    assert [j.job_id for j in store.query_jobs(JobQuery(file_prefix="f4")).jobs] == [ids[4]]
    assert [j.job_id for j in store.query_jobs(JobQuery(job_type="SFTP_INGEST")).jobs] == [ids[6]]
    later = store.query_jobs(JobQuery(since=utcnow() + timedelta(minutes=1))).jobs
    assert later == []
    with pytest.raises(ValueError):
        store.query_jobs(JobQuery(), cursor="garbage")


def test_partner_keys_are_salted_hashes_and_scoped(services: Services, tmp_path: Path) -> None:
    from shared.catalog import parse_catalog

    services.overrides["catalog"] = parse_catalog(CATALOG, env={})
    services.partner_keys.ensure_table()
    value, row = create_key(services, "acme", created_by="test")
    secret = value.split("_", 2)[2]
    from azure.data.tables import TableServiceClient

    conn = services.settings.storage_connection_string or ""
    table = TableServiceClient.from_connection_string(conn).get_table_client(
        f"{services.settings.table_prefix}PartnerKeys")
    stored = [dict(e) for e in table.list_entities()]
    assert len(stored) == 1 and secret not in repr(stored) and stored[0]["Digest"] != secret
    assert check_key(services, "acme", value) is not None
    assert check_key(services, "globex", value) is None
    revoke_key(services, "acme", row.key_id)
    assert check_key(services, "acme", value) is None


def test_wharf_keys_cli(services: Services, tmp_path: Path) -> None:
    catalog = tmp_path / "partners.yaml"
    catalog.write_text(CATALOG)
    env = {**os.environ, "AzureWebJobsStorage": services.settings.storage_connection_string or "",
           "WHARF_TABLE_PREFIX": services.settings.table_prefix, "WHARF_CATALOG_PATH": str(catalog)}

    def wharf(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "shared.cli", "keys", *args], env=env, capture_output=True,
                              text=True, timeout=60, check=False)

    created = wharf("create", "acme")
    assert created.returncode == 0, created.stderr
    value = created.stdout.strip().splitlines()[-1]
    assert value.startswith("wpk_")
    assert wharf("create", "acme").returncode == 0
    third = wharf("create", "acme")
    assert third.returncode == 1 and "2 active keys" in third.stderr
    listed = wharf("list", "acme")
    assert listed.returncode == 0 and value.split("_", 2)[2] not in listed.stdout and '"active": true' in listed.stdout
    key_id = value.split("_")[1]
    assert wharf("revoke", "acme", key_id).returncode == 0
    assert wharf("create", "acme").returncode == 0
    assert wharf("create", "nobody").returncode == 2


@pytest.mark.parametrize("kind", ["azurite", "in-process"])
def test_last_polls_contract(services: Services, kind: str) -> None:
    """LastPolls: absent is None, each record replaces the channel's previous one, channels are separate, the
    stored error is redacted and the file list capped; the in-process store keeps the same contract."""
    from shared.adapters.ledger import InProcessLastPolls
    from shared.domain.ledger import LAST_POLL_FILES, LastPoll
    from shared.observability.redaction import register_secret

    store = services.last_polls if kind == "azurite" else InProcessLastPolls()
    store.ensure_table()
    assert store.get("sftp", "acme") is None
    at = utcnow().replace(microsecond=0)
    first = LastPoll(channel="sftp", partner="acme", status="ok", started_at=at, finished_at=at, landed=1,
                     files=("/in/ä b.csv",), bytes=2**40)
    store.record(first)
    assert store.get("sftp", "acme") == first
    register_secret("s3cret-in-error-value")
    many = tuple(f"/in/{i}.csv" for i in range(30))
    store.record(LastPoll(channel="sftp", partner="acme", status="failed", started_at=at,
                          finished_at=at + timedelta(seconds=3), error="login s3cret-in-error-value refused",
                          files=many))
    got = store.get("sftp", "acme")
    assert got is not None and got.status == "failed" and got.files == many[:LAST_POLL_FILES]
    assert "s3cret-in-error-value" not in got.error and got.finished_at == at + timedelta(seconds=3)
    assert store.get("mail", "acme") is None and store.get("sftp", "globex") is None
