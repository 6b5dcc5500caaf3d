"""GET /api/v1/jobs?limit=50 and the console's job list over a seeded table of 100,000 jobs (Azurite).

    python -m benchmarks.api_jobs                 # 100,000 jobs, 20 timed runs each, private Azurite
    python -m benchmarks.api_jobs -n 10000 --runs 10 --baseline --json
    python -m benchmarks.api_jobs --shared        # on the stack's Azurite (AzureWebJobsStorage) instead

Seeds JobsByTime (the list's index; with --baseline also IntegrationJob, the projection the old route scans)
directly in entity-group transactions of 100 rows (the lean batch body, shared/adapters/table_batch.py),
--threads at once, 10 partners, creation times spread over 45 days (two month partitions). By default on a
private, in-memory Azurite table service of its own (node_modules/.bin/azurite-table --inMemoryPersistence, on a
free port, stopped at the end): seeding 100,000 rows into the shared stack's Azurite, persisted to disk and
busy with other test runs, did not finish in 26 minutes, and left its tables to slow everyone else. --shared
uses the stack's Azurite under a table prefix of its own (deleted at the end unless --keep).

Timed, each the median of --runs after one warm-up, all server-side:
the store's query (first page, a filtered page, the second page by continuation), the whole API route through
dispatch (function key, parsing, JSON), and the console's jobs page (rendered HTML). Baseline, same run, with
--baseline (default up to 20,000 jobs): the old GET /api/jobs (reads every IntegrationJob row and sorts), 2 runs
after a warm-up (at 100,000 jobs a run takes minutes, the point of the new route).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient, UpdateMode

from shared.adapters import table_batch
from shared.adapters.tables import _index_entity, _job_to_entity
from shared.api.app import dispatch
from shared.api.auth import dev_cookie
from shared.api.config import ApiSettings
from shared.api.http import ApiRequest
from shared.bootstrap import build_services
from shared.catalog import parse_catalog
from shared.domain.job_index import JobQuery, index_key
from shared.domain.jobs import Job, JobStatus, JobType
from shared.services import jobs_view
from shared.settings import Settings, azurite_connection_string

PARTNERS = [f"bench{i}" for i in range(10)]
STATUSES = [JobStatus.COMPLETED] * 8 + [JobStatus.FAILED, JobStatus.RUNNING]


def _jobs(n: int, now: datetime) -> list[Job]:
    out = []
    span = timedelta(days=45).total_seconds()
    for i in range(n):
        at = now - timedelta(seconds=span * (n - i) / n)
        out.append(Job(job_id=f"job-{at:%Y%m%d%H%M%S%f}-{i:012x}", partner=PARTNERS[i % 10],
                       job_type=JobType.SFTP_INGEST, status=STATUSES[i % 10], created_at=at, updated_at=at,
                       file_name=f"invoices-{i:06d}.csv", bytes=1000 + i, event_count=5))
    return out


def _seed(service: TableServiceClient, prefix: str, jobs: list[Job], *, baseline: bool, threads: int) -> float:
    started = time.perf_counter()
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    tables: list[tuple[str, Callable[[Job], dict[str, Any]], Callable[[Job], str]]] = [
        ("JobsByTime", _index_entity, lambda j: index_key(j)[0])]
    if baseline:
        tables.append(("IntegrationJob", _job_to_entity, lambda j: j.partner))
    for table, entity, key in tables:
        by_pk: dict[str, list[dict[str, Any]]] = {}
        for job in jobs:
            by_pk.setdefault(key(job), []).append(entity(job))
        for rows in by_pk.values():
            batches += [(table, rows[i:i + 100]) for i in range(0, len(rows), 100)]
    clients = {t: service.get_table_client(prefix + t) for t in ("JobsByTime", "IntegrationJob")}

    def submit(batch: tuple[str, list[dict[str, Any]]]) -> None:
        for attempt in range(5):  # Azurite, shared with other work, drops a connection now and then
            try:
                table_batch.submit_transaction(clients[batch[0]], [("upsert", r, {"mode": UpdateMode.REPLACE})
                                                                   for r in batch[1]])
                return
            except AzureError:
                if attempt == 4:
                    raise
                time.sleep(1 + attempt)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, batches))
    return time.perf_counter() - started


class _TableAzurite:
    """azurite-table, in memory, on a free port: the benchmark's own table service."""

    def __init__(self) -> None:
        import socket
        import subprocess
        import tempfile
        from pathlib import Path

        root = Path(__file__).resolve().parent.parent
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._dir = tempfile.mkdtemp(prefix="bench-azurite-")
        self._proc = subprocess.Popen(  # the project's own azurite
            [str(root / "node_modules/.bin/azurite-table"), "--inMemoryPersistence", "--silent", "--loose",
             "--skipApiVersionCheck", "--disableTelemetry", "--tableHost", "127.0.0.1",
             "--tablePort", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=self._dir)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("azurite-table did not start") from None
                time.sleep(0.1)

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(table=self.port)

    def stop(self) -> None:
        import shutil

        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=15)
        shutil.rmtree(self._dir, ignore_errors=True)


def _median_ms(fn: Callable[[], Any], runs: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--shared", action="store_true", help="the stack's Azurite instead of a private one")
    ap.add_argument("--threads", type=int, default=4, help="seeding transactions in flight")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=None,
                    help="seed IntegrationJob too and time the old route (default: up to 20,000 jobs)")
    args = ap.parse_args(argv)
    baseline = args.baseline if args.baseline is not None else args.n <= 20_000

    private = None if args.shared else _TableAzurite()
    conn = private.connection_string if private else azurite_connection_string()
    prefix = f"b{uuid.uuid4().hex[:8]}"
    service = TableServiceClient.from_connection_string(conn)
    for t in ("JobsByTime", "IntegrationJob"):
        service.create_table_if_not_exists(prefix + t)
    now = datetime.now(UTC)
    services = build_services(Settings(AzureWebJobsStorage=conn, WHARF_TABLE_PREFIX=prefix))
    services.overrides["catalog"] = parse_catalog(
        "partners:\n" + "".join(f"  - {{id: {p}, name: {p}}}\n" for p in PARTNERS), env={})
    cfg = ApiSettings(WHARF_FUNCTION_KEY="bench-key", WHARF_CONSOLE_DEV_SIGNIN=True, WHARF_CONSOLE_SECRET="bench")
    try:
        seeded = _seed(service, prefix, _jobs(args.n, now), baseline=baseline, threads=args.threads)
        store = services.jobs
        first = store.query_jobs(JobQuery(), limit=50)

        def api(path: str, query: dict[str, str], headers: dict[str, str]) -> Callable[[], Any]:
            def call() -> None:
                r = dispatch(services, ApiRequest("GET", path, query, headers), cfg=cfg)
                assert r.status == 200, r.read()[:300]
                r.read()
            return call

        key = {"x-functions-key": "bench-key"}
        cookie = {"cookie": f"wharf_dev={dev_cookie(cfg, 'bench', 'reader')}"}
        results: dict[str, Any] = {
            "jobs": args.n, "seed_s": round(seeded, 1), "seed_rows_per_s": round(args.n / seeded),
            "azurite": "shared" if args.shared else "private in-memory azurite-table",
            "store_first_page": _median_ms(lambda: store.query_jobs(JobQuery(), limit=50), args.runs),
            "store_filtered_partner_status": _median_ms(
                lambda: store.query_jobs(JobQuery(partner="bench3", status="FAILED"), limit=50), args.runs),
            "store_second_page": _median_ms(
                lambda: store.query_jobs(JobQuery(), limit=50, cursor=first.next_cursor), args.runs),
            "api_v1_jobs_limit_50": _median_ms(api("/jobs", {"limit": "50"}, key), args.runs),
            "console_jobs_page": _median_ms(api("/console/jobs", {"limit": "50"}, cookie), args.runs),
        }
        if baseline:
            results["baseline_old_api_jobs"] = _median_ms(lambda: jobs_view.list_jobs(store, limit=50), 2)
    finally:
        if private is not None:
            private.stop()
        elif not args.keep:
            for t in ("JobsByTime", "IntegrationJob"):
                service.delete_table(prefix + t)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:32} {value}")
        if "baseline_old_api_jobs" in results:
            base = results["baseline_old_api_jobs"]["median_ms"]  # type: ignore[index]
            api_ms = results["api_v1_jobs_limit_50"]["median_ms"]  # type: ignore[index]
            print(f"{'v1 vs old route':32} {base / api_ms:.0f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
