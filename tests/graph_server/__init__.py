"""A Graph-compatible test server for mail ingestion: in-memory mailboxes, faults, request log."""

from tests.graph_server.model import (
    Attachment,
    Folder,
    GraphModel,
    Message,
    User,
    file_attachment,
    item_attachment,
    synthetic_chunks,
    synthetic_sha256,
)
from tests.graph_server.server import TEST_TOKEN, Fault, GraphTestServer, RequestRecord

__all__ = [
    "TEST_TOKEN",
    "Attachment",
    "Fault",
    "Folder",
    "GraphModel",
    "GraphTestServer",
    "Message",
    "RequestRecord",
    "User",
    "file_attachment",
    "item_attachment",
    "synthetic_chunks",
    "synthetic_sha256",
]
