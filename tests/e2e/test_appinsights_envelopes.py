"""What reaches Application Insights: the real Azure Monitor exporter, pointed at a local ingestion endpoint that
records every `/v2.1/track` envelope, while devhost runs one good and one failing SFTP file from poll to the end."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import env_name
from shared.settings import azurite_connection_string
from tests.e2e.test_processing import BAD, GOOD, catalog_yaml
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.e2e, pytest.mark.azurite, pytest.mark.sshd]
ROOT = Path(__file__).resolve().parents[2]
SITE = "func-wharf-envelopes"  # WEBSITE_SITE_NAME: the function app's name in Azure, its cloud_RoleName
IKEY = "00000000-0000-4000-8000-000000000017"
KEY = "envelopes-key-" + uuid.uuid4().hex[:8]


class Ingestion(ThreadingHTTPServer):
    """A local Application Insights ingestion endpoint: every envelope POSTed to /v2.1/track, accepted."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Track)
        self.envelopes: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Track(BaseHTTPRequestHandler):
    server: Ingestion

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
        if not self.path.endswith("/v2.1/track"):  # live metrics (QuickPulse) pings: answered, not recorded
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        text = body.decode("utf-8")
        items = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
        with self.server.lock:
            self.server.paths.append(self.path)
            self.server.bodies.append(body)
            self.server.envelopes.extend(items)
        reply = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def ingestion() -> Iterator[Ingestion]:
    server = Ingestion()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class App:
    """devhost in a child process exporting to `ingestion`."""

    def __init__(self, env: dict[str, str], options: dict[str, Any]) -> None:
        child_env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS"))},
                     **env, "PYTHONPATH": str(ROOT), "WHARF_TEST_DEVHOST": json.dumps(options)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.appinsights_host"], cwd=ROOT, env=child_env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            self.proc.kill()
            raise AssertionError(f"the app did not start: {line}{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.url = line.split()[1]

    def request(self, method: str, path: str) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, method=method, headers={"x-functions-key": KEY})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - 127.0.0.1 only
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_job(self, partner: str, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            _, jobs = self.request("GET", f"/jobs?partner={partner}")
            job = next((j for j in jobs or [] if j["file_name"] == name), None)
            if job and job["status"] in ("COMPLETED", "FAILED"):
                return dict(job)
            time.sleep(0.3)
        raise AssertionError(f"job for {name} did not finish")

    def stop(self) -> str:
        """Close stdin: the child stops devhost, flushes every exporter and exits."""
        _out, err = self.proc.communicate(input="", timeout=120)
        assert self.proc.returncode == 0, err
        return err


def test_app_insights_gets_one_operation_per_file_its_metrics_and_exceptions_without_secrets(
        ingestion: Ingestion, sshd_server: SshdServer, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    partner = f"ai{run}"
    outbound = sshd_server.folder(f"{partner}-out")
    key_secret = f"{partner}-key"
    key_text = sshd_server.client_key.path.read_text()
    catalog = tmp_path / "partners.yaml"
    catalog.write_text(catalog_yaml(partner, "EUR, USD").replace("    processing:\n", f"""    sftp:
      host: 127.0.0.1
      port: {sshd_server.port}
      username: {sshd_server.username}
      auth: {{ private_key_secret: {key_secret} }}
      host_keys: ["{sshd_server.known_hosts_line}"]
      remote_dirs: ["{outbound}"]
      min_age_seconds: 0
    processing:
""", 1))
    storage = azurite_connection_string()
    env = {
        "AzureWebJobsStorage": storage, "WHARF_TABLE_PREFIX": f"ai{run}", "POLL_QUEUE": f"poll-{run}",
        "LANDED_QUEUE": f"landed-{run}", "TRANSFER_QUEUE": f"transfer-{run}", "REDELIVERY_QUEUE": f"redeliver-{run}",
        "WHARF_EVENTS_QUEUE": f"events-{run}",
        "WHARF_CATALOG_PATH": str(catalog),
        "WHARF_FUNCTION_KEY": KEY, "WHARF_PUBLISHER": "queue", "AzureFunctionsWebHost__hostid": f"ai-{run}",
        env_name(key_secret): key_text,
        "APPLICATIONINSIGHTS_CONNECTION_STRING": (f"InstrumentationKey={IKEY};IngestionEndpoint={ingestion.url};"
                                                  f"LiveEndpoint={ingestion.url}"),
        # Nothing may leave 127.0.0.1: no statsbeat, no control-plane (settings.sdk.monitor.azure.com) polling.
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "WEBSITE_SITE_NAME": SITE,
        # Export at once: spans and logs every 200 ms, metrics every second.
        "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "WHARF_LOG_FORMAT": "json",
    }
    drop = f"drop-ai{run}"
    app = App(env, {"blob_containers": {"drop": drop}, "event_grid_blobs": {"intake_drop": "drop/{name}"}})
    stderr = ""
    try:
        (outbound / "good.csv").write_bytes(GOOD)
        code, summary = app.request("POST", f"/partners/{partner}/poll?wait=true")
        if code != 200:
            stderr = app.stop()
        assert code == 200 and summary["landed"] == 1, (summary, stderr[-4000:])
        good = app.wait_job(partner, "good.csv")
        (outbound / "bad.csv").write_bytes(BAD)
        code, summary = app.request("POST", f"/partners/{partner}/poll?wait=true")
        assert code == 200 and summary["landed"] == 1, summary
        bad = app.wait_job(partner, "bad.csv")
    finally:
        if app.proc.returncode is None:
            stderr = app.stop()
    assert (good["status"], bad["status"]) == ("COMPLETED", "FAILED")
    envelopes = list(ingestion.envelopes)
    assert envelopes, stderr[-3000:]
    assert all(p.endswith("/v2.1/track") for p in ingestion.paths)

    # cloud_RoleName is the function app's (WEBSITE_SITE_NAME), on every item.
    assert {e["tags"].get("ai.cloud.role") for e in envelopes} == {SITE}

    # One operation_Id for the good file: poll, transfer, queue hop, orchestration, each activity, each delivery,
    # one connected tree (a single root; every other item's parent is in the operation).
    operation = _operation_of(envelopes, good["job_id"])
    names = {_name(e) for e in operation}
    for expected in ("sftp.poll", "sftp.file", "sftp.read", "landing.record_many", "queue.send", "intake.start",
                     "activity.start_job", "activity.validate_and_transform", "activity.plan_routes",
                     "activity.route_file", "activity.archive_file", "activity.complete_job", "route.blob",
                     "event.publish"):
        assert expected in names, f"{expected} missing from operation: {sorted(names)}"
    assert sum(1 for e in operation if _name(e) == "activity.route_file") == 2  # one per destination
    spans = [e for e in operation if e["data"]["baseType"] in ("RemoteDependencyData", "RequestData")]
    ids = {e["data"]["baseData"]["id"] for e in spans}
    roots = [e for e in spans if e["tags"].get("ai.operation.parentId") not in ids]
    assert [_name(e) for e in roots] == ["sftp.poll"], [_name(e) for e in roots]

    # The failing file: its own operation, with an exception item carrying its job id (and a warning log line).
    failed_operation = _operation_of(envelopes, bad["job_id"])
    exceptions = [e for e in failed_operation if e["data"]["baseType"] == "ExceptionData"]
    assert exceptions and all(e["data"]["baseData"]["properties"].get("wharf.job_id") == bad["job_id"]
                              for e in exceptions), exceptions
    assert exceptions[0]["data"]["baseData"]["exceptions"][0]["typeName"].endswith("ValidationFailedError")
    messages = [e["data"]["baseData"] for e in failed_operation if e["data"]["baseType"] == "MessageData"]
    assert any(m["message"] == "job failed" and m["properties"]["job_id"] == bad["job_id"] for m in messages)

    # Wharf's metrics arrive with their dimensions.
    metrics = _metrics(envelopes)
    assert {"partner": partner, "channel": "sftp"} in metrics["wharf.files.ingested"]
    assert {"partner": partner, "channel": "sftp"} in metrics["wharf.bytes.ingested"]
    assert {"partner": partner, "channel": "sftp"} in metrics["wharf.transfer.duration"]
    assert {"partner": partner, "status": "completed"} in metrics["wharf.job.duration"]
    assert {"partner": partner, "status": "failed"} in metrics["wharf.job.duration"]
    assert {"partner": partner, "channel": "process", "reason": "validation"} in metrics["wharf.failures"]
    assert {"queue": f"landed-{run}"} in metrics["wharf.queue.message_age"]

    # No secret value in anything sent: the partner's private key, the storage account key, the function key.
    sent = b"\n".join(ingestion.bodies).decode()
    account_key = next(p.split("=", 1)[1] for p in storage.split(";") if p.startswith("AccountKey="))
    for secret in [*key_text.strip().splitlines()[1:-1], account_key, KEY]:
        assert secret not in sent


def _name(envelope: dict[str, Any]) -> str:
    return str(envelope["data"]["baseData"].get("name", ""))


def _operation_of(envelopes: list[dict[str, Any]], job_id: str) -> list[dict[str, Any]]:
    """Every item of the one operation holding a job's work (operators' reads, `jobs.*`, aside)."""
    operations = {e["tags"].get("ai.operation.id") for e in envelopes
                  if (e["data"]["baseData"].get("properties") or {}).get("wharf.job_id") == job_id
                  and not _name(e).startswith("jobs.")}
    assert len(operations) == 1, f"job {job_id} is spread over operations {operations}"
    [operation] = operations
    return [e for e in envelopes if e["tags"].get("ai.operation.id") == operation]


def _metrics(envelopes: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """Custom metric name -> the dimension sets it arrived with."""
    out: dict[str, list[dict[str, str]]] = {}
    for e in envelopes:
        if e["data"]["baseType"] == "MetricData":
            for metric in e["data"]["baseData"]["metrics"]:
                out.setdefault(metric["name"], []).append(dict(e["data"]["baseData"].get("properties") or {}))
    return out
