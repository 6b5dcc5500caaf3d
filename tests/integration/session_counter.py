"""`python -m tests.integration.session_counter EVENTS ARGS...`: the `wharf` CLI (ARGS) with every SFTP session it
opens logged to EVENTS, so a test can tell how many sessions several processes held at once.

Each line is `<CLOCK_MONOTONIC ns> open|close <pid>`, appended with O_APPEND (lines of several processes
interleave whole; the clock is the machine's, the same in every process). `open` is written before the
connection starts and `close` after it has closed: a session is counted for at least as long as it exists."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any


def install(events: str) -> None:
    from shared.adapters import sftp

    fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(kind: str) -> None:
        os.write(fd, f"{time.monotonic_ns()} {kind} {os.getpid()}\n".encode())

    original = sftp.SftpConnector.open

    def open_(self: Any, partner_id: str, config: Any) -> Any:
        log("open")
        try:
            client = original(self, partner_id, config)
        except BaseException:
            log("close")
            raise
        close, lock, done = client.close, threading.Lock(), [False]

        def counted_close() -> None:
            try:
                close()
            finally:
                with lock:
                    first, done[0] = not done[0], True
                if first:
                    log("close")

        client.close = counted_close  # type: ignore[method-assign]
        return client

    sftp.SftpConnector.open = open_  # type: ignore[method-assign]


def peak(events: Path) -> tuple[int, int]:
    """(most sessions open at once, sessions opened) from an EVENTS file."""
    rows = sorted((int(t), kind) for t, kind, _ in (line.split() for line in events.read_text().splitlines()))
    now = most = opened = 0
    for _, kind in rows:
        now += 1 if kind == "open" else -1
        opened += kind == "open"
        most = max(most, now)
    return most, opened


if __name__ == "__main__":
    install(sys.argv[1])
    from shared.cli import main

    sys.exit(main(sys.argv[2:]))
