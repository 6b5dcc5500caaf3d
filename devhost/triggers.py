"""Timer, queue and blob listeners behaving like the Functions host's (schedules, poison queues, receipts)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.functions import EventGridEvent
from azure.functions.blob import InputStream
from azure.functions.queue import QueueMessage as FuncQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobClient, BlobServiceClient, ContainerClient
from azure.storage.blob import ExponentialRetry as BlobRetry
from azure.storage.queue import ExponentialRetry as QueueRetry
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient
from croniter import croniter

from devhost.config import ConfigError, QueueOptions, is_timespan, parse_timespan
from devhost.index import FunctionSpec
from devhost.invoke import Invoker

log = logging.getLogger("devhost.triggers")

_PARAM = re.compile(r"\{(\w+)\}")
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"
RECEIPTS_CONTAINER = "azure-webjobs-hosts"
_WHITESPACE = re.compile(rb"\s+")
# A storage call that cannot reach the account (refused, reset, timed out): worth another try.
_UNREACHABLE = (ServiceRequestError, ServiceResponseError)
_SETTLE_TRIES = 4


def _storage_options(kind: str) -> dict[str, Any]:
    """devhost's own storage clients (listeners, receipts, settling messages): two quick retries (1 s, then
    3 s) instead of the SDK's 15 s, 18 s and 24 s, because a listener has its own back-off and must see a storage
    outage, log it and poll again, as the host does, rather than sit a minute in one call."""
    retry = (QueueRetry if kind == "queue" else BlobRetry)(initial_backoff=1, increment_base=2, retry_total=2,
                                                          random_jitter_range=0)
    return {"retry_policy": retry, "connection_timeout": 5, "read_timeout": 30}


def _why(exc: AzureError) -> str:
    """One line for a log: the error's type and its reason (or its first line)."""
    text = getattr(exc, "reason", None) or (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:200]}"


def _retry_unreachable(call: Any, what: str) -> Any:
    """`call()`, tried again (1, 2, 4 s apart) while the storage cannot be reached: a message a function has
    finished must be deleted (or released) once storage is back, not left to reappear when its lease ends."""
    for attempt in range(_SETTLE_TRIES):
        try:
            return call()
        except _UNREACHABLE as exc:
            if attempt == _SETTLE_TRIES - 1:
                raise
            log.warning("%s: storage unreachable (%s); trying again", what, type(exc).__name__)
            threading.Event().wait(2 ** attempt)
    return None


def resolve_connection(setting: str | None, env: Mapping[str, str], *, where: str) -> str:
    """The connection string a binding's ``connection`` names (the host's lookup, connection strings only)."""
    name = setting or "AzureWebJobsStorage"
    value = env.get(name) or env.get(f"AzureWebJobs{name}")
    if not value:
        if env.get(f"{name}__accountName") or env.get(f"{name}__queueServiceUri"):
            raise ConfigError(f"{where}: devhost supports connection strings only; {name} is identity-based")
        raise ConfigError(f"{where}: app setting {name!r} (the storage connection) is not set")
    if value.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
        from shared.settings import azurite_connection_string

        return azurite_connection_string()
    return value


def _param_value(spec: FunctionSpec, default: Any, raw: bytes) -> Any:
    """Bind to the declared parameter type as the worker does: ``str``/``bytes`` or the rich object."""
    annotation = spec.annotation(spec.trigger_param)
    if annotation is str or annotation == "str":
        return raw.decode("utf-8")
    if annotation is bytes or annotation == "bytes":
        return raw
    return default


# ---------------------------------------------------------------------------------------------- timers


class TimerRunner:
    """Fires one timer function on its NCRONTAB (6-field, seconds first) or TimeSpan schedule, never overlapping."""

    def __init__(self, spec: FunctionSpec, invoker: Invoker, stop: threading.Event) -> None:
        self.spec = spec
        self._invoker = invoker
        self._stop = stop
        schedule = str(spec.trigger["schedule"]).strip()
        self._interval: timedelta | None = None
        if is_timespan(schedule):
            self._interval = parse_timespan(schedule)
            if self._interval <= timedelta(0):
                raise ConfigError(f"function {spec.name!r}: timer interval must be positive")
        elif len(schedule.split()) != 6 or not croniter.is_valid(schedule, second_at_beginning=True):
            raise ConfigError(f"function {spec.name!r}: {schedule!r} is not a 6-field NCRONTAB expression "
                              "(seconds minutes hours day month day-of-week)")
        self._schedule = schedule
        self._run_lock = threading.Lock()  # timers are singletons: one invocation at a time
        self._last: datetime | None = None
        self._thread = threading.Thread(target=self._loop, name=f"devhost-timer-{spec.name}", daemon=True)

    def next_after(self, moment: datetime) -> datetime:
        if self._interval is not None:
            return moment + self._interval
        result: datetime = croniter(self._schedule, moment, second_at_beginning=True).get_next(datetime)
        return result

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def fire(self, *, scheduled: datetime | None = None, past_due: bool = False) -> Any:
        """Invoke now (blocking); exceptions propagate to the caller."""
        with self._run_lock:
            now = datetime.now(UTC)
            nxt = self.next_after(now)
            request = TimerRequest(
                past_due=past_due,
                schedule_status={"Last": (self._last or now).isoformat(), "Next": nxt.isoformat(),
                                 "LastUpdated": now.isoformat()},
                schedule={"AdjustForDST": True},
            )
            self._last = now
            detail = f"schedule={self._schedule}" + (" past_due" if past_due else "")
            return self._invoker.call(self.spec, {self.spec.trigger_param: request}, detail=detail)

    def _fire_logged(self, **kwargs: Any) -> None:
        try:
            self.fire(**kwargs)
        except Exception:  # noqa: BLE001,S110 - the invoker logged it; the host keeps the schedule going
            pass

    def _loop(self) -> None:
        if self.spec.trigger.get("runOnStartup"):
            self._fire_logged()
        due = self.next_after(datetime.now(UTC))
        while not self._stop.is_set():
            delay = (due - datetime.now(UTC)).total_seconds()
            if delay > 0 and self._stop.wait(min(delay, 1.0)):
                return
            if delay > 0:
                continue
            late = datetime.now(UTC) - due
            self._fire_logged(scheduled=due, past_due=late > timedelta(seconds=1))
            due = self.next_after(max(due, datetime.now(UTC)))


# ---------------------------------------------------------------------------------------------- queues


class QueueListener:
    """Polls one storage queue: batches, back-off, visibility timeout on failure, poison after maxDequeueCount."""

    _MIN_POLL = 0.1

    def __init__(self, spec: FunctionSpec, invoker: Invoker, connection: str, options: QueueOptions,
                 stop: threading.Event, *, lease: timedelta) -> None:
        self.spec = spec
        self._invoker = invoker
        self._options = options
        self._stop = stop
        self.queue_name = str(spec.trigger["queueName"])
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", self.queue_name):
            raise ConfigError(f"function {spec.name!r}: {self.queue_name!r} is not a valid queue name")
        service = QueueServiceClient.from_connection_string(connection, **_storage_options("queue"))
        self._queue: QueueClient = service.get_queue_client(self.queue_name)
        self._poison: QueueClient = service.get_queue_client(f"{self.queue_name}-poison")
        self._lease = int(lease.total_seconds())
        self._threshold = options.new_batch_threshold if options.new_batch_threshold is not None \
            else options.batch_size // 2
        self._pool = ThreadPoolExecutor(max_workers=options.batch_size + self._threshold,
                                        thread_name_prefix=f"devhost-q-{self.queue_name}")
        self._inflight = 0
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=f"devhost-queue-{spec.name}", daemon=True)

    @property
    def inflight(self) -> int:
        with self._cv:
            return self._inflight

    def start(self) -> None:
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    def _loop(self) -> None:
        delay = self._MIN_POLL
        while not self._stop.is_set():
            with self._cv:
                self._cv.wait_for(lambda: self._inflight <= self._threshold or self._stop.is_set())
            if self._stop.is_set():
                return
            try:
                messages = list(self._queue.receive_messages(
                    messages_per_page=self._options.batch_size, max_messages=self._options.batch_size,
                    visibility_timeout=self._lease))
            except AzureError as exc:  # storage down or restarting: log, back off, poll again (as the host)
                log.warning("queue %s: receive failed (%s); retrying", self.queue_name, _why(exc))
                messages = []
            if messages:
                delay = self._MIN_POLL
                with self._cv:
                    self._inflight += len(messages)
                for message in messages:
                    self._pool.submit(self._process, message)
                continue
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._options.max_polling_interval.total_seconds())

    def _decode(self, content: Any) -> bytes:
        text = content if isinstance(content, str) else bytes(content).decode("utf-8")
        if self._options.message_encoding == "none":
            return text.encode("utf-8")
        try:
            return base64.b64decode(_WHITESPACE.sub(b"", text.encode("ascii")), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ValueError(
                f"queue {self.queue_name}: message {text[:40]!r} is not base64 but host.json "
                "extensions.queues.messageEncoding is base64; enqueue with TextBase64EncodePolicy"
            ) from exc

    def _process(self, message: QueueMessage) -> None:
        try:
            if message.dequeue_count is not None and message.dequeue_count > self._options.max_dequeue_count:
                self._to_poison(message)  # left over from a crash mid-invocation
                return
            ok = False
            try:
                body = self._decode(message.content)
                rich = FuncQueueMessage(
                    id=message.id, body=body, dequeue_count=message.dequeue_count,
                    expiration_time=message.expires_on, insertion_time=message.inserted_on,
                    time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
                self._invoker.call(self.spec, {self.spec.trigger_param: _param_value(self.spec, rich, body)},
                                   detail=f"{self.queue_name} id={message.id} dequeue_count={message.dequeue_count}")
                ok = True
            except ValueError as exc:
                if "TextBase64EncodePolicy" in str(exc):
                    log.error("%s", exc)
            except Exception:  # noqa: BLE001,S110 - logged by the invoker; the message is released below
                pass
            what = f"queue {self.queue_name}: message {message.id}"
            if ok:
                _retry_unreachable(lambda: self._queue.delete_message(message.id, message.pop_receipt), what)
            elif (message.dequeue_count or 0) >= self._options.max_dequeue_count:
                self._to_poison(message)
            else:
                visibility = int(self._options.visibility_timeout.total_seconds())
                _retry_unreachable(lambda: self._queue.update_message(
                    message.id, message.pop_receipt, visibility_timeout=visibility), what)
        except AzureError as exc:
            log.warning("queue %s: could not settle message %s: %s", self.queue_name, message.id, _why(exc))
        finally:
            with self._cv:
                self._inflight -= 1
                self._cv.notify_all()

    def _to_poison(self, message: QueueMessage) -> None:
        try:
            self._poison.create_queue()
        except ResourceExistsError:
            pass
        self._poison.send_message(message.content)  # same (still encoded) text, as the host copies it
        _retry_unreachable(lambda: self._queue.delete_message(message.id, message.pop_receipt),
                           f"queue {self.queue_name}: message {message.id}")
        log.warning("Message %s has reached MaxDequeueCount of %d. Moving message to queue '%s-poison'.",
                    message.id, self._options.max_dequeue_count, self.queue_name)

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


# ---------------------------------------------------------------------------------------------- blobs


def compile_blob_path(path: str, *, where: str) -> tuple[str, str, re.Pattern[str]]:
    """Split ``container/{a}/{name}`` into container, literal listing prefix and a blob-name regex.

    Parameters match one path segment, except the last one, which may span folders (as ``{name}`` does).
    """
    container, _, blob_pattern = path.partition("/")
    if not container or "{" in container:
        raise ConfigError(f"{where}: blob path {path!r} must start with a literal container name")
    pieces = _PARAM.split(blob_pattern)
    regex = ""
    names = pieces[1::2]
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            regex += re.escape(piece)
        else:
            last = piece == names[-1] and i == len(pieces) - 2
            regex += f"(?P<{piece}>{'.+' if last else '[^/]+'})"
    prefix = pieces[0]
    return container, prefix, re.compile(regex)


def _etag(value: str) -> str:
    """ETags compare unquoted: listings give 0x8D..., downloads give "0x8D..."."""
    return value.strip('"')


def _blob_created_event(container: str, name: str, url: str, props: Any) -> EventGridEvent:
    """What an Event Grid subscription on the storage account delivers for a new blob (schema 1.0)."""
    data = {"api": "PutBlob", "clientRequestId": "", "requestId": str(uuid.uuid4()), "eTag": props.etag,
            "contentType": props.content_settings.content_type or "application/octet-stream",
            "contentLength": props.size, "blobType": "BlockBlob", "url": url, "sequencer": "",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())}}
    return EventGridEvent(id=str(uuid.uuid4()), data=data, topic=_DEVHOST_TOPIC,
                          subject=f"/blobServices/default/containers/{container}/blobs/{name}",
                          event_type="Microsoft.Storage.BlobCreated", event_time=props.last_modified,
                          data_version="")


_DEVHOST_TOPIC = ("/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devhost/providers/"
                  "Microsoft.Storage/storageAccounts/devstoreaccount1")


class BlobPoller:
    """Polls one container for new or changed blobs; receipts in azure-webjobs-hosts survive restarts."""

    def __init__(self, spec: FunctionSpec, invoker: Invoker, connection: str, stop: threading.Event, *,
                 interval: float, host_id: str, max_attempts: int, container: str | None = None,
                 path: str | None = None) -> None:
        """``path`` (``container/{name}``): the blobs an Event Grid trigger's subscription covers; such a
        trigger gets a ``func.EventGridEvent`` (``Microsoft.Storage.BlobCreated``) per new or changed blob."""
        self.spec = spec
        self._event_grid = path is not None
        self._invoker = invoker
        self._stop = stop
        self._interval = interval
        self._max_attempts = max_attempts
        where = f"function {spec.name!r}"
        self.container, self._prefix, self._regex = compile_blob_path(path or str(spec.trigger["path"]), where=where)
        if container:  # watched in place of the path's own container (a test run's container of its own)
            self.container = container
        service = BlobServiceClient.from_connection_string(connection, **_storage_options("blob"))
        self._container: ContainerClient = service.get_container_client(self.container)
        self._receipts: ContainerClient = service.get_container_client(RECEIPTS_CONTAINER)
        self._receipt_prefix = f"blobreceipts/{host_id}/{spec.name}/{self.container}/"
        self._poison = QueueServiceClient.from_connection_string(
            connection, **_storage_options("queue")).get_queue_client(BLOB_POISON_QUEUE)
        self._seen: dict[str, str] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"devhost-blob-{self.container}")
        self._thread = threading.Thread(target=self._loop, name=f"devhost-blob-{spec.name}", daemon=True)

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._busy)

    def start(self) -> None:
        for client in (self._container, self._receipts):
            try:
                client.create_container()
            except ResourceExistsError:
                pass
        for item in self._receipts.list_blobs(name_starts_with=self._receipt_prefix, include=["metadata"]):
            etag = (item.metadata or {}).get("etag")
            if etag:
                self._seen[item.name[len(self._receipt_prefix):]] = _etag(etag)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)

    def poll_once(self) -> None:
        for item in self._container.list_blobs(name_starts_with=self._prefix or None):
            if not self._regex.fullmatch(item.name):
                continue
            with self._lock:
                if self._seen.get(item.name) == _etag(item.etag) or item.name in self._busy:
                    continue
                self._busy.add(item.name)
            self._pool.submit(self._process, item.name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except AzureError as exc:  # storage down or restarting: log and scan again next time
                log.warning("blob container %s: scan failed (%s); retrying", self.container, _why(exc))
            if self._stop.wait(self._interval):
                return

    def _process(self, name: str) -> None:
        try:
            blob = self._container.get_blob_client(name)
            annotation = self.spec.annotation(self.spec.trigger_param)
            value: Any
            if self._event_grid:
                try:
                    props = blob.get_blob_properties()
                except ResourceNotFoundError:
                    return
                etag, value = _etag(props.etag), _blob_created_event(self.container, name, blob.url, props)
            elif isinstance(annotation, type) and issubclass(annotation, BlobClient):
                # SDK-type binding (azurefunctions-extensions-bindings-blob): the function gets a client
                # and reads the blob itself; the content never passes through the host.
                try:
                    props = blob.get_blob_properties()
                except ResourceNotFoundError:
                    return
                etag, value = _etag(props.etag), blob
            else:
                try:
                    downloader = blob.download_blob()
                except ResourceNotFoundError:
                    return  # deleted between listing and download
                props = downloader.properties
                etag = _etag(props.etag)
                data = downloader.readall()
                stream = InputStream(
                    data=data, name=f"{self.container}/{name}", length=props.size, uri=blob.url,
                    blob_properties={"ContentLength": props.size,
                                     "ContentType": props.content_settings.content_type,
                                     "ETag": etag, "LastModified": props.last_modified.isoformat()},
                    metadata=dict(props.metadata or {}))
                value = _param_value(self.spec, stream, data)
            try:
                self._invoker.call(self.spec, {self.spec.trigger_param: value}, detail=f"{self.container}/{name}")
            except Exception:  # noqa: BLE001 - logged by the invoker; retried on the next scan, then poisoned
                with self._lock:
                    attempts = self._failures.get((name, etag), 0) + 1
                    self._failures[(name, etag)] = attempts
                if attempts < self._max_attempts:
                    return
                self._poison_blob(name, etag)
            self._write_receipt(name, etag)
        except AzureError as exc:  # retried on the next scan (no receipt written)
            log.warning("blob %s/%s: %s", self.container, name, _why(exc))
        finally:
            with self._lock:
                self._busy.discard(name)

    def _write_receipt(self, name: str, etag: str) -> None:
        self._receipts.upload_blob(self._receipt_prefix + name, b"", overwrite=True, metadata={"etag": etag})
        with self._lock:
            self._seen[name] = etag

    def _poison_blob(self, name: str, etag: str) -> None:
        try:
            self._poison.create_queue()
        except ResourceExistsError:
            pass
        doc = {"Type": "BlobTrigger", "FunctionId": self.spec.name, "BlobType": "BlockBlob",
               "ContainerName": self.container, "BlobName": name, "ETag": etag}
        self._poison.send_message(base64.b64encode(json.dumps(doc).encode()).decode())
        log.warning("Blob %s/%s failed %d times; receipt written and message sent to '%s'",
                    self.container, name, self._max_attempts, BLOB_POISON_QUEUE)

