"""Invoke user functions like the Python worker: async ones on one shared event loop, sync ones in a pool."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import azure.functions as func
from azure.functions._abc import RetryContext, TraceContext

from devhost.index import FunctionSpec

log = logging.getLogger("devhost.invocation")

_loop_lock = threading.Lock()
_shared_loop: asyncio.AbstractEventLoop | None = None


def shared_loop() -> asyncio.AbstractEventLoop:
    """The process-wide loop async functions run on, as in the Python worker (one loop per process).

    It is shared by every DevHost in the process because libraries keep loop-bound state in module
    globals (the durable client's aiohttp session does), exactly as they may in the real worker.
    """
    global _shared_loop
    with _loop_lock:
        if _shared_loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="devhost-event-loop", daemon=True)
            thread.start()
            _shared_loop = loop
        return _shared_loop


def _first_line(exc: BaseException) -> str:
    """One line per invocation: orchestrator errors carry the replay state and tracebacks after line one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class FunctionTimeoutError(TimeoutError):
    """The invocation ran longer than host.json functionTimeout."""


class _TraceContext(TraceContext):
    def __init__(self) -> None:
        self._traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._traceparent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(RetryContext):
    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """The ``context`` argument a function may declare (a subset the worker fills in)."""

    def __init__(self, function_name: str, function_directory: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = _TraceContext()
        self._retry_context = _RetryContext()
        self._tls = threading.local

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> RetryContext:
        return self._retry_context


class Invoker:
    """Runs invocations with the host's timeout and writes one log line per invocation."""

    def __init__(self, *, timeout: float | None, max_workers: int | None = None, app_dir: str = ".") -> None:
        self._timeout = timeout
        workers = max_workers or int(os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "0") or 0) or 16
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="devhost-fn")
        self._app_dir = app_dir
        self._active = 0
        self._active_lock = threading.Lock()
        self.on_finished: Callable[[], None] | None = None
        # Supplies the durableClient binding value (a JSON string, as in production).
        self.client_binding: Callable[[], str] | None = None

    @property
    def active(self) -> int:
        with self._active_lock:
            return self._active

    def call(self, spec: FunctionSpec, kwargs: dict[str, Any], *, detail: str = "") -> Any:
        """Invoke ``spec`` with ``kwargs`` and wait for its result; exceptions propagate after logging."""
        if spec.context_param:
            kwargs["context"] = InvocationContext(spec.name, self._app_dir)
        if spec.client_param:
            if self.client_binding is None:
                raise RuntimeError(f"function {spec.name!r} needs a durable client but none is configured")
            kwargs[spec.client_param] = self.client_binding()
        with self._active_lock:
            self._active += 1
        started = time.monotonic()
        future: concurrent.futures.Future[Any]
        try:
            if spec.is_async:
                future = asyncio.run_coroutine_threadsafe(spec.func(**kwargs), shared_loop())
            else:
                future = self._pool.submit(spec.func, **kwargs)
            try:
                result = future.result(timeout=self._timeout)
            except concurrent.futures.TimeoutError as exc:
                if future.done():  # the function's own TimeoutError (asyncio's and aiohttp's are this class too)
                    raise
                future.cancel()  # cancels an async invocation; a sync one keeps its thread, as noted in the README
                raise FunctionTimeoutError(
                    f"Timeout value of {self._timeout:.0f}s exceeded by function '{spec.name}'"
                ) from exc
        except BaseException as exc:
            self._log(spec, detail, started, f"Failed: {type(exc).__name__}: {_first_line(exc)}", logging.ERROR)
            raise
        else:
            self._log(spec, detail, started, "Succeeded", logging.INFO)
            return result
        finally:
            with self._active_lock:
                self._active -= 1
            if self.on_finished is not None:
                self.on_finished()

    @staticmethod
    def _log(spec: FunctionSpec, detail: str, started: float, outcome: str, level: int) -> None:
        ms = (time.monotonic() - started) * 1000
        trigger = spec.trigger_type + (f" {detail}" if detail else "")
        log.log(level, "Executed 'Functions.%s' (%s) %s in %.0fms", spec.name, trigger, outcome, ms)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
