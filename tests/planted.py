"""Searching what a run left in storage for planted values (secrets, SAS signatures, sensitive fields):
tests/integration/test_masking_stores.py and tests/e2e/test_redaction_boundary.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

#: The blob containers a job writes a partner's files to.
CONTAINERS = ("inbound", "staging", "reports", "processed", "archive", "quarantine")


def stored_documents(conn: str, prefix: str, partners: Iterable[str], events_queue: str, *,
                     skip: Callable[[str, str], bool] = lambda container, name: False) -> list[tuple[str, str]]:
    """(where, text) for everything the run stored or published: every entity of every table with the prefix,
    every blob of the partners in CONTAINERS (name, metadata, content) but those `skip(container, name)` names,
    every event on the events queue (the first 32)."""
    docs: list[tuple[str, str]] = []
    tables = TableServiceClient.from_connection_string(conn)
    for table in tables.list_tables():
        if table.name.startswith(prefix):
            for entity in tables.get_table_client(table.name).list_entities():
                docs.append((f"table {table.name}", json.dumps(dict(entity), default=str)))
    blobs = BlobServiceClient.from_connection_string(conn)
    for name in CONTAINERS:
        container = blobs.get_container_client(name)
        for partner in partners:
            for item in container.list_blobs(name_starts_with=f"{partner}/", include=["metadata"]):
                if skip(name, item.name):
                    continue
                content = container.download_blob(item.name).readall().decode("utf-8", "replace")
                docs.append((f"blob {name}/{item.name}",
                             f"{item.name}\n{json.dumps(item.metadata or {})}\n{content}"))
    queue = QueueServiceClient.from_connection_string(conn).get_queue_client(events_queue)
    for message in queue.peek_messages(max_messages=32):
        docs.append((f"event {message.id}", base64.b64decode(message.content).decode()))
    return docs


def found(documents: Iterable[tuple[str, str]], needles: Mapping[str, str]) -> list[str]:
    """`what in where: ...text around it...` for every needle (what -> value) found in a document."""
    return [f"{what} in {where}: ...{text[max(0, text.find(needle) - 80):text.find(needle) + 40]}..."
            for where, text in documents for what, needle in needles.items() if needle in text]
