"""The whole app through devhost, against the local stack (Azurite; OpenSSH for the SFTP paths)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from shared.observability.tracing import JOB_ID
from shared.settings import azurite_connection_string

if TYPE_CHECKING:
    from shared.observability.sdk import TelemetryCapture

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
    graph: Any
    drop_container: str
    own_services: Any = None  # a host of its own (tests that build one); else the process-wide services
    outbound_container: str = ""  # this run's outbound/ (files handed over to be sent)

    @property
    def services(self) -> Any:
        """The services the app in this devhost uses: the process-wide `get_services()` (looked up on each use,
        so a test that rebuilt it for a host of its own, e.g. with other settings, cannot leave this one stale
        and a monkeypatch here reaches the app)."""
        if self.own_services is not None:
            return self.own_services
        from shared import bootstrap

        return bootstrap.get_services()

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


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    """One devhost for the tests of tests/e2e. Package-scoped: its app settings are in os.environ (app settings are
    process-wide, as in a Functions worker) only while these tests run, and the tests that run after them in the
    same session (tests/integration, tests/unit) see the environment from before it
    (tests/integration/test_e2e_environment.py)."""
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
        "TRANSFER_QUEUE": f"transfer-{run}",
        "REDELIVERY_QUEUE": f"redeliver-{run}",
        "WHARF_EVENTS_QUEUE": f"events-{run}",
        "WHARF_CATALOG_PATH": str(catalog),
        "WHARF_FUNCTION_KEY": FUNCTION_KEY,
        "WHARF_CONSOLE_DEV_SIGNIN": "true",  # the console's development sign-in (tests/e2e/test_console.py)
        "WHARF_PUBLISHER": "queue",
        "AzureFunctionsWebHost__hostid": f"e2e-{run}",
        "GRAPH_BASE_URL": graph.base_url,
        "WHARF_GRAPH_LOCAL_TOKEN": TEST_TOKEN,
    }
    environment = dict(os.environ)
    # A fresh function_app module: the functions library lets an app be indexed only once per process.
    sys.modules.pop("function_app", None)
    app = importlib.import_module("function_app").app
    bootstrap.get_services.cache_clear()
    # This run's drop folder: `make run` (and other test runs on the same Azurite) never watch it, and this
    # run never takes their files. Each dropped file is removed once landed; anything left fails the run.
    drop, outbound = f"drop-e2e{run}", f"outbound-e2e{run}"
    host = DevHost(app, settings_env=env, http_port=0, enable_timers=False, blob_poll_interval=0.5,
                   app_dir=Path(__file__).resolve().parents[2], blob_containers={"drop": drop, "outbound": outbound},
                   event_grid_blobs={"intake_drop": "drop/{name}", "intake_outbound": "outbound/{name}"},
                   host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:00.500"}}})
    host.start()
    try:
        services = bootstrap.get_services()
        services.ensure_resources()
        services.blobs.ensure_containers([outbound])
        yield E2E(host=host, env=env, catalog_path=catalog, graph=graph, drop_container=drop,
                  outbound_container=outbound)
    finally:
        host.stop()
        graph.stop()
        bootstrap.get_services.cache_clear()
        problems = []
        changed = _restore_environment(environment)
        if changed:
            problems.append(f"the e2e tests changed the environment (restored now): {', '.join(changed)}")
        for name in (drop, outbound):
            left = _remove_container(name)
            if left:
                problems.append(f"the e2e tests left {len(left)} blob(s) in their container {name} (removed now): "
                                + ", ".join(left[:10]))
        if problems:
            pytest.fail("; ".join(problems))


def _restore_environment(before: dict[str, str]) -> list[str]:
    """Put os.environ back as it was; the names (never the values: some are secrets) of the variables that were
    not. pytest's own PYTEST_* variables change from one test to the next and are left alone."""
    names = {k for k in set(before) | set(os.environ) if not k.startswith("PYTEST_")}
    changed = sorted(k for k in names if before.get(k) != os.environ.get(k))
    for name in changed:
        if name in before:
            os.environ[name] = before[name]
        else:
            os.environ.pop(name)
    return changed


def _remove_container(name: str) -> list[str]:
    """Delete a container; the names of the blobs it still held."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite_connection_string()).get_container_client(name)
    try:
        left = [b.name for b in container.list_blobs()]
        container.delete_container()
    except ResourceNotFoundError:
        return []
    return left


def job_trace(capture: TelemetryCapture, job_id: str, expected: Iterable[str]) -> set[str]:
    """The span names of the one trace that holds a job's work, after asserting that there is one, that it is one
    connected tree (a single root, no span whose parent was lost at a hop) and that it holds every `expected`.
    Operators reading the job (GET /api/jobs/{id}, `jobs.*` spans) are traces of their own and not counted."""
    job_spans = [s for s in capture.spans_where(JOB_ID, job_id) if not s.name.startswith("jobs.")]
    traces = {format(s.context.trace_id, "032x") for s in job_spans if s.context}
    assert len(traces) == 1, f"job spans are spread over {len(traces)} traces: " + "; ".join(
        f"{t[:8]}: {sorted(x.name for x in capture.trace_spans(t))}" for t in traces)
    [trace_id] = traces
    names = {s.name for s in capture.trace_spans(trace_id)}
    for name in expected:
        assert name in names, f"{name} missing from the trace: {sorted(names)}"
    assert len(capture.roots(trace_id)) == 1 and capture.orphans(trace_id) == []
    return names
