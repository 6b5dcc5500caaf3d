"""devhost's invoker tells the host's function timeout from a TimeoutError the function raised itself.

Since Python 3.11 asyncio.TimeoutError and concurrent.futures.TimeoutError are the builtin TimeoutError, so an
aiohttp connect timeout inside an intake was reported as "Timeout value of 600s exceeded" after 20 s: the load
benchmark's stall looked like hung functions when its durable client calls were failing fast."""

from __future__ import annotations

import socket

import pytest

from devhost.index import FunctionSpec
from devhost.invoke import FunctionTimeoutError, Invoker


async def _connect_times_out(msg: str) -> None:
    raise TimeoutError(f"connect timed out ({msg})")


def _never_ends_spec() -> FunctionSpec:
    async def never_ends(msg: str) -> None:
        import asyncio

        await asyncio.sleep(3600)

    return FunctionSpec(name="never_ends", trigger_type="queueTrigger", trigger={}, func=never_ends,
                        trigger_param="msg")


def test_a_timeout_error_raised_by_the_function_is_its_own_error() -> None:
    invoker = Invoker(timeout=600)
    spec = FunctionSpec(name="intake", trigger_type="queueTrigger", trigger={}, func=_connect_times_out,
                        trigger_param="msg")
    try:
        with pytest.raises(TimeoutError, match="connect timed out") as caught:
            invoker.call(spec, {"msg": "m1"})
        assert not isinstance(caught.value, FunctionTimeoutError)
    finally:
        invoker.shutdown()


def test_a_function_that_outlives_function_timeout_is_a_function_timeout() -> None:
    invoker = Invoker(timeout=0.2)
    try:
        with pytest.raises(FunctionTimeoutError, match="Timeout value of 0s exceeded by function 'never_ends'"):
            invoker.call(_never_ends_spec(), {"msg": "m1"})
    finally:
        invoker.shutdown()


def test_the_http_front_end_listens_with_a_backlog_for_bursts() -> None:
    from devhost.httpserver import _Server

    server = _Server(("127.0.0.1", 0), object)  # type: ignore[arg-type]
    try:
        # Connections the kernel completes before the accept thread runs (socketserver's default is 5).
        host, port = server.server_address[:2]
        clients = [socket.create_connection((str(host), int(port)), timeout=2) for _ in range(64)]
        for client in clients:
            client.close()
    finally:
        server.server_close()
