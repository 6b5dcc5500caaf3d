"""The Event Grid drop trigger: a BlobCreated event's subject names the dropped blob; anything else is ignored."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from shared.services import drop


@pytest.mark.parametrize(("subject", "expected"), [
    ("/blobServices/default/containers/drop/blobs/acme/orders.csv", ("drop", "acme/orders.csv")),
    ("/blobServices/default/containers/drop/blobs/acme/sub dir/ørders 1.csv", ("drop", "acme/sub dir/ørders 1.csv")),
    ("/blobServices/default/containers/drop-e2e1a2b/blobs/loose.csv", ("drop-e2e1a2b", "loose.csv")),
])
def test_a_blob_created_in_a_drop_container_names_its_blob(subject: str, expected: tuple[str, str]) -> None:
    assert drop.drop_from_event(drop.BLOB_CREATED, subject) == expected


@pytest.mark.parametrize(("event_type", "subject"), [
    ("Microsoft.Storage.BlobDeleted", "/blobServices/default/containers/drop/blobs/acme/orders.csv"),
    (drop.BLOB_CREATED, "/blobServices/default/containers/inbound/blobs/acme/2026/orders.csv"),
    (drop.BLOB_CREATED, "/blobServices/default/containers/dropbox/blobs/acme/orders.csv"),
    (drop.BLOB_CREATED, "/blobServices/default/containers/drop/blobs/"),
    (drop.BLOB_CREATED, "containers/drop/blobs/acme/orders.csv"),
    (drop.BLOB_CREATED, ""),
])
def test_any_other_event_is_ignored_with_a_warning(event_type: str, subject: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.services.drop"):
        assert drop.drop_from_event(event_type, subject) is None
    assert "ignored an event" in caplog.text


def test_an_ignored_event_touches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[Any] = []

    async def take(*args: Any, **kwargs: Any) -> None:
        called.append(kwargs)

    monkeypatch.setattr(drop, "take_drop", take)
    subject = "/blobServices/default/containers/archive/blobs/acme/orders.csv"
    assert asyncio.run(drop.take_drop_event(object(), None, event_type=drop.BLOB_CREATED, subject=subject)) is None
    asyncio.run(drop.take_drop_event(object(), None, event_type=drop.BLOB_CREATED,
                                     subject="/blobServices/default/containers/drop/blobs/acme/a.csv"))
    assert called == [{"container": "drop", "blob_path": "acme/a.csv", "handover": drop.DROP}]


def test_the_outbound_trigger_takes_only_outbound_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[Any] = []

    async def take(*args: Any, **kwargs: Any) -> None:
        called.append(kwargs)

    monkeypatch.setattr(drop, "take_drop", take)
    drop_subject = "/blobServices/default/containers/drop/blobs/acme/a.csv"
    assert asyncio.run(drop.take_drop_event(object(), None, event_type=drop.BLOB_CREATED, subject=drop_subject,
                                            handover=drop.OUTBOUND)) is None
    asyncio.run(drop.take_drop_event(object(), None, event_type=drop.BLOB_CREATED, handover=drop.OUTBOUND,
                                     subject="/blobServices/default/containers/outbound-e2e1/blobs/acme/a.csv"))
    assert called == [{"container": "outbound-e2e1", "blob_path": "acme/a.csv", "handover": drop.OUTBOUND}]
