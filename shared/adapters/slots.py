"""Slots over blob leases: a counting semaphore every process and instance shares (Azure Storage or Azurite).

`name` has `limit` slot blobs, `<container>/<name>/slot-<i>` (zero bytes, created on first use). Holding slot i
is holding a lease on its blob: acquiring takes a lease of LEASE_SECONDS on the first free one (tried in a random
order, so waiters spread), a renewer thread renews it every third of that, and `release()` releases it. A holder
that dies stops renewing and its lease lapses within LEASE_SECONDS: a crash never keeps a slot. Lowering the limit
shrinks the set of slot blobs tried at once; slots above the new limit drain as their holders release them.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from shared.adapters.http import StorageLimits, storage_options
from shared.observability.tracing import span
from shared.ports import SlotsBusyError

log = logging.getLogger(__name__)

LOCKS_CONTAINER = "locks"
LEASE_SECONDS = 30  # Blob Storage allows 15-60 s (or infinite, which a crash would never free)
_POLL_MIN, _POLL_MAX = 0.05, 1.0  # back-off between rounds while every slot is taken


class BlobLeaseSlot:
    """One held slot: the lease on its blob, renewed by a daemon thread until `release()`."""

    def __init__(self, lease: BlobLeaseClient, name: str, index: int, *, lease_seconds: int) -> None:
        self.index, self.name = index, name
        self._lease = lease
        self._stop = threading.Event()
        # A renewal and the release never overlap: a renewal still in flight when the slot is released (and then
        # taken by another holder) would otherwise fail with "lease ID mismatch" and warn of a lost slot.
        self._calls = threading.Lock()
        self._every = lease_seconds / 3
        self._thread = threading.Thread(target=self._renew, name=f"slot-{name}-{index}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        wait = self._every
        while not self._stop.wait(wait):
            wait = self._every
            with self._calls:
                if self._stop.is_set():
                    return  # released while this renewal waited: nothing of ours to renew
                try:
                    self._lease.renew()
                except HttpResponseError as exc:  # lost (paused past the lease): the limit may be passed
                    log.warning("slot %s/%d: lease renewal failed (%s); the slot may be taken by another holder",
                                self.name, self.index, exc.reason)
                except AzureError as exc:  # storage unreachable (restarting): tried again every second meanwhile
                    log.warning("slot %s/%d: lease renewal failed (storage unreachable: %s); trying again",
                                self.name, self.index, type(exc).__name__)
                    wait = 1.0

    def release(self) -> None:
        with self._calls:
            if self._stop.is_set():
                return
            self._stop.set()
            try:
                self._lease.release()
            except HttpResponseError as exc:  # lapsed or taken: it is not ours any more either way
                log.info("slot %s/%d: release found the lease gone (%s)", self.name, self.index, exc.reason)
            except AzureError as exc:  # storage unreachable: the lease lapses by itself within its duration
                log.warning("slot %s/%d: release failed (storage unreachable: %s); the lease lapses in %.0f s",
                            self.name, self.index, type(exc).__name__, self._every * 3)


class BlobLeaseSlots:
    """`Slots` over blob leases in one container (LOCKS_CONTAINER)."""

    def __init__(self, service: BlobServiceClient, *, container: str = LOCKS_CONTAINER,
                 lease_seconds: int = LEASE_SECONDS) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("a blob lease lasts 15 to 60 seconds")
        self._container = service.get_container_client(container)
        self._lease_seconds = lease_seconds
        self._created: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, conn: str, *, limits: StorageLimits | None = None, **kwargs: Any) -> BlobLeaseSlots:
        """Bounded retries and timeouts as every storage client (WHARF_STORAGE_*): a lease call during an
        outage fails in seconds, not the SDK's default minutes."""
        return cls(BlobServiceClient.from_connection_string(conn, **storage_options("blob", limits)), **kwargs)

    def _blob(self, name: str, index: int) -> Any:
        path = f"{name}/slot-{index:03d}"
        blob = self._container.get_blob_client(path)
        if path not in self._created:
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            except ResourceNotFoundError:  # the container itself is missing (ensure_resources not run yet)
                try:
                    self._container.create_container()
                except ResourceExistsError:
                    pass
                try:
                    blob.upload_blob(b"", overwrite=False)
                except ResourceExistsError:
                    pass
            with self._lock:
                self._created.add(path)
        return blob

    def _try(self, name: str, limit: int) -> BlobLeaseSlot | None:
        order = list(range(limit))
        random.shuffle(order)
        for index in order:
            blob = self._blob(name, index)
            try:
                lease = blob.acquire_lease(lease_duration=self._lease_seconds)
            except HttpResponseError as exc:
                if exc.status_code == 409:  # LeaseAlreadyPresent: taken
                    continue
                raise
            return BlobLeaseSlot(lease, name, index, lease_seconds=self._lease_seconds)
        return None

    def acquire(self, name: str, limit: int, *, wait_seconds: float) -> BlobLeaseSlot:
        if limit < 1:
            raise ValueError("a slot limit is at least 1")
        deadline = time.monotonic() + max(0.0, wait_seconds)
        pause = _POLL_MIN
        with span("slots.acquire", {"wharf.slots.name": name, "wharf.slots.limit": limit}) as s:
            rounds = 0
            while True:
                rounds += 1
                slot = self._try(name, limit)
                if slot is not None:
                    s.set_attribute("wharf.slots.index", slot.index)
                    s.set_attribute("wharf.slots.rounds", rounds)
                    return slot
                left = deadline - time.monotonic()
                if left <= 0:
                    s.set_attribute("wharf.slots.rounds", rounds)
                    raise SlotsBusyError(f"all {limit} slots of {name} stayed in use for {wait_seconds:g} s")
                time.sleep(min(left, pause * random.uniform(0.5, 1.5)))
                pause = min(pause * 2, _POLL_MAX)


class InProcessSlot:
    def __init__(self, owner: InProcessSlots, name: str, index: int) -> None:
        self.index, self._owner, self._name, self._released = index, owner, name, False

    def release(self) -> None:
        self._owner._release(self._name, self.index, self)


class InProcessSlots:
    """`Slots` within one process (threads only): for a deployment without blob storage to share (a fake blob
    store in tests). Passes the same contract tests as BlobLeaseSlots; `peak[name]` is the most held at once."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._held: dict[str, set[int]] = {}
        self.peak: dict[str, int] = {}

    def acquire(self, name: str, limit: int, *, wait_seconds: float) -> InProcessSlot:
        if limit < 1:
            raise ValueError("a slot limit is at least 1")
        deadline = time.monotonic() + max(0.0, wait_seconds)
        with self._cv:
            while True:
                held = self._held.setdefault(name, set())
                free = [i for i in range(limit) if i not in held]
                if free:
                    held.add(free[0])
                    self.peak[name] = max(self.peak.get(name, 0), len(held))
                    return InProcessSlot(self, name, free[0])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SlotsBusyError(f"all {limit} slots of {name} stayed in use for {wait_seconds:g} s")
                self._cv.wait(left)

    def _release(self, name: str, index: int, slot: InProcessSlot) -> None:
        with self._cv:
            if slot._released:
                return
            slot._released = True
            self._held.get(name, set()).discard(index)
            self._cv.notify_all()

    def held(self, name: str) -> int:
        with self._cv:
            return len(self._held.get(name, set()))
