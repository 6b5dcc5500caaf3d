"""Service Bus publisher against a real namespace. Runs only where one is configured (never in local CI:
Service Bus has no emulator here); the message shape is covered by tests/unit/test_publishers.py."""

from __future__ import annotations

import json
import os
import uuid

import pytest

CONN = os.environ.get("SERVICEBUS_CONNECTION_STRING", "")
TOPIC = os.environ.get("SERVICEBUS_TOPIC", "wharf-events")
SUBSCRIPTION = os.environ.get("SERVICEBUS_TEST_SUBSCRIPTION", "")

pytestmark = pytest.mark.skipif(not (CONN and SUBSCRIPTION),
                                reason="needs SERVICEBUS_CONNECTION_STRING and SERVICEBUS_TEST_SUBSCRIPTION")


def test_published_event_arrives_on_the_subscription() -> None:
    from azure.servicebus import ServiceBusClient

    from shared.adapters.publishers import ServiceBusPublisher

    job_id = f"job-contract-{uuid.uuid4().hex[:8]}"
    ServiceBusPublisher.from_settings(namespace=None, connection=CONN, topic=TOPIC).publish(
        "file.processed", {"job_id": job_id}, subject=f"contract/{job_id}")
    with ServiceBusClient.from_connection_string(CONN) as client, client.get_subscription_receiver(
            TOPIC, SUBSCRIPTION, max_wait_time=30) as receiver:
        for msg in receiver:
            receiver.complete_message(msg)
            body = json.loads(b"".join(msg.body))
            if body["data"].get("job_id") == job_id:
                assert msg.application_properties[b"type"] == b"file.processed"
                return
    pytest.fail(f"event for {job_id} did not arrive")
