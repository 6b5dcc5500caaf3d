"""read_ahead: same items in the same order, errors where they happen, a thread that stops with its consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from shared.services.read_ahead import read_ahead


def test_the_items_come_in_order_and_the_source_runs_ahead_by_at_most_depth() -> None:
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for i in range(20):
            pulled.append(i)
            yield i

    it = read_ahead(source(), depth=2)
    assert next(it) == 0
    time.sleep(0.3)
    # 0 handed over, 2 waiting in the queue, 1 fetched and blocked on the full queue: never more.
    assert len(pulled) <= 4
    assert [0, *it] == list(range(20))


def test_an_error_in_the_source_is_raised_after_the_items_before_it() -> None:
    def source() -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        raise OSError("connection reset")

    got: list[bytes] = []
    with pytest.raises(OSError, match="connection reset"):
        for chunk in read_ahead(source(), depth=3):
            got.append(chunk)
    assert got == [b"a", b"b"]


def test_a_consumer_that_stops_early_stops_the_thread() -> None:
    produced = threading.Event()

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.set()
            yield i
            i += 1

    before = {t.ident for t in threading.enumerate()}
    it = read_ahead(endless(), depth=2, name="read-ahead-test")
    assert next(it) == 0 and produced.is_set()
    it.close()  # the consumer gives up (as a failed SFTP write does)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(t.name == "read-ahead-test" and t.ident not in before
                                              for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name == "read-ahead-test" for t in threading.enumerate())


def test_depth_zero_reads_in_the_callers_thread() -> None:
    threads: set[str] = set()

    def source() -> Iterator[int]:
        threads.add(threading.current_thread().name)
        yield 1

    assert list(read_ahead(source(), depth=0)) == [1]
    assert threads == {threading.current_thread().name}
