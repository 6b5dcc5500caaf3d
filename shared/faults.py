"""Fault injection for crash tests: `WHARF_FAULT=<point>:<n>` kills the process at the n-th hit of a named point."""

from __future__ import annotations

import os
import threading

ENV = "WHARF_FAULT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL (kill -9)

#: Every named point, in the order landing passes them (README "Crashes" says what each one covers).
POINTS = (
    "landing.after_claim",          # ledger claims written (a batch, or one claim), nothing transferred
    "landing.after_upload",         # blob committed, nothing recorded
    "create_jobs.after_events",     # JobStore.create_jobs: JobEvents transactions done
    "create_jobs.after_transfers",  # ... FileTransfer transactions done
    "create_jobs.after_logs",       # ... IntegrationLog transactions done
    "create_jobs.after_projection",  # ... IntegrationJob transactions done (create_jobs complete)
    "jobs.append.after_event",      # JobStore.append: the event inserted, its projection not yet updated
    "landing.after_send",           # one file-landed message sent, the ledger not yet LANDED
    "landing.after_ledger",         # ledger LANDED (or DONE) written for the batch or the file
    "sftp.after_post_action",       # the post-action done on the source, the ledger not yet DONE
    "mail.after_action",            # the mail marked read / moved, its attachments' ledger not yet DONE
    "email.after_draft",            # email delivery: the draft created, its id not yet recorded
    "email.after_send",             # email delivery: sendMail / the draft's send accepted, SENT not yet recorded
)


class _Armed:
    """The one point this process dies at, and how many hits of it it has seen."""

    def __init__(self, point: str, nth: int) -> None:
        self.point, self.nth, self.hits = point, nth, 0
        self._lock = threading.Lock()

    def hit(self, point: str) -> bool:
        if point != self.point:
            return False
        with self._lock:
            self.hits += 1
            return self.hits == self.nth


def parse(value: str) -> _Armed | None:
    """`point` or `point:n` (n >= 1, default 1); None when empty. ValueError names the known points."""
    value = value.strip()
    if not value:
        return None
    point, _, nth = value.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown fault point {point!r}; known: {', '.join(POINTS)}")
    try:
        count = int(nth) if nth else 1
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{ENV}={value!r}: the hit count after ':' must be a whole number >= 1")
    return _Armed(point, count)


_loaded = False
_armed: _Armed | None = None


def fault_point(name: str) -> None:
    """Die here (os._exit, no cleanup, like kill -9) when WHARF_FAULT names this point and this is its n-th hit.

    The variable is read once per process, on the first call; unset, a call is two global checks."""
    global _loaded, _armed
    if not _loaded:
        _armed = parse(os.environ.get(ENV, ""))
        _loaded = True
    if _armed is not None and _armed.hit(name):
        os.write(2, f"{ENV}: killed at {name} (hit {_armed.nth})\n".encode())
        os._exit(EXIT_CODE)
