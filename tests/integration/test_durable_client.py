"""The durable client's HTTP calls (shared.adapters.durable_http) against devhost's implementation of the Durable
extension's HTTP API: one failed call fails alone, the calls beside it go on (decision 110)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import azure.durable_functions as df
import pytest

from devhost.client import client_binding_json
from devhost.durable import TaskHub
from devhost.httpserver import HttpFrontend
from devhost.invoke import Invoker
from shared.adapters import durable_http

HUB = "CascadeHub"
WORKERS = 16
CALLS = 40


@pytest.fixture
def frontend() -> Iterator[HttpFrontend]:
    invoker = Invoker(timeout=None)
    hub = TaskHub(hub_name=HUB, orchestrators={}, activities={}, invoker=invoker)
    http = HttpFrontend(specs=[], invoker=invoker, hub=hub, route_prefix="api", function_key=None,
                        host="127.0.0.1", port=0)
    http.start()
    try:
        yield http
    finally:
        http.stop()
        hub.stop()
        invoker.shutdown()


def _client(base_url: str, rpc_base_url: str) -> df.DurableOrchestrationClient:
    return durable_http.harden(df.DurableOrchestrationClient(client_binding_json(base_url, HUB, None, rpc_base_url)))


async def _load(frontend: HttpFrontend) -> tuple[int, list[str], str]:
    """WORKERS callers, CALLS get_status each, on one loop; once every caller is under way, one call to a host
    that is not there (a refused connection)."""
    good = _client(frontend.base_url, frontend.rpc_base_url)
    gone = _client("http://127.0.0.1:9", "http://127.0.0.1:9/")  # the discard port: nothing listens
    started = asyncio.Event()
    ok = 0
    errors: list[str] = []

    async def caller(n: int) -> None:
        nonlocal ok
        for i in range(CALLS):
            if n == WORKERS - 1 and i == 2:
                started.set()
            try:
                status = await good.get_status(f"no-such-instance-{n}-{i}")
                assert not status  # 404: there is no such instance
                ok += 1
            except Exception as exc:  # noqa: BLE001 - counted, and shown by the assertion
                errors.append(f"{type(exc).__name__}: {exc}")

    async def failing() -> str:
        await started.wait()
        try:
            await gone.get_status("x")
        except Exception as exc:  # noqa: BLE001 - the one failure expected
            return type(exc).__name__
        return "no error"

    try:
        results: list[Any] = await asyncio.gather(failing(), *(caller(n) for n in range(WORKERS)))
    finally:
        await durable_http.close_sessions()
    return ok, errors, results[0]


def test_one_refused_call_does_not_fail_the_calls_beside_it(frontend: HttpFrontend) -> None:
    ok, errors, injected = asyncio.run(_load(frontend))
    assert injected == "ClientConnectorError"
    # With the library's own transport, every call in flight at that moment failed with "Connector is closed",
    # and each of those closed the next session: hundreds of failures from one refused connection.
    assert errors == []
    assert ok == WORKERS * CALLS


def test_harden_leaves_a_client_without_the_library_attributes_alone() -> None:
    plain = object()
    assert durable_http.harden(plain) is plain
