"""Azurite stopped in the middle of a drop intake (after the copy to inbound/, before the job's events), then
started again (same ports, same data): that intake fails clearly with the storage error, its redelivery (Event
Grid retries a failed delivery) finishes it, and the drops behind it go through; every dropped file one inbound
blob, one visible job and one orchestration, the drop folder emptied. Nothing duplicated or lost."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import AzureError

from shared.bootstrap import Services, build_services
from shared.catalog import parse_catalog
from shared.services.drop import take_drop
from shared.settings import Settings
from tests.fakes import FakeDurableClient
from tests.integration.azurite_server import PrivateAzurite

pytestmark = [pytest.mark.azurite]

FILES = 8
FAIL_AT = 3  # the fourth drop's intake loses its storage midway


class StartingClient(FakeDurableClient):
    """The durable client as the drop trigger uses it: get_status, then start_new (recorded)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []

    async def start_new(self, orchestration_function_name: str, instance_id: str | None = None,
                        client_input: Any = None) -> str:
        assert instance_id is not None
        self.started.append(instance_id)
        self.set(instance_id, "Pending")
        return instance_id


@pytest.fixture
def private_azurite(tmp_path: Path) -> Iterator[PrivateAzurite]:
    server = PrivateAzurite(tmp_path / "azurite").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_drop_intake_fails_clearly_when_azurite_stops_and_its_redelivery_lands_the_file_once(
        private_azurite: PrivateAzurite) -> None:
    azurite = private_azurite
    svc: Services = build_services(Settings(AzureWebJobsStorage=azurite.connection_string,
                                            WHARF_TABLE_PREFIX=f"t{uuid.uuid4().hex[:12]}"))
    svc.ensure_resources()
    partner = f"p{uuid.uuid4().hex[:12]}"
    svc.overrides["catalog"] = parse_catalog({"partners": [{"id": partner, "name": partner}]}, env={})
    drop = f"drop-{uuid.uuid4().hex[:10]}"
    svc.blobs.ensure_containers([drop])
    names = [f"orders-{i}.csv" for i in range(FILES)]
    for i, name in enumerate(names):
        svc.blobs.upload_stream(drop, f"{partner}/{name}", [f"id,amount\n{i},1.50\n".encode() * 200])
    client = StartingClient()

    # Azurite goes away the first time the fourth intake records a job event: its copy to inbound/ is done.
    real_append = svc.jobs.append
    stopped: list[str] = []

    def append(job_id: str, *args: Any, **kwargs: Any) -> Any:
        if len(client.started) == FAIL_AT and not stopped:
            stopped.append(job_id)
            azurite.stop()
        return real_append(job_id, *args, **kwargs)

    svc.jobs.append = append  # type: ignore[method-assign]

    def take(name: str) -> Any:
        return asyncio.run(take_drop(svc, client, container=drop, blob_path=f"{partner}/{name}"))

    for name in names[:FAIL_AT]:
        assert take(name) is not None
    with pytest.raises(AzureError) as failed:
        take(names[FAIL_AT])
    assert stopped, "the intake never reached its job events"
    text = str(failed.value)
    # The storage endpoint it could not reach, and why: what the host logs for the failed invocation.
    assert "127.0.0.1" in text and any(str(port) in text for port in azurite.ports), text
    assert "refused" in text.lower(), text
    assert len(client.started) == FAIL_AT  # no orchestration for the interrupted intake

    azurite.start()
    for name in names[FAIL_AT:]:  # the redelivery of the failed event, then the drops behind it
        assert take(name) is not None

    jobs = svc.jobs.list_jobs(partner=partner, limit=100)
    assert sorted(j.file_name for j in jobs) == sorted(names)  # one visible job per dropped file
    assert sorted(client.started) == sorted(j.job_id for j in jobs)  # one orchestration each, none twice
    assert stopped[0] in client.started  # the interrupted intake's job is the one its redelivery started
    inbound = [b.path for b in svc.blobs.list_blobs("inbound", f"{partner}/")]
    assert sorted(inbound) == sorted(j.blob_path.partition("/")[2] for j in jobs)  # one blob each, no stray one
    assert list(svc.blobs.list_blobs(drop, "")) == []  # every drop taken off the drop folder
