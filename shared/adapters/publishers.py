"""Publisher adapters: a storage queue (local default) and a Service Bus topic."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.observability.redaction import redact, redact_data
from shared.observability.tracing import inject_traceparent, span
from shared.ports import MessageQueue


def envelope(event_type: str, data: Mapping[str, Any], subject: str = "") -> dict[str, Any]:
    """A CloudEvents-shaped envelope shared by every publisher; `data` and `subject` redacted (what is published
    leaves Wharf: no secret may ride on it)."""
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "wharf",
        "type": event_type,
        "subject": redact(subject),
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": redact_data(dict(data)),
    }


class QueuePublisher:
    """Publishes events as JSON messages on a storage queue (Azurite locally)."""

    def __init__(self, queues: MessageQueue, queue: str) -> None:
        self._queues = queues
        self._queue = queue

    def publish(self, event_type: str, data: Mapping[str, Any], *, subject: str = "") -> None:
        with span("event.publish", {"messaging.system": "azure_storage_queue",
                                    "messaging.destination.name": self._queue, "wharf.event": event_type}):
            self._queues.send(self._queue, envelope(event_type, data, subject))


class ServiceBusPublisher:
    """Publishes events to a Service Bus topic; `type` and `subject` become filterable properties."""

    def __init__(self, sender_factory: Any, topic: str) -> None:
        self._sender_factory = sender_factory
        self._topic = topic

    @classmethod
    def from_settings(cls, *, namespace: str | None, connection: str | None, topic: str) -> ServiceBusPublisher:
        from azure.servicebus import ServiceBusClient

        if connection:
            client = ServiceBusClient.from_connection_string(connection)
        elif namespace:
            from azure.identity import DefaultAzureCredential

            client = ServiceBusClient(namespace, DefaultAzureCredential())
        else:
            raise ValueError("Service Bus publisher needs SERVICEBUS_FULLY_QUALIFIED_NAMESPACE "
                             "or SERVICEBUS_CONNECTION_STRING")
        return cls(lambda: client.get_topic_sender(topic_name=topic), topic)

    @staticmethod
    def build_message(event_type: str, data: Mapping[str, Any], subject: str = "") -> Any:
        from azure.servicebus import ServiceBusMessage

        body = envelope(event_type, data, subject)
        carrier: dict[str | bytes, Any] = {}
        inject_traceparent(carrier)
        props: dict[str | bytes, Any] = {"type": event_type, "source": "wharf", **carrier}
        job_id = data.get("job_id")
        return ServiceBusMessage(
            json.dumps(body, default=str), content_type="application/json", subject=subject or event_type,
            message_id=body["id"], correlation_id=str(job_id) if job_id else None,
            application_properties=props,
        )

    def publish(self, event_type: str, data: Mapping[str, Any], *, subject: str = "") -> None:
        with span("event.publish", {"messaging.system": "servicebus",
                                    "messaging.destination.name": self._topic, "wharf.event": event_type}):
            with self._sender_factory() as sender:
                sender.send_messages(self.build_message(event_type, data, subject))
