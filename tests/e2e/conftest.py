"""The whole app through devhost, against the local stack (Azurite; OpenSSH for the SFTP paths)."""

from __future__ import annotations

import importlib
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.settings import azurite_connection_string

FUNCTION_KEY = "e2e-key-" + uuid.uuid4().hex[:8]


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except json.JSONDecodeError:
        return raw.decode(errors="replace")


@dataclass
class E2E:
    host: Any
    env: dict[str, str]
    catalog_path: Path
    services: Any
    graph: Any

    def request(self, method: str, path: str, body: bytes | None = None, *, key: bool = True) -> tuple[int, Any]:
        req = urllib.request.Request(self.host.http_url + path, data=body, method=method)  # noqa: S310
        if key:
            req.add_header("x-functions-key", FUNCTION_KEY)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - 127.0.0.1 only
                return resp.status, _body(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, _body(err.read())

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

    def wait_job(self, job_id: str, statuses: tuple[str, ...] = ("COMPLETED", "FAILED"),
                 timeout: float = 90.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            code, body = self.request("GET", f"/jobs/{job_id}")
            return body if code == 200 and body["job"]["status"] in statuses else None

        result: dict[str, Any] = self.wait_for(f"job {job_id} to reach {statuses}", done, timeout)
        return result


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    from devhost.host import DevHost
    from shared import bootstrap
    from tests.graph_server import TEST_TOKEN, GraphTestServer

    graph = GraphTestServer().start()

    run = uuid.uuid4().hex[:8]
    catalog = tmp_path_factory.mktemp("catalog") / "partners.yaml"
    catalog.write_text("partners: []\n")
    env = {
        "AzureWebJobsStorage": azurite_connection_string(),
        "WHARF_TABLE_PREFIX": f"e2e{run}",
        "POLL_QUEUE": f"poll-{run}",
        "LANDED_QUEUE": f"landed-{run}",
        "WHARF_EVENTS_QUEUE": f"events-{run}",
        "WHARF_CATALOG_PATH": str(catalog),
        "WHARF_FUNCTION_KEY": FUNCTION_KEY,
        "WHARF_PUBLISHER": "queue",
        "AzureFunctionsWebHost__hostid": f"e2e-{run}",
        "GRAPH_BASE_URL": graph.base_url,
        "WHARF_GRAPH_LOCAL_TOKEN": TEST_TOKEN,
    }
    # A fresh function_app module: the functions library lets an app be indexed only once per process.
    sys.modules.pop("function_app", None)
    app = importlib.import_module("function_app").app
    bootstrap.get_services.cache_clear()
    host = DevHost(app, settings_env=env, http_port=0, enable_timers=False, blob_poll_interval=0.5,
                   app_dir=Path(__file__).resolve().parents[2],
                   host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:00.500"}}})
    host.start()
    try:
        services = bootstrap.get_services()
        services.ensure_resources()
        yield E2E(host=host, env=env, catalog_path=catalog, services=services, graph=graph)
    finally:
        host.stop()
        graph.stop()
        bootstrap.get_services.cache_clear()
