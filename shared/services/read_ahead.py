"""Read ahead of a consumer: an iterator pulled by a background thread into a small bounded queue.

The SFTP delivery downloads the blob and writes to the server in turns on one thread; with the next blob chunk
fetched while the current one is written, the two overlap (benchmarks/sftp_delivery.py: the read and the write
take about the same time). Memory stays bounded: at most `depth` chunks wait, plus the one being fetched."""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(items: Iterable[T], depth: int = 2, *, name: str = "read-ahead") -> Iterator[T]:
    """Yield `items` in order while a daemon thread fetches up to `depth` ahead. An exception in the source is
    raised here, at the point it would have been; a consumer that stops early (an error, `close()`) stops the
    thread at its next chunk. The thread runs in a copy of the caller's context (the current span stays the
    parent of what the source does)."""
    if depth < 1:
        yield from items
        return
    box: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def pull() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer, raised there)
            put(_Failed(exc))

    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(pull,), name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)
