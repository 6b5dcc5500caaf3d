"""The async intakes (file-landed, drop) and the jobs sweep share the worker's one event loop with every other
async invocation. Their storage calls block, so they run in worker threads: a storage that has gone silent (a
server that accepts connections and never answers, as Azurite while it stops) holds the one invocation waiting
on it, never the loop (decision 111). Checked by what else the loop does meanwhile, not by how long it takes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from shared.bootstrap import Services, build_services
from shared.domain.jobs import utcnow
from shared.services import intake, poison
from shared.services.drop import take_drop
from shared.services.sweep import sweep_jobs
from shared.settings import Settings, azurite_connection_string

TICK = 0.05
# The storage call waits READ_TIMEOUT seconds for an answer that never comes: some forty ticks of a free loop.
READ_TIMEOUT = 2
MIN_TICKS = 10


@pytest.fixture
def silent_storage() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture
def services(silent_storage: int) -> Services:
    port = silent_storage
    return build_services(Settings(
        AzureWebJobsStorage=azurite_connection_string(blob=port, queue=port, table=port),
        WHARF_TABLE_PREFIX=f"t{uuid.uuid4().hex[:10]}", WHARF_STORAGE_RETRIES=0,
        WHARF_STORAGE_READ_TIMEOUT_SECONDS=READ_TIMEOUT, WHARF_STORAGE_CONNECT_TIMEOUT_SECONDS=READ_TIMEOUT))


async def _ticks_while(work: asyncio.Future[object] | asyncio.Task[object]) -> tuple[int, BaseException | None]:
    """How many times a task beside `work` ran on the loop while `work` waited on the storage."""
    ticks = 0
    while not work.done():
        await asyncio.sleep(TICK)
        ticks += 1
    return ticks, work.exception()


def _run(coro: object) -> tuple[int, BaseException | None]:
    async def main() -> tuple[int, BaseException | None]:
        return await _ticks_while(asyncio.ensure_future(coro))  # type: ignore[call-overload]

    return asyncio.run(main())


def test_a_file_landed_intake_waiting_on_storage_leaves_the_event_loop_free(services: Services) -> None:
    body = json.dumps({"job_id": uuid.uuid4().hex, "partner": "acme", "container": "inbound",
                       "blob_path": "acme/2026/f.csv", "file_name": "f.csv"}).encode()
    delivery = poison.Delivery(queue="file-landed", id="m1", body=body, dequeue_count=1)
    ticks, error = _run(intake.take_file_landed(services, None, delivery))
    assert error is not None  # the storage never answered: the intake fails (the host retries it)
    assert ticks >= MIN_TICKS, f"the event loop ran {ticks} times in {READ_TIMEOUT} s: the intake held it"


def test_a_drop_intake_waiting_on_storage_leaves_the_event_loop_free(services: Services) -> None:
    ticks, error = _run(take_drop(services, None, container="drop", blob_path="acme/f.csv"))
    assert error is not None
    assert ticks >= MIN_TICKS, f"the event loop ran {ticks} times in {READ_TIMEOUT} s: the drop intake held it"


def test_a_jobs_sweep_waiting_on_storage_leaves_the_event_loop_free(services: Services) -> None:
    # The sweep logs what it could not do and returns (or raises): either way the loop must have stayed free.
    ticks, _ = _run(sweep_jobs(services, None, now=utcnow() + timedelta(minutes=30)))
    assert ticks >= MIN_TICKS, f"the event loop ran {ticks} times: the sweep held it"
