"""Storage-queue adapter: JSON messages, base64-encoded exactly as the Functions host decodes them."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.adapters.http import StorageLimits, storage_options
from shared.domain.errors import NotFoundError
from shared.observability.tracing import inject_traceparent, span
from shared.ports import QueuedMessage

_WHITESPACE = re.compile(r"\s+")
#: Seconds a received message may be hidden for at most (the service allows 7 days; Wharf never needs more).
MAX_VISIBILITY_TIMEOUT = 3600


def wire_body(content: str) -> bytes:
    """What a trigger is handed for a message's wire text: base64-decoded, or (content that is not base64,
    as a host may copy to a poison queue) the text itself as UTF-8."""
    try:
        return base64.b64decode(_WHITESPACE.sub("", content), validate=True)
    except (binascii.Error, ValueError):
        return content.encode("utf-8", "surrogateescape")


class QueueClientAdapter:
    """MessageQueue over azure-storage-queue. Every message carries the current W3C traceparent."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict[str, QueueClient] = {}
        self._raw_clients: dict[str, QueueClient] = {}

    @classmethod
    def from_connection_string(cls, conn: str, *, limits: StorageLimits | None = None) -> QueueClientAdapter:
        return cls(QueueServiceClient.from_connection_string(conn, **storage_options("queue", limits)))

    def _client(self, queue: str) -> QueueClient:
        client = self._clients.get(queue)
        if client is None:  # a benign race builds two; either is fine (clients are thread-safe)
            client = self._clients[queue] = self._service.get_queue_client(
                queue, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy())
        return client

    def _raw(self, queue: str) -> QueueClient:
        """No encode or decode policy: the wire text as it is, which `wire_body` interprets."""
        client = self._raw_clients.get(queue)
        if client is None:
            client = self._raw_clients[queue] = self._service.get_queue_client(queue)
        return client

    def ensure_queues(self, names: Iterable[str]) -> None:
        for name in names:
            try:
                self._service.create_queue(name)
            except ResourceExistsError:
                pass

    def send(self, queue: str, message: Mapping[str, Any], *, visibility_timeout: int | None = None) -> None:
        body = dict(message)
        with span("queue.send", {"messaging.system": "azure_storage_queue", "messaging.destination.name": queue,
                                 "messaging.operation.type": "send"}):
            inject_traceparent(body)
            text = json.dumps(body, default=str)
            if len(text.encode()) > 48 * 1024:  # base64 grows it by 4/3; the limit is 64 KiB
                raise ValueError(f"message for {queue} is too large ({len(text)} bytes): send references")
            self._client(queue).send_message(text, visibility_timeout=visibility_timeout)

    def peek(self, queue: str, max_messages: int = 32) -> list[dict[str, Any]]:
        msgs = self._client(queue).peek_messages(max_messages=max_messages)
        return [json.loads(m.content) for m in msgs]

    def receive_raw(self, queue: str, max_messages: int = 32) -> list[str]:
        """Raw message texts (base64-decoded), consuming them. For tests and tooling."""
        client = self._client(queue)
        out = []
        for m in client.receive_messages(max_messages=max_messages):
            out.append(m.content)
            client.delete_message(m)
        return out

    def send_raw(self, queue: str, body: bytes) -> str:
        with span("queue.send", _attrs(queue, "send")):
            text = base64.b64encode(bytes(body)).decode("ascii")
            if len(text) > 64 * 1024:
                raise ValueError(f"message for {queue} is too large ({len(body)} bytes)")
            return str(self._raw(queue).send_message(text).id)

    def peek_raw(self, queue: str, max_messages: int = 32) -> list[QueuedMessage]:
        with span("queue.peek", _attrs(queue, "receive")):
            try:
                found = self._raw(queue).peek_messages(max_messages=max(1, min(max_messages, 32)))
            except ResourceNotFoundError:
                return []
            return [_queued(m) for m in found]

    def receive(self, queue: str, *, max_messages: int = 32, visibility_timeout: int = 30) -> list[QueuedMessage]:
        hide = max(1, min(int(visibility_timeout), MAX_VISIBILITY_TIMEOUT))
        with span("queue.receive", _attrs(queue, "receive")):
            count = max(1, min(max_messages, 32))
            try:
                pages = self._raw(queue).receive_messages(messages_per_page=count, max_messages=count,
                                                         visibility_timeout=hide)
                return [_queued(m) for m in pages]
            except ResourceNotFoundError:
                return []

    def delete(self, queue: str, message_id: str, pop_receipt: str) -> None:
        with span("queue.settle", _attrs(queue, "settle")):
            try:
                self._raw(queue).delete_message(message_id, pop_receipt)
            except HttpResponseError as exc:
                _gone(exc, queue, message_id)

    def release(self, queue: str, message_id: str, pop_receipt: str) -> None:
        with span("queue.settle", _attrs(queue, "settle")):
            try:
                self._raw(queue).update_message(message_id, pop_receipt, visibility_timeout=0)
            except HttpResponseError as exc:
                _gone(exc, queue, message_id)

    def depth(self, queue: str) -> int:
        """One try, short timeouts: a watch (health details, the sweep timer) must not wait out the retries."""
        try:
            props = self._raw(queue).get_queue_properties(retry_total=0, connection_timeout=5, read_timeout=10)
        except ResourceNotFoundError:
            return 0
        return int(props.approximate_message_count or 0)


def _attrs(queue: str, operation: str) -> dict[str, Any]:
    return {"messaging.system": "azure_storage_queue", "messaging.destination.name": queue,
            "messaging.operation.type": operation}


def _queued(message: Any) -> QueuedMessage:
    content = message.content
    text = content if isinstance(content, str) else bytes(content or b"").decode("utf-8", "surrogateescape")
    return QueuedMessage(id=str(message.id), body=wire_body(text), inserted_at=message.inserted_on,
                         dequeue_count=int(message.dequeue_count or 0), pop_receipt=str(message.pop_receipt or ""))


def _gone(exc: HttpResponseError, queue: str, message_id: str) -> None:
    """404 MessageNotFound (deleted) and 400 PopReceiptMismatch (received again since): not ours to settle."""
    code = getattr(exc, "error_code", None)
    if exc.status_code == 404 or str(getattr(code, "value", code)) == "PopReceiptMismatch":
        raise NotFoundError(f"message {message_id} is no longer in {queue} as received "
                            "(deleted, or received again since)") from exc
    raise exc
