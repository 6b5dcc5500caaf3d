"""The health monitor: anonymous liveness from a report a few seconds old, details always fresh."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from shared.services.health import LIVENESS_TTL_SECONDS, HealthMonitor
from shared.settings import Settings


class World:
    def __init__(self) -> None:
        self.now = 100.0
        self.calls = 0
        self.builds = 0
        self.storage_up = True

    def clock(self) -> float:
        return self.now

    def probes(self, settings: Settings) -> dict[str, Callable[[], None]]:
        self.builds += 1

        def probe() -> None:
            self.calls += 1
            if not self.storage_up:
                raise ConnectionError("storage is down")

        return {"storage.blob": probe}


def settings(tmp_path: Path, catalogue: str = "partners: []\n") -> Settings:
    path = tmp_path / "partners.yaml"
    path.write_text(catalogue)
    return Settings(AzureWebJobsStorage="UseDevelopmentStorage=true", WHARF_CATALOG_PATH=str(path))


def test_liveness_probes_once_per_ttl_and_a_storage_outage_stays_503_while_cached(tmp_path: Path) -> None:
    world = World()
    monitor = HealthMonitor(ttl=5, clock=world.clock, probes=world.probes)
    s = settings(tmp_path)
    assert LIVENESS_TTL_SECONDS == 5
    assert monitor.liveness(s).liveness() == {"status": "ok"}
    world.storage_up = False
    world.now += 4.9
    assert monitor.liveness(s).http_status == 200 and world.calls == 1  # cached: no probe
    world.now += 0.2
    down = monitor.liveness(s)
    assert (down.http_status, down.liveness(), world.calls) == (503, {"status": "unavailable"}, 2)
    world.storage_up = True
    world.now += 1
    assert monitor.liveness(s).http_status == 503 and world.calls == 2  # the outage is cached too
    world.now += 5
    assert monitor.liveness(s).http_status == 200 and world.calls == 3
    assert world.builds == 1  # storage clients are built once, not per call


def test_details_always_probe_and_refresh_what_liveness_answers(tmp_path: Path) -> None:
    world = World()
    monitor = HealthMonitor(ttl=5, clock=world.clock, probes=world.probes)
    s = settings(tmp_path)
    assert monitor.liveness(s).status == "ok"
    (tmp_path / "partners.yaml").write_text("partners: [{id: Bad, name: x}]\n")
    details = monitor.details(s)
    assert world.calls == 2 and details.status == "degraded"
    assert "partners[Bad].id" in details.to_dict()["dependencies"]["catalog"]["detail"]
    assert monitor.liveness(s).liveness() == {"status": "degraded"} and world.calls == 2


def test_unconfigured_storage_is_unavailable(tmp_path: Path) -> None:
    def unconfigured(settings: Settings) -> dict[str, Callable[[], None]]:
        raise ValueError("set AzureWebJobsStorage")

    report = HealthMonitor(probes=unconfigured).liveness(settings(tmp_path))
    assert report.http_status == 503 and report.to_dict()["dependencies"]["storage"] == {
        "state": "unavailable", "detail": "set AzureWebJobsStorage"}
