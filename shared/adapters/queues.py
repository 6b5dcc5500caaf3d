"""Storage-queue adapter: JSON messages, base64-encoded exactly as the Functions host decodes them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueServiceClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from shared.adapters.http import transport_options
from shared.observability.tracing import inject_traceparent, span


class QueueClientAdapter:
    """MessageQueue over azure-storage-queue. Every message carries the current W3C traceparent."""

    def __init__(self, service: QueueServiceClient) -> None:
        self._service = service
        self._clients: dict[str, QueueClient] = {}

    @classmethod
    def from_connection_string(cls, conn: str) -> QueueClientAdapter:
        return cls(QueueServiceClient.from_connection_string(conn, **transport_options()))

    def _client(self, queue: str) -> QueueClient:
        client = self._clients.get(queue)
        if client is None:  # a benign race builds two; either is fine (clients are thread-safe)
            client = self._clients[queue] = self._service.get_queue_client(
                queue, message_encode_policy=TextBase64EncodePolicy(), message_decode_policy=TextBase64DecodePolicy())
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

