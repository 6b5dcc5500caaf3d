"""Health of each dependency: storage (blob, queue, table) and the catalogue. GET /api/health answers the
status only, from a report at most LIVENESS_TTL_SECONDS old; GET /api/health/details (function key) the whole
report, fresh."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from shared.observability.tracing import span
from shared.settings import Settings

log = logging.getLogger(__name__)
_PROBE_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": 3, "read_timeout": 5}

LIVENESS_TTL_SECONDS = 5.0
"""How long the anonymous answer reuses a report: however many callers, one round of probes per instance in
this time (a storage outage is still a 503: the cached report says so)."""


@dataclass(frozen=True)
class HealthReport:
    status: str  # "ok" | "degraded" | "unavailable"
    dependencies: dict[str, dict[str, str]]
    unavailable: list[str]

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def to_dict(self) -> dict[str, Any]:
        """The whole report, for callers with a function key (it names paths, lines and settings)."""
        return {"status": self.status, "dependencies": self.dependencies, "unavailable": self.unavailable}

    def liveness(self) -> dict[str, Any]:
        """What anyone may see: the status alone."""
        return {"status": self.status}


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
    """Probe every dependency once, now. Storage down -> unavailable (503); catalogue broken -> degraded."""
    try:
        checks = probes if probes is not None else _storage_probes(settings)
    except ValueError as exc:  # storage not configured at all
        return _assess(settings, {}, unconfigured=str(exc))
    return _assess(settings, checks)


def _assess(settings: Settings, checks: dict[str, Callable[[], None]], *, unconfigured: str = "") -> HealthReport:
    deps: dict[str, dict[str, str]] = {}
    unavailable: list[str] = []
    degraded = False
    with span("health.check"):
        if unconfigured:
            deps["storage"] = {"state": "unavailable", "detail": unconfigured}
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


class HealthMonitor:
    """check_health behind a short cache, and the storage clients its probes use built once per settings.

    `liveness` reuses a report younger than `ttl` seconds (one caller refreshes it; the others wait for that
    one rather than probing too); `details` always probes and refreshes the cache with what it found.
    """

    def __init__(self, *, ttl: float = LIVENESS_TTL_SECONDS, clock: Callable[[], float] = time.monotonic,
                 probes: Callable[[Settings], dict[str, Callable[[], None]]] = _storage_probes) -> None:
        self.ttl = ttl
        self._clock = clock
        self._build_probes = probes
        self._lock = threading.Lock()
        self._reports: dict[Hashable, tuple[float, HealthReport]] = {}
        self._probes: dict[Hashable, dict[str, Callable[[], None]]] = {}

    def liveness(self, settings: Settings) -> HealthReport:
        key = _key(settings)
        with self._lock:
            cached = self._reports.get(key)
            if cached is not None and self._clock() - cached[0] < self.ttl:
                return cached[1]
            return self._refresh(key, settings)

    def details(self, settings: Settings) -> HealthReport:
        with self._lock:
            return self._refresh(_key(settings), settings)

    def _refresh(self, key: Hashable, settings: Settings) -> HealthReport:
        probes = self._probes.get(key)
        if probes is None:
            try:
                probes = self._probes[key] = self._build_probes(settings)
            except ValueError as exc:  # storage not configured at all
                report = _assess(settings, {}, unconfigured=str(exc))
        if probes is not None:
            report = _assess(settings, probes)
        self._reports[key] = (self._clock(), report)
        return report


def _key(settings: Settings) -> Hashable:
    return (settings.storage_connection_string, settings.storage_account_name, str(settings.catalog_path))


_MONITOR = HealthMonitor()


def liveness(settings: Settings) -> HealthReport:
    """The report anonymous GET /api/health answers from: at most LIVENESS_TTL_SECONDS old."""
    return _MONITOR.liveness(settings)


def details(settings: Settings) -> HealthReport:
    """A fresh report, for GET /api/health/details."""
    return _MONITOR.details(settings)
