"""Slots contract: blob-lease slots against Azurite, and the in-process slots the fakes use, behave alike."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from shared.adapters.slots import BlobLeaseSlots, InProcessSlots
from shared.ports import Slots, SlotsBusyError

pytestmark = [pytest.mark.azurite]


@pytest.fixture(params=["blob-leases", "in-process"])
def slots(request: pytest.FixtureRequest, azurite: str) -> Iterator[Slots]:
    if request.param == "in-process":
        yield InProcessSlots()
        return
    yield BlobLeaseSlots.from_connection_string(azurite, lease_seconds=15)


def name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_at_most_limit_holders_at_once_among_many_threads(slots: Slots) -> None:
    key, limit = name(), 3
    now, most, lock = [0], [0], threading.Lock()
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            for _ in range(3):
                slot = slots.acquire(key, limit, wait_seconds=30)
                with lock:
                    now[0] += 1
                    most[0] = max(most[0], now[0])
                time.sleep(0.02)
                with lock:
                    now[0] -= 1
                slot.release()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=holder) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and 1 <= most[0] <= limit  # 8 threads wanted slots; never more than 3 held at once


def test_limit_holders_can_hold_their_slots_at_the_same_time(slots: Slots) -> None:
    """The limit is reachable: 3 threads each take a slot and wait for the others while holding it."""
    key, limit = name(), 3
    together = threading.Barrier(limit, timeout=30)
    indexes: list[int] = []
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            slot = slots.acquire(key, limit, wait_seconds=30)
            indexes.append(slot.index)
            together.wait()  # broken (an error) unless all three hold a slot at once
            slot.release()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=holder) for _ in range(limit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(indexes) == list(range(limit))


def test_every_slot_taken_is_busy_after_the_wait_and_a_release_frees_one(slots: Slots) -> None:
    key = name()
    first, second = slots.acquire(key, 2, wait_seconds=0), slots.acquire(key, 2, wait_seconds=0)
    assert {first.index, second.index} == {0, 1}
    with pytest.raises(SlotsBusyError, match="all 2 slots"):
        slots.acquire(key, 2, wait_seconds=0.2)
    second.release()
    second.release()  # twice is harmless
    third = slots.acquire(key, 2, wait_seconds=0)
    assert third.index == second.index
    assert slots.acquire(name(), 2, wait_seconds=0) is not None  # another name has slots of its own
    first.release()
    third.release()


def test_a_waiter_gets_the_slot_as_soon_as_it_is_released(slots: Slots) -> None:
    key = name()
    held = slots.acquire(key, 1, wait_seconds=0)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(slots.acquire(key, 1, wait_seconds=30).index))
    waiter.start()
    time.sleep(0.3)
    assert got == []  # still waiting
    held.release()
    waiter.join(30)
    assert got == [0]


def test_a_renewal_in_flight_when_the_slot_is_released_does_not_fail(
        azurite: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The renewer thread's call and `release()` never overlap. Before: a renewal under way when the slot was
    released either died in the renewer thread (the lease client's id is None once released: ValueError) or,
    when its request was already built, reached storage after another holder took the slot, failed with "lease
    ID mismatch" and logged that the slot may be taken by another holder (read by an operator as the limit
    passed)."""
    crashed: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_value))
    slots = BlobLeaseSlots.from_connection_string(azurite, lease_seconds=15)  # renewed every 5 s
    key = name()
    slot = slots.acquire(key, 1, wait_seconds=0)
    lease = slot._lease
    real_renew = lease.renew
    started = threading.Event()

    def slow_renew(**kwargs: object) -> None:
        started.set()
        time.sleep(0.5)  # the request still on its way when the release comes
        real_renew(**kwargs)

    lease.renew = slow_renew  # type: ignore[method-assign]
    assert started.wait(15)
    with caplog.at_level("INFO", logger="shared.adapters.slots"):
        slot.release()
        other = slots.acquire(key, 1, wait_seconds=5)  # another holder takes the freed slot at once
        time.sleep(1.0)  # past the renewal's end
    assert crashed == []
    assert [r.getMessage() for r in caplog.records if "renewal failed" in r.getMessage()] == []
    other.release()
