"""Secrets never leave the redaction boundary: a SAS connection string and a registered secret that shows up in
error messages, through devhost, then every table, blob, published event and orchestration history searched."""

from __future__ import annotations

import importlib
import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from azure.core.exceptions import AzureError
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared import workflows
from shared.adapters.secrets import env_name
from shared.domain.errors import DependencyUnavailableError
from shared.domain.remote import RemoteFileError, SftpAuthError
from shared.workflows import RetryPolicy
from tests import planted
from tests.e2e.conftest import E2E, FUNCTION_KEY
from tests.e2e.test_processing import GOOD, processing_yaml
from tests.integration.sshd_server import SshdServer
from tests.integration.test_sas_storage import sas_connection_string

pytestmark = [pytest.mark.e2e, pytest.mark.azurite, pytest.mark.sshd]

ROOT = Path(__file__).resolve().parents[2]


class LeakySources:
    """The app's SFTP connector, but the server echoes a secret in two error messages (as some servers and
    libraries do): the `down` partner's login is refused, and reading `broken.csv` fails. The secret is
    fetched through the app's secrets adapter, which registers it as it does for every secret it hands out."""

    def __init__(self, real: Any, secrets: Any, *, down: str, secret_name: str) -> None:
        self._real, self._secrets, self._down, self._secret_name = real, secrets, down, secret_name

    def open(self, partner_id: str, config: Any) -> Any:
        password = self._secrets.get(self._secret_name)
        if partner_id == self._down:
            raise SftpAuthError(f"partner {partner_id}: the server refused {password} for {config.username}")
        return LeakySession(self._real.open(partner_id, config), password)


class LeakySession:
    def __init__(self, real: Any, password: str) -> None:
        self._real, self._password = real, password

    def read_chunks(self, path: str, *, expected: Any = None) -> Iterator[bytes]:
        if path.endswith("/broken.csv"):
            raise RemoteFileError(path, None, f"the server closed the handle opened with {self._password}")
        result: Iterator[bytes] = self._real.read_chunks(path, expected=expected)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class LeakyPublisher:
    """The app's publisher, but sending `file.processed` for `fail.csv` fails with an error that echoes the
    secret and the storage connection string (an SDK echoing its configuration)."""

    def __init__(self, real: Any, *, password: str, connection: str) -> None:
        self._real, self._password, self._connection = real, password, connection

    def publish(self, event_type: str, data: Mapping[str, Any], *, subject: str = "") -> None:
        if event_type == "file.processed" and data.get("file_name") == "fail.csv":
            raise DependencyUnavailableError("event broker", f"send refused ({self._password}) on {self._connection}")
        self._real.publish(event_type, data, subject=subject)


def catalog(partner: str, down: str, sshd: SshdServer, outbound: Path, key_secret: str, password_secret: str) -> str:
    sftp = f"""      host: 127.0.0.1
      port: {sshd.port}
      username: {sshd.username}
      host_keys: ["{sshd.known_hosts_line}"]
      min_age_seconds: 0
"""
    return f"""
partners:
  - id: {partner}
    name: Redaction partner
    sftp:
{sftp}      auth: {{ private_key_secret: {key_secret} }}
      remote_dirs: ["{outbound}"]
      post_action: delete
{processing_yaml("{partner}/{job_id}/{stem}.jsonl")}  - id: {down}
    name: Unreachable partner
    sftp:
{sftp}      auth: {{ password_secret: {password_secret} }}
      remote_dirs: ["/nowhere"]
"""


@contextmanager
def sas_host(env: dict[str, str], drop_container: str) -> Iterator[Any]:
    """The whole app in devhost with these app settings (get_services() is process-wide: rebuilt around it),
    watching its own drop container (never the one `make run` and other test runs use)."""
    from devhost.host import DevHost
    from shared import bootstrap

    sys.modules.pop("function_app", None)  # a fresh app: one indexing per app object
    app = importlib.import_module("function_app").app
    bootstrap.get_services.cache_clear()
    host = DevHost(app, settings_env=env, http_port=0, enable_timers=False, blob_poll_interval=0.5, app_dir=ROOT,
                   blob_containers={"drop": drop_container}, event_grid_blobs={"intake_drop": "drop/{name}"},
                   host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:00.500"}}})
    host.start()
    try:
        yield host
    finally:
        host.stop()
        bootstrap.get_services.cache_clear()  # the next get_services() reads the restored settings


def stored_documents(conn: str, prefix: str, partners: list[str], events_queue: str,
                     host: Any) -> list[tuple[str, str]]:
    """(where, text) for everything the run persisted or published (tests/planted.py: tables, the partners'
    blobs, published events), and every orchestration status with its history, input and output."""
    docs = planted.stored_documents(conn, prefix, partners, events_queue)
    hub = host.task_hub
    for status in hub.list_status():
        doc = hub.status(status["instanceId"], show_history=True, show_input=True)
        docs.append((f"orchestration {status['instanceId']}", json.dumps(doc, default=str)))
    return docs


def cleanup(conn: str, prefix: str, partners: list[str], queues: list[str], drop_container: str) -> None:
    try:  # best effort: cleanup must not hide the test's own outcome
        tables = TableServiceClient.from_connection_string(conn)
        for table in list(tables.list_tables()):
            if table.name.startswith(prefix):
                tables.delete_table(table.name)
        queue_service = QueueServiceClient.from_connection_string(conn)
        for name in queues:
            queue_service.delete_queue(name)
        blobs = BlobServiceClient.from_connection_string(conn)
        blobs.delete_container(drop_container)
        for name in planted.CONTAINERS:
            container = blobs.get_container_client(name)
            for partner in partners:
                for item in list(container.list_blobs(name_starts_with=f"{partner}/")):
                    container.delete_blob(item.name)
    except AzureError:
        pass


def test_no_secret_or_sas_is_persisted_published_or_kept_in_orchestration_history(
        azurite: str, sshd_server: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4().hex[:8]
    conn, sas = sas_connection_string(azurite)
    sig = dict(part.split("=", 1) for part in sas.split("&"))["sig"]
    partner, down, drop = f"r{run}", f"rd{run}", f"drop-red{run}"
    key_secret, password_secret = f"{partner}-key", f"{partner}-password"
    password = f"Pw-{uuid.uuid4().hex}-planted"
    monkeypatch.setenv(env_name(key_secret), f"@{sshd_server.client_key.path}")
    monkeypatch.setenv(env_name(password_secret), password)
    monkeypatch.setitem(workflows.RETRY_POLICY, "route", RetryPolicy(200, 2))  # the failing route fails fast
    outbound = sshd_server.folder(f"{partner}-out")
    catalog_path = tmp_path / "partners.yaml"
    catalog_path.write_text(catalog(partner, down, sshd_server, outbound, key_secret, password_secret))
    env = {
        "AzureWebJobsStorage": conn, "WHARF_TABLE_PREFIX": f"red{run}", "POLL_QUEUE": f"poll-red{run}",
        "LANDED_QUEUE": f"landed-red{run}", "TRANSFER_QUEUE": f"transfer-red{run}",
        "REDELIVERY_QUEUE": f"redeliver-red{run}",
        "WHARF_EVENTS_QUEUE": f"events-red{run}",
        "WHARF_CATALOG_PATH": str(catalog_path), "WHARF_FUNCTION_KEY": FUNCTION_KEY, "WHARF_PUBLISHER": "queue",
        "AzureFunctionsWebHost__hostid": f"red-{run}",
    }
    private_key_lines = [line.strip() for line in Path(sshd_server.client_key.path).read_text().splitlines()
                         if len(line.strip()) >= 16 and not line.startswith("-----")]
    queues: list[str] = []
    try:
        with sas_host(env, drop) as host:
            from shared import bootstrap

            services = bootstrap.get_services()  # the very Services the app's functions use
            services.ensure_resources()
            queues = services.queue_names()
            monkeypatch.setitem(services.__dict__, "file_sources", LeakySources(
                services.file_sources, services.secrets, down=down, secret_name=password_secret))
            monkeypatch.setitem(services.__dict__, "publisher", LeakyPublisher(
                services.publisher, password=password, connection=conn))
            e2e = E2E(host=host, env=env, catalog_path=catalog_path, own_services=services, graph=None,
                      drop_container=drop)
            for name in ("good.csv", "fail.csv", "broken.csv"):
                (outbound / name).write_bytes(GOOD)

            # Poll path (HTTP 502 body) and breaker: the down partner's login fails with the secret in the message.
            code, failed_poll = e2e.request("POST", f"/partners/{down}/poll?wait=true")
            assert code == 502, failed_poll
            assert "***" in failed_poll["error"]
            assert "***" in services.breakers.get("sftp", down).last_error
            # Ledger path: broken.csv cannot be read (the secret again); the other two land.
            code, partial = e2e.request("POST", f"/partners/{partner}/poll?wait=true")
            assert code == 200 and partial["status"] == "partial" and partial["landed"] == 2, partial
            assert ["***" in f["reason"] for f in partial["failed_files"]] == [True]
            failed_entries = [e for e in services.ledger.entries(partner) if e.state.value == "FAILED"]
            assert len(failed_entries) == 1 and "***" in failed_entries[0].error

            # Job path: good.csv completes; fail.csv's event route fails with the secret and the SAS in the error.
            jobs = e2e.wait_for("both jobs", lambda: len(services.jobs.list_jobs(partner=partner)) == 2)
            assert jobs
            by_name = {j.file_name: j.job_id for j in services.jobs.list_jobs(partner=partner)}
            good = e2e.wait_job(by_name["good.csv"])
            assert good["job"]["status"] == "COMPLETED", good["job"]["error"]
            failed = e2e.wait_job(by_name["fail.csv"])
            assert failed["job"]["status"] == "FAILED" and "***" in failed["job"]["error"], failed["job"]
            host.wait_idle(10)

            # Published blob references carry no credentials: container/path, and a URL without a query.
            routed = next(e["data"] for e in good["events"] if e["type"] == "file.routed"
                          and e["data"]["kind"] == "blob")
            assert urlsplit(routed["url"]).query == ""

            def published() -> list[dict[str, Any]]:
                return [m for m in services.queues.peek(env["WHARF_EVENTS_QUEUE"], 32)
                        if m["data"].get("job_id") in by_name.values()]

            events = e2e.wait_for("file.processed and job.failed", lambda: len(published()) == 2 and published())
            processed = next(m["data"] for m in events if m["type"] == "file.processed")
            assert processed["blob"] == routed["target"]
            assert processed["blob_url"] == routed["url"] and processed["blob_url"].endswith("/" + routed["target"])
            assert urlsplit(processed["blob_url"]).query == ""

            documents = stored_documents(conn, env["WHARF_TABLE_PREFIX"], [partner, down], env["WHARF_EVENTS_QUEUE"],
                                         host)
            documents += [("poll summary (HTTP 502)", json.dumps(failed_poll)),
                          ("poll summary (partial)", json.dumps(partial))]
    finally:
        cleanup(conn, env["WHARF_TABLE_PREFIX"], [partner, down], queues, drop)

    assert any(where.startswith("orchestration ") for where, _ in documents)
    assert any(where.startswith("event ") for where, _ in documents)
    needles = {"the planted secret": password, "the SAS": sas, "sig=": "sig=", "the signature": sig,
               "the signature (decoded)": unquote(sig), "the connection string": conn,
               **{f"private key line {i}": line for i, line in enumerate(private_key_lines)}}
    leaks = planted.found(documents, needles)
    assert not leaks, "\n".join(leaks)
