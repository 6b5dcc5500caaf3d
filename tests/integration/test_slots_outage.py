"""A held slot's lease renewal survives a storage outage: Azurite stopped and started again (data kept) while a
slot is held, the slot is still held afterwards, past the time its lease would have lapsed. Before, the first
renewal that could not reach storage (ServiceRequestError, not an HttpResponseError) killed the renewal thread,
and the lease lapsed while the holder still worked: another poll could take the slot and pass the limit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.adapters.http import StorageLimits
from shared.adapters.slots import BlobLeaseSlots
from shared.ports import SlotsBusyError
from tests.integration.azurite_server import PrivateAzurite

pytestmark = [pytest.mark.azurite]

LEASE = 15  # seconds (the service's shortest); renewed every 5 s


@pytest.fixture
def private_azurite(tmp_path: Path) -> Iterator[PrivateAzurite]:
    server = PrivateAzurite(tmp_path / "azurite").start()
    try:
        yield server
    finally:
        server.stop()


def test_a_held_slot_stays_held_across_a_storage_restart(private_azurite: PrivateAzurite) -> None:
    azurite = private_azurite
    no_retries = StorageLimits(retries=0, connect_timeout=2, read_timeout=5)
    holder = BlobLeaseSlots.from_connection_string(azurite.connection_string, limits=no_retries, lease_seconds=LEASE)
    other = BlobLeaseSlots.from_connection_string(azurite.connection_string, limits=no_retries, lease_seconds=LEASE)
    name = f"outage-{uuid.uuid4().hex[:10]}"
    slot = holder.acquire(name, 1, wait_seconds=5)
    acquired = time.monotonic()
    try:
        azurite.stop()  # the renewal due 5 s after acquiring finds no storage
        time.sleep(max(0.0, acquired + 6 - time.monotonic()))
        azurite.start()
        # Past the moment the lease would have lapsed had nobody renewed it since it was acquired.
        time.sleep(max(0.0, acquired + LEASE + 4 - time.monotonic()))
        with pytest.raises(SlotsBusyError):
            other.acquire(name, 1, wait_seconds=0)
    finally:
        slot.release()
    other.acquire(name, 1, wait_seconds=5).release()  # released: free again
