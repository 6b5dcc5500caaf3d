"""The durable client's HTTP calls to the host's Durable extension API, on a session no single failure closes.

azure-functions-durable 1.7.0 (azure/durable_functions/models/utils/http_utils.py) shares one module-wide
aiohttp session between every concurrent call, and closes it when any one call fails (a timeout, a refused
connection). Every other call in flight on that session then fails at once with
``ClientConnectionError: Connector is closed``, and each of those failures closes the session the next callers
have just opened: under concurrency (24 intake invocations on one worker) a single transient error becomes a
cascade that fails every start_new and get_status for as long as calls overlap. That was the load benchmark's
stall after its Azurite restart (decision 110).

Here the same calls (same signatures, same results) use one session per event loop that is never closed
because of one request: aiohttp already discards a connection that failed, and a failed call raises to its own
caller only (the trigger is retried by the host, starting is idempotent on the job id). `harden(client)`
installs them on a ``DurableOrchestrationClient`` through the three attributes its constructor sets for this
purpose (``_post_async_request``, ``_get_async_request``, ``_delete_async_request``)."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import weakref
from typing import Any

import aiohttp

# As the library's: a four-minute total for a slow operation, a quick connect over loopback, 30 connections.
_TIMEOUT = aiohttp.ClientTimeout(total=240, sock_connect=10, sock_read=None)
_CONNECTIONS = 30
_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()


def _session() -> aiohttp.ClientSession:
    """This event loop's session (made on first use, or again if something closed it). No await between the
    check and the assignment, so two callers on one loop can never make two."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=_CONNECTIONS, limit_per_host=_CONNECTIONS)
        session = _sessions[loop] = aiohttp.ClientSession(timeout=_TIMEOUT, connector=connector)
    return session


def _headers(trace_parent: str | None = None, trace_state: str | None = None,
             function_invocation_id: str | None = None) -> dict[str, str]:
    headers = {}
    if trace_parent:
        headers["traceparent"] = trace_parent
    if trace_state:
        headers["tracestate"] = trace_state
    if function_invocation_id:
        headers["X-Azure-Functions-InvocationId"] = function_invocation_id
    return headers


async def post_async_request(url: str, data: Any = None, trace_parent: str | None = None,
                             trace_state: str | None = None,
                             function_invocation_id: str | None = None) -> list[Any]:
    headers = _headers(trace_parent, trace_state, function_invocation_id)
    async with _session().post(url, json=data, headers=headers) as response:
        # As the library: the extension may answer in other content types than application/json.
        return [response.status, await response.json(content_type=None)]


async def get_async_request(url: str, function_invocation_id: str | None = None) -> list[Any]:
    async with _session().get(url, headers=_headers(function_invocation_id=function_invocation_id)) as response:
        data = await response.json(content_type=None)
        return [response.status, "" if data is None else data]


async def delete_async_request(url: str, function_invocation_id: str | None = None) -> list[Any]:
    async with _session().delete(url, headers=_headers(function_invocation_id=function_invocation_id)) as response:
        return [response.status, await response.json(content_type=None)]


def harden(client: Any) -> Any:
    """Route ``client``'s HTTP calls through this module (a client without those attributes, such as devhost's
    in-process test client, is returned as it is). Idempotent."""
    if hasattr(client, "_get_async_request"):
        client._post_async_request = post_async_request
        client._get_async_request = get_async_request
        client._delete_async_request = delete_async_request
    return client


async def close_sessions() -> None:
    """Close this event loop's session (tests and shutdown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


@atexit.register
def _close_at_exit() -> None:
    """At exit, close each session whose loop still runs (the worker's loop is a daemon thread's): an unclosed
    one is reported by aiohttp as the interpreter tears down, through logging that no longer works then."""
    for loop, session in list(_sessions.items()):
        if session.closed or loop.is_closed() or not loop.is_running():
            continue
        try:
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=2)
        except (concurrent.futures.TimeoutError, RuntimeError):
            pass  # the loop is stopping as well: nothing more to do at exit
