"""DevHost: runs a v2-model function app locally the way the Functions host does."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from devhost.client import DevDurableClient, client_binding_json
from devhost.config import ConfigError, HostConfig
from devhost.durable import TaskHub
from devhost.httpserver import HttpFrontend
from devhost.index import ACTIVITY, BLOB, EVENT_GRID, HTTP, ORCHESTRATION, QUEUE, TIMER, FunctionSpec, index_app
from devhost.invoke import Invoker
from devhost.triggers import BlobPoller, QueueListener, TimerRunner, resolve_connection

log = logging.getLogger("devhost")

# Queue messages are leased for the function timeout plus a margin, so a running invocation keeps its message.
_DEFAULT_LEASE = timedelta(minutes=10)
_LEASE_MARGIN = timedelta(minutes=1)


def load_app(target: str, app_dir: Path | None = None) -> Any:
    """Import ``module:attribute`` (default attribute ``app``) with the app directory on sys.path."""
    module_name, _, attr = target.partition(":")
    root = str((app_dir or Path.cwd()).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr or "app")
    except AttributeError as exc:
        raise ConfigError(f"{module_name} has no attribute {attr or 'app'!r}") from exc


def parse_event_grid_blobs(text: str) -> dict[str, str]:
    """``intake_drop=drop/{name},other=outbound/{name}`` -> {function name: blob path}."""
    out: dict[str, str] = {}
    for pair in text.split(","):
        name, sep, path = pair.strip().partition("=")
        if not pair.strip():
            continue
        if not sep or not name.strip() or "/" not in path:
            raise ConfigError(f"DEVHOST_EVENTGRID_BLOBS: {pair.strip()!r} is not function=container/{{name}}")
        out[name.strip()] = path.strip()
    return out


class DevHost:
    """One running function app: HTTP on ``http_port`` (0 picks a free port), listeners, timers, a task hub.

    ``settings_env`` values are put into ``os.environ`` (overriding) for the host's lifetime and restored
    by ``stop()``: app settings are process-wide, as in a Functions worker. ``host_json_overrides`` is
    deep-merged over host.json (e.g. ``{"extensions": {"queues": {"visibilityTimeout": "00:00:01"}}}``).
    ``blob_containers`` maps a blob trigger's container to the one devhost watches instead (tests share one
    Azurite: a test run watches a container of its own, and never takes the files of another run).
    ``event_grid_blobs`` maps an Event Grid trigger's function name to the blob path its subscription covers
    in Azure (``{"intake_drop": "drop/{name}"}``; default: the ``DEVHOST_EVENTGRID_BLOBS`` setting,
    ``name=path`` pairs separated by commas): devhost polls that container and delivers a BlobCreated event
    per new blob, as the storage account's Event Grid system topic would (``blob_containers`` applies too).
    """

    def __init__(self, app: Any, *, settings_env: Mapping[str, str] | None = None, host: str = "127.0.0.1",
                 http_port: int = 7071, app_dir: Path | str | None = None, host_json: Path | str | None = None,
                 host_json_overrides: Mapping[str, Any] | None = None, blob_poll_interval: float = 2.0,
                 enable_timers: bool = True, blob_containers: Mapping[str, str] | None = None,
                 event_grid_blobs: Mapping[str, str] | None = None) -> None:
        self._app_arg = app
        self._settings_env = dict(settings_env or {})
        self._host = host
        self._port = http_port
        self._app_dir = Path(app_dir) if app_dir is not None else Path.cwd()
        self._host_json = Path(host_json) if host_json is not None else self._app_dir / "host.json"
        self._overrides = host_json_overrides
        self._blob_interval = blob_poll_interval
        self._enable_timers = enable_timers
        self._blob_containers = dict(blob_containers or {})
        self._event_grid_blobs = dict(event_grid_blobs) if event_grid_blobs is not None else None
        self._saved_env: dict[str, str | None] = {}
        self._stop_event = threading.Event()
        self._started = False
        self.config: HostConfig | None = None
        self.specs: list[FunctionSpec] = []
        self._invoker: Invoker | None = None
        self._hub: TaskHub | None = None
        self._http: HttpFrontend | None = None
        self._timers: dict[str, TimerRunner] = {}
        self._queues: list[QueueListener] = []
        self._blobs: list[BlobPoller] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> DevHost:
        if self._started:
            raise RuntimeError("DevHost already started")
        for key, value in self._settings_env.items():
            self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._started = True
        self.config = cfg = HostConfig.load(self._host_json, self._overrides)
        app = load_app(self._app_arg, self._app_dir) if isinstance(self._app_arg, str) else self._app_arg
        env = dict(os.environ)
        self.specs = index_app(app, env)
        timeout = cfg.function_timeout.total_seconds() if cfg.function_timeout else None
        self._invoker = invoker = Invoker(timeout=timeout, app_dir=str(self._app_dir))
        by_type: dict[str, list[FunctionSpec]] = {}
        for spec in self.specs:
            by_type.setdefault(spec.trigger_type, []).append(spec)
        orchestrators = {self._durable_name(s, "orchestration"): s for s in by_type.get(ORCHESTRATION, [])}
        activities = {self._durable_name(s, "activity"): s for s in by_type.get(ACTIVITY, [])}
        if orchestrators or activities or any(s.client_param for s in self.specs):
            self._hub = TaskHub(hub_name=cfg.hub_name, orchestrators=orchestrators, activities=activities,
                                invoker=invoker)
        key = os.environ.get("WHARF_FUNCTION_KEY") or None
        self._http = HttpFrontend(specs=by_type.get(HTTP, []), invoker=invoker, hub=self._hub,
                                  route_prefix=cfg.route_prefix, function_key=key, host=self._host,
                                  port=self._port, run_function=self._admin_run)
        http = self._http
        invoker.client_binding = lambda: client_binding_json(http.base_url, cfg.hub_name, key, http.rpc_base_url)
        if not key and any(str(s.trigger.get("authLevel", "function")).lower() != "anonymous"
                           for s in by_type.get(HTTP, [])):
            log.warning("WHARF_FUNCTION_KEY is not set: FUNCTION/ADMIN-level routes will answer 401")
        lease = cfg.function_timeout + _LEASE_MARGIN if cfg.function_timeout else _DEFAULT_LEASE
        for spec in by_type.get(QUEUE, []):
            conn = resolve_connection(spec.trigger.get("connection"), env, where=f"function {spec.name!r}")
            self._queues.append(QueueListener(spec, invoker, conn, cfg.queues, self._stop_event, lease=lease))
        host_id = env.get("AzureFunctionsWebHost__hostid") or "devhost"
        for spec in by_type.get(BLOB, []):
            conn = resolve_connection(spec.trigger.get("connection"), env, where=f"function {spec.name!r}")
            container = str(spec.trigger.get("path", "")).partition("/")[0]
            self._blobs.append(BlobPoller(spec, invoker, conn, self._stop_event, interval=self._blob_interval,
                                          host_id=host_id, max_attempts=cfg.queues.max_dequeue_count,
                                          container=self._blob_containers.get(container)))
            if str(spec.trigger.get("source", "")).lower() == "eventgrid":
                log.info("devhost: %s uses the Event Grid blob source in Azure; devhost polls the container",
                         spec.name)
        subscriptions = (self._event_grid_blobs if self._event_grid_blobs is not None
                         else parse_event_grid_blobs(env.get("DEVHOST_EVENTGRID_BLOBS", "")))
        for spec in by_type.get(EVENT_GRID, []):
            path = subscriptions.get(spec.name)
            if path is None:
                log.warning("devhost: %s is an Event Grid trigger with no blob subscription in "
                            "DEVHOST_EVENTGRID_BLOBS: nothing fires it", spec.name)
                continue
            conn = resolve_connection("AzureWebJobsStorage", env, where=f"function {spec.name!r}")
            container = path.partition("/")[0]
            self._blobs.append(BlobPoller(spec, invoker, conn, self._stop_event, interval=self._blob_interval,
                                          host_id=host_id, max_attempts=cfg.queues.max_dequeue_count,
                                          container=self._blob_containers.get(container), path=path))
        for spec in by_type.get(TIMER, []):
            self._timers[spec.name] = TimerRunner(spec, invoker, self._stop_event)
        http.start()
        for listener in self._queues:
            listener.start()
        for poller in self._blobs:
            poller.start()
        if self._enable_timers:
            for timer in self._timers.values():
                timer.start()
        summary = ", ".join(f"{s.name} [{s.trigger_type}]" for s in self.specs)
        log.info("devhost: %d functions indexed: %s", len(self.specs), summary)
        log.info("devhost: listening on %s (route prefix '/%s')", http.base_url, cfg.route_prefix)

    @staticmethod
    def _durable_name(spec: FunctionSpec, key: str) -> str:
        return str(spec.trigger.get(key) or spec.name)

    def stop(self, grace: float = 10.0) -> None:
        """Stop taking new work, let running invocations finish (up to ``grace`` seconds), release everything."""
        self._stop_event.set()
        for listener in self._queues:
            listener.wake()
        deadline = time.monotonic() + grace
        workers: list[QueueListener | BlobPoller | TimerRunner] = [*self._queues, *self._blobs,
                                                                   *self._timers.values()]
        for worker in workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        if self._hub is not None:
            self._hub.stop()
        if self._http is not None:
            self._http.stop()
        if self._invoker is not None:
            self._invoker.shutdown()
        for key, old in self._saved_env.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old
        self._saved_env.clear()
        self._started = False

    def __enter__(self) -> DevHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down gracefully (the CLI's main loop)."""
        stop = threading.Event()

        def _signal(signum: int, _frame: FrameType | None) -> None:
            log.info("devhost: %s received, shutting down", signal.Signals(signum).name)
            stop.set()

        previous = {s: signal.signal(s, _signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            stop.wait()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ test helpers

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return self._require(self._http).base_url

    @property
    def http_url(self) -> str:
        """The base URL plus the route prefix, e.g. ``http://127.0.0.1:7071/api``."""
        prefix = self._require(self.config).route_prefix
        return self.base_url + (f"/{prefix}" if prefix else "")

    @property
    def task_hub(self) -> TaskHub:
        return self._require(self._hub)

    def durable_client(self) -> DevDurableClient:
        """An in-process client with ``DurableOrchestrationClient``'s methods, usable from any event loop."""
        http = self._require(self._http)
        return DevDurableClient(self.task_hub, http.base_url, os.environ.get("WHARF_FUNCTION_KEY") or None)

    def run_timer(self, name: str, *, past_due: bool = False) -> Any:
        """Fire timer function ``name`` now, in this thread; its exception (if any) propagates."""
        timer = self._timers.get(name)
        if timer is None:
            raise KeyError(f"no timer function named {name!r}; timers: {sorted(self._timers)}")
        return timer.fire(past_due=past_due)

    def _admin_run(self, name: str) -> bool:
        timer = self._timers.get(name)
        if timer is None:
            return False
        threading.Thread(target=timer._fire_logged, name=f"devhost-admin-{name}", daemon=True).start()
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no invocation, queue message, blob or orchestration step is in flight."""
        deadline = time.monotonic() + timeout

        def busy() -> bool:
            return bool((self._invoker and self._invoker.active)
                        or any(q.inflight for q in self._queues) or any(b.inflight for b in self._blobs))

        while time.monotonic() < deadline:
            hub_idle = self._hub is None or self._hub.wait_idle(max(0.0, deadline - time.monotonic()))
            if hub_idle and not busy():
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def _require(value: Any) -> Any:
        if value is None:
            raise RuntimeError("DevHost is not started")
        return value


