"""GET /api/health logic against real Azurite, and against storage that is not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.services.health import HealthMonitor, check_health
from shared.settings import Settings, azurite_connection_string

pytestmark = pytest.mark.azurite
ROOT = Path(__file__).resolve().parents[2]


def test_healthy_storage_answers_200(tmp_path: Path) -> None:
    report = check_health(Settings(AzureWebJobsStorage=azurite_connection_string(),
                                   WHARF_CATALOG_PATH=str(tmp_path / "missing.yaml")))
    assert {k: v["state"] for k, v in report.dependencies.items() if k.startswith("storage")} == {
        "storage.blob": "ok", "storage.queue": "ok", "storage.table": "ok"}
    # A missing catalogue degrades the app but storage is fine: still 200, and it says so.
    assert report.status == "degraded" and report.http_status == 200
    assert report.dependencies["catalog"]["state"] == "error"


def test_unreachable_storage_answers_503_naming_it(tmp_path: Path) -> None:
    dead = azurite_connection_string(blob=1, queue=1, table=10002)
    report = check_health(Settings(AzureWebJobsStorage=dead, WHARF_CATALOG_PATH=str(tmp_path / "x.yaml")))
    assert report.http_status == 503
    assert report.unavailable == ["storage.blob", "storage.queue"]
    assert report.dependencies["storage.table"]["state"] == "ok"


def test_unconfigured_storage_answers_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__accountName", raising=False)
    report = check_health(Settings())
    assert report.http_status == 503 and report.unavailable == ["storage"]
    assert "AzureWebJobsStorage" in report.dependencies["storage"]["detail"]


def test_anonymous_liveness_is_503_while_storage_is_down_and_says_nothing_more(tmp_path: Path) -> None:
    dead = azurite_connection_string(blob=1, queue=1, table=1)
    monitor = HealthMonitor(ttl=60)
    settings = Settings(AzureWebJobsStorage=dead, WHARF_CATALOG_PATH=str(tmp_path / "x.yaml"))
    first = monitor.liveness(settings)
    assert (first.http_status, first.liveness()) == (503, {"status": "unavailable"})
    assert monitor.liveness(settings) is first  # the same report: no second round of probes
    assert monitor.details(settings) is not first and monitor.details(settings).http_status == 503
