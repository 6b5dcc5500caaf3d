"""Health of each dependency, for GET /api/health: storage (blob, queue, table) and the catalogue."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.observability.tracing import span
from shared.settings import Settings

log = logging.getLogger(__name__)
_PROBE_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 5}


@dataclass(frozen=True)
class HealthReport:
    status: str  # "ok" | "degraded" | "unavailable"
    dependencies: dict[str, dict[str, str]]
    unavailable: list[str]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "dependencies": self.dependencies, "unavailable": self.unavailable}


def _storage_probes(settings: Settings) -> dict[str, Callable[[], None]]:
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueServiceClient

    conn = settings.storage_connection_string
    if conn:
        blob = BlobServiceClient.from_connection_string(conn, **_PROBE_OPTIONS)
        queue = QueueServiceClient.from_connection_string(conn, **_PROBE_OPTIONS)
        table = TableServiceClient.from_connection_string(conn, **_PROBE_OPTIONS)
    else:
        from azure.identity import DefaultAzureCredential

        cred = DefaultAzureCredential()
        blob = BlobServiceClient(settings.service_url("blob"), cred, **_PROBE_OPTIONS)
        queue = QueueServiceClient(settings.service_url("queue"), cred, **_PROBE_OPTIONS)
        table = TableServiceClient(settings.service_url("table"), credential=cred, **_PROBE_OPTIONS)

    def first_page(pages: Any) -> None:
        next(iter(pages.by_page()), None)

    return {
        "storage.blob": lambda: first_page(blob.list_containers(results_per_page=1)),
        "storage.queue": lambda: first_page(queue.list_queues(results_per_page=1)),
        "storage.table": lambda: first_page(table.list_tables(results_per_page=1)),
    }


def check_health(settings: Settings, *, probes: dict[str, Callable[[], None]] | None = None) -> HealthReport:
    """Probe every dependency once. Storage down -> unavailable (503); catalogue broken -> degraded."""
    deps: dict[str, dict[str, str]] = {}
    unavailable: list[str] = []
    degraded = False
    with span("health.check"):
        try:
            checks = probes if probes is not None else _storage_probes(settings)
        except ValueError as exc:  # storage not configured at all
            checks = {}
            deps["storage"] = {"state": "unavailable", "detail": str(exc)}
            unavailable.append("storage")
        for name, probe in checks.items():
            try:
                probe()
                deps[name] = {"state": "ok"}
            except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"; reported, not raised
                log.warning("health: %s unreachable: %s", name, type(exc).__name__)
                deps[name] = {"state": "unavailable", "detail": type(exc).__name__}
                unavailable.append(name)
        try:
            from shared.catalog import load_catalog

            catalog = load_catalog(settings.catalog_path)
            deps["catalog"] = {"state": "ok", "detail": f"{len(catalog.partners)} partners"}
        except Exception as exc:  # noqa: BLE001 - reported as degraded with the loader's own message
            deps["catalog"] = {"state": "error", "detail": str(exc)[:500]}
            degraded = True
    status = "unavailable" if unavailable else ("degraded" if degraded else "ok")
    return HealthReport(status=status, dependencies=deps, unavailable=unavailable)
