"""An API world for tests: fakes behind Services, a catalogue, and a way to call routes through dispatch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from shared.api.app import dispatch
from shared.api.config import ApiSettings
from shared.api.http import ApiRequest, ApiResponse
from shared.bootstrap import Services, build_services
from shared.catalog import parse_catalog
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.settings import Settings
from tests.fakes import (
    FakeBlobStore,
    FakeBreakers,
    FakeDeliveries,
    FakeJobStore,
    FakeLedger,
    FakeMessageQueue,
    FakePartnerKeys,
    FakePublisher,
)

KEY = "unit-function-key"
CATALOG = """partners:
  - id: acme
    name: Acme
    sftp:
      host: 127.0.0.1
      port: 2222
      username: acme
      auth: {password_secret: acme-pw}
      host_keys: ["[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"]
      remote_dirs: [/in]
      schedule: "0 */5 * * * *"
  - id: globex
    name: Globex
"""


class ApiWorld:
    def __init__(self, **api: Any) -> None:
        self.jobs, self.blobs, self.queues = FakeJobStore(), FakeBlobStore(), FakeMessageQueue()
        self.ledger, self.breakers, self.deliveries = FakeLedger(), FakeBreakers(), FakeDeliveries()
        self.keys = FakePartnerKeys()
        self.services: Services = build_services(
            Settings(LANDED_QUEUE="file-landed", POLL_QUEUE="poll-requests", WHARF_EVENTS_QUEUE="events",
                     TRANSFER_QUEUE="transfer-batches"),
            jobs=self.jobs, blobs=self.blobs, queues=self.queues, publisher=FakePublisher(), ledger=self.ledger,
            breakers=self.breakers, deliveries=self.deliveries, partner_keys=self.keys,
            catalog=parse_catalog(CATALOG, env={}))
        self.queues.ensure_queues(self.services.queue_names())
        # Sign-in switches off unless a test turns them on, whatever the shell running the tests has set.
        api = {"WHARF_CONSOLE_DEV_SIGNIN": False, "WHARF_EASYAUTH_ENABLED": False, **api}
        self.cfg = ApiSettings(WHARF_FUNCTION_KEY=KEY, **api)

    def call(self, method: str, path: str, query: dict[str, str] | None = None, *, body: bytes = b"",
             headers: dict[str, str] | None = None, key: bool = True,
             stream: Iterator[bytes] | None = None) -> ApiResponse:
        """`stream`: the body as a streaming host hands it over (pieces as they arrive), instead of `body`."""
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        if key:
            hdrs.setdefault("x-functions-key", KEY)
        request = ApiRequest(method, path, query or {}, hdrs, body, stream=stream, streamed_response=stream is not None)
        return dispatch(self.services, request, cfg=self.cfg)

    def json(self, method: str, path: str, query: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
        r = self.call(method, path, query, **kw)
        return r.status, json.loads(r.read() or b"null")

    def job(self, partner: str = "acme", file_name: str = "a.csv", *, status: str = "PENDING") -> str:
        job_id = new_job_id()
        self.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "SFTP_INGEST",
                                                     "source": "test", "file_name": file_name})
        if status in ("RUNNING", "COMPLETED", "FAILED"):
            self.jobs.append(job_id, EventType.STARTED, {})
        if status == "COMPLETED":
            self.jobs.append(job_id, EventType.COMPLETED, {})
        if status == "FAILED":
            self.jobs.append(job_id, EventType.FAILED, {"reason": "bad"})
        return job_id
