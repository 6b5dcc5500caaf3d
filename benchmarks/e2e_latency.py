"""End-to-end latency of one small file, from landing to COMPLETED, through devhost (in-process).

    python -m benchmarks.e2e_latency            # 15 files, one at a time
    python -m benchmarks.e2e_latency -n 30 --json

Needs Azurite on 127.0.0.1:10000-10002 (make stack-start). Each file is landed the way an ingestion lands it
(raw blob, job events, a file-landed message), then timed until its job is COMPLETED. The named baseline,
measured in the same run, is the floor of the same path without the pipeline: one file-landed message
through devhost's queue polling and a Durable orchestration whose only activity returns at once.
Reported: medians and p90 of both, and the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

ROOT = Path(__file__).resolve().parents[1]
CSV = b"invoice_id,customer,amount,currency,issued_on\n1,Acme,10.50,EUR,2026-11-01\n2,Globex,7,USD,2026-11-02\n"
CATALOG = """
partners:
  - id: {partner}
    name: Latency
    processing:
      rules:
        - match: "*.csv"
          type: csv
          csv:
            columns:
              invoice_id: {{ type: integer }}
              amount: {{ type: decimal }}
              currency: {{ type: enum, values: [EUR, USD] }}
              issued_on: {{ type: date, format: "%Y-%m-%d" }}
          transform: {{ name: csv_to_jsonl }}
    routes:
      - name: all
        default: true
        destinations:
          - {{ kind: blob, container: processed, path: "{{partner}}/{{job_id}}/{{stem}}.jsonl" }}
          - {{ kind: event }}
"""
DONE: dict[str, float] = {}


def baseline_app(queue: str) -> df.DFApp:
    """The floor: queue message -> orchestration -> one no-op activity."""
    app = df.DFApp()

    @app.function_name("bench_queue")
    @app.queue_trigger(arg_name="msg", queue_name=queue, connection="AzureWebJobsStorage")
    @app.durable_client_input(client_name="client")
    async def bench_queue(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
        body = json.loads(msg.get_body())
        await client.start_new("bench_orchestrator", instance_id=body["id"], client_input=body)

    @app.orchestration_trigger(context_name="context")
    def bench_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, str]:
        body = context.get_input()
        yield context.call_activity(bench_activity, body)
        return body["id"]

    @app.activity_trigger(input_name="body")
    def bench_activity(body: dict[str, Any]) -> str:
        DONE[body["id"]] = time.perf_counter()
        return str(body["id"])

    return app


def _wait(check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError("timed out")


def measure_baseline(n: int, conn: str) -> list[float]:
    from azure.storage.queue import QueueClient, TextBase64EncodePolicy

    from devhost.host import DevHost

    queue = f"bench-{uuid.uuid4().hex[:8]}"
    client = QueueClient.from_connection_string(conn, queue, message_encode_policy=TextBase64EncodePolicy())
    client.create_queue()
    host = DevHost(baseline_app(queue), settings_env={"AzureWebJobsStorage": conn}, http_port=0,
                   enable_timers=False, app_dir=ROOT,
                   host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:00.500"}}}).start()
    out = []
    try:
        for _ in range(n):
            key = uuid.uuid4().hex
            started = time.perf_counter()
            client.send_message(json.dumps({"id": key}))
            _wait(lambda key=key: key in DONE)
            out.append(DONE[key] - started)
    finally:
        host.stop()
        client.delete_queue()
    return out


def measure_wharf(n: int, conn: str) -> list[float]:
    from devhost.host import DevHost
    from shared import bootstrap
    from shared.domain.ids import new_job_id
    from shared.domain.jobs import EventType

    run = uuid.uuid4().hex[:8]
    partner = f"lat{run}"
    catalog = Path(tempfile.mkdtemp()) / "partners.yaml"
    catalog.write_text(CATALOG.format(partner=partner))
    env = {"AzureWebJobsStorage": conn, "WHARF_TABLE_PREFIX": f"bench{run}", "LANDED_QUEUE": f"landed-{run}",
           "POLL_QUEUE": f"poll-{run}",
           "TRANSFER_QUEUE": f"transfer-{run}", "REDELIVERY_QUEUE": f"redeliver-{run}",
           "WHARF_EVENTS_QUEUE": f"events-{run}", "WHARF_CATALOG_PATH": str(catalog),
           "WHARF_FUNCTION_KEY": "bench", "AzureFunctionsWebHost__hostid": f"bench-{run}"}
    sys.modules.pop("function_app", None)
    app = importlib.import_module("function_app").app
    bootstrap.get_services.cache_clear()
    host = DevHost(app, settings_env=env, http_port=0, enable_timers=False, app_dir=ROOT,
                   host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:00.500"}}}).start()
    out = []
    try:
        services = bootstrap.get_services()
        services.ensure_resources()
        for i in range(n):
            job_id = new_job_id()
            name = f"lat-{i}.csv"
            path = f"{partner}/{datetime.now(UTC):%Y/%m/%d}/{job_id}/{name}"
            started = time.perf_counter()
            info = services.blobs.upload_stream("inbound", path, [CSV])
            services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD",
                                                             "source": "bench", "file_name": name})
            services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"inbound/{path}", "bytes": info.size,
                                                                 "sha256": info.sha256, "file_name": name})
            services.queues.send(env["LANDED_QUEUE"], {"job_id": job_id, "partner": partner, "container": "inbound",
                                                       "blob_path": path, "file_name": name})
            _wait(lambda job_id=job_id: services.jobs.get_job(job_id).status.value in ("COMPLETED", "FAILED"))
            out.append(time.perf_counter() - started)
            if services.jobs.get_job(job_id).status.value != "COMPLETED":
                raise RuntimeError(f"job {job_id} failed: {services.jobs.get_job(job_id).error}")
    finally:
        host.stop()
        bootstrap.get_services.cache_clear()
    return out


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median_ms": statistics.median(ordered) * 1000,
            "p90_ms": ordered[max(0, int(len(ordered) * 0.9) - 1)] * 1000, "n": len(ordered)}


def main(argv: list[str] | None = None) -> int:
    from shared.settings import azurite_connection_string

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    conn = azurite_connection_string()
    base = _stats(measure_baseline(args.n, conn))
    wharf = _stats(measure_wharf(args.n, conn))
    result = {"baseline": base, "wharf": wharf, "ratio_median": wharf["median_ms"] / base["median_ms"]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'path':<44} {'median':>9} {'p90':>9}")
        print(f"{'baseline: queue -> orchestration -> no-op':<44} {base['median_ms']:>7.0f}ms {base['p90_ms']:>7.0f}ms")
        print(f"{'wharf: landed -> COMPLETED (small CSV)':<44} {wharf['median_ms']:>7.0f}ms {wharf['p90_ms']:>7.0f}ms")
        print(f"ratio (median): {result['ratio_median']:.2f}x over {args.n} files each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
