"""Publisher adapters: the envelope, and the Service Bus message's shape and properties."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.adapters.publishers import QueuePublisher, ServiceBusPublisher, envelope
from shared.observability.setup import for_tests
from shared.observability.tracing import span


class RecordingQueues:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, queue: str, message: dict[str, Any], *, visibility_timeout: int | None = None) -> None:
        self.sent.append((queue, dict(message)))


class RecordingSender:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def __enter__(self) -> RecordingSender:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send_messages(self, message: Any) -> None:
        self.messages.append(message)


def test_envelope_is_cloudevents_shaped() -> None:
    env = envelope("file.processed", {"job_id": "job-1"}, "acme/job-1")
    assert {k: env[k] for k in ("specversion", "source", "type", "subject", "datacontenttype")} == {
        "specversion": "1.0", "source": "wharf", "type": "file.processed", "subject": "acme/job-1",
        "datacontenttype": "application/json"}
    assert env["data"] == {"job_id": "job-1"} and len(env["id"]) == 32


def test_queue_publisher_sends_the_envelope_to_its_queue() -> None:
    queues = RecordingQueues()
    QueuePublisher(queues, "wharf-events").publish("job.failed", {"job_id": "job-9", "reason": "x"}, subject="s")
    [(queue, message)] = queues.sent
    assert queue == "wharf-events"
    assert (message["type"], message["data"], message["subject"]) == ("job.failed", {"job_id": "job-9",
                                                                                      "reason": "x"}, "s")


def test_service_bus_message_shape_and_properties() -> None:
    for_tests()
    sender = RecordingSender()
    publisher = ServiceBusPublisher(lambda: sender, "wharf-events")
    with span("test.parent"):
        publisher.publish("file.processed", {"job_id": "job-7", "sha256": "ab"}, subject="acme/job-7")
    [msg] = sender.messages
    body = json.loads(b"".join(msg.body))
    assert body["type"] == "file.processed" and body["data"] == {"job_id": "job-7", "sha256": "ab"}
    assert msg.content_type == "application/json"
    assert msg.subject == "acme/job-7"
    assert msg.correlation_id == "job-7"
    assert msg.message_id == body["id"]
    props = {(k.decode() if isinstance(k, bytes) else k): v for k, v in msg.application_properties.items()}
    assert props["type"] == "file.processed" and props["source"] == "wharf"
    assert str(props["traceparent"]).startswith("00-")


def test_service_bus_publisher_needs_a_namespace_or_connection() -> None:
    with pytest.raises(ValueError, match="SERVICEBUS_FULLY_QUALIFIED_NAMESPACE"):
        ServiceBusPublisher.from_settings(namespace=None, connection=None, topic="t")
