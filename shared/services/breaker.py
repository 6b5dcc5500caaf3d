"""Circuit breaker per partner and channel, kept in the Breakers table so every instance shares it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.domain.errors import ConflictError
from shared.domain.jobs import utcnow
from shared.domain.ledger import BreakerRecord, BreakerState
from shared.metrics import record_breaker_state
from shared.observability.redaction import redact
from shared.observability.tracing import log_fields, span
from shared.ports import Breakers

log = logging.getLogger(__name__)
_ATTEMPTS = 8  # ETag races are short: a handful of re-reads settles them


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    state: BreakerState
    retry_at: datetime | None = None
    probe: bool = False  # this caller is the one half-open probe
    last_error: str = ""


class CircuitBreaker:
    """CLOSED -> OPEN after `threshold` consecutive failed polls; OPEN -> HALF_OPEN after `cooldown`,
    when exactly one instance (the one whose ETag write wins) probes; the probe closes or re-opens it.
    A probe that never reports back (crashed instance) is taken over after another `cooldown`.
    """

    def __init__(self, store: Breakers, channel: str, *, threshold: int = 5,
                 cooldown: timedelta = timedelta(minutes=5), clock: Callable[[], datetime] = utcnow) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self._store, self._channel = store, channel
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock

    def state(self, partner: str) -> BreakerRecord:
        return self._store.get(self._channel, partner)

    def allow(self, partner: str) -> BreakerDecision:
        """May this instance poll `partner` now? Writes only on OPEN -> HALF_OPEN (or a probe takeover)."""
        with span("breaker.allow", {"wharf.partner": partner, "wharf.channel": self._channel}) as s:
            for _ in range(_ATTEMPTS):
                rec = self._store.get(self._channel, partner)
                now = self._clock()
                s.set_attribute("wharf.breaker_state", rec.state.value)
                if rec.state is BreakerState.CLOSED:
                    return BreakerDecision(True, rec.state)
                since = rec.opened_at if rec.state is BreakerState.OPEN else rec.probe_at
                due = (since or now) + self.cooldown
                if now < due:
                    return BreakerDecision(False, rec.state, retry_at=due, last_error=rec.last_error)
                try:
                    self._store.save(replace(rec, state=BreakerState.HALF_OPEN, probe_at=now))
                except ConflictError:
                    continue  # another instance moved it first: look again
                record_breaker_state(partner, self._channel, BreakerState.HALF_OPEN.value)
                log.info("circuit half-open: probing", extra=log_fields(partner=partner, channel=self._channel))
                return BreakerDecision(True, BreakerState.HALF_OPEN, probe=True, last_error=rec.last_error)
            return BreakerDecision(False, BreakerState.HALF_OPEN, retry_at=self._clock() + self.cooldown)

    def record_success(self, partner: str) -> BreakerRecord:
        def change(rec: BreakerRecord) -> BreakerRecord | None:
            if rec.state is BreakerState.CLOSED and rec.failures == 0:
                return None  # the common case costs no write
            return replace(rec, state=BreakerState.CLOSED, failures=0, opened_at=None, probe_at=None,
                           last_error="")

        rec = self._update(partner, change)
        return rec

    def record_failure(self, partner: str, reason: str) -> BreakerRecord:
        reason = redact(reason)  # stored and shown (poll summaries): reasons quote errors

        def change(rec: BreakerRecord) -> BreakerRecord:
            failures = rec.failures + 1
            now = self._clock()
            if rec.state is BreakerState.HALF_OPEN or failures >= self.threshold:
                if rec.state is not BreakerState.OPEN:
                    log.warning("circuit opened after %d failed polls", failures,
                                extra=log_fields(partner=partner, channel=self._channel))
                opened = now if rec.state is not BreakerState.OPEN else (rec.opened_at or now)
                return replace(rec, state=BreakerState.OPEN, failures=failures, opened_at=opened,
                               probe_at=None, last_error=reason)
            return replace(rec, failures=failures, last_error=reason)

        return self._update(partner, change)

    def _update(self, partner: str, change: Callable[[BreakerRecord], BreakerRecord | None]) -> BreakerRecord:
        for _ in range(_ATTEMPTS):
            rec = self._store.get(self._channel, partner)
            new = change(rec)
            if new is None:
                return rec
            try:
                saved = self._store.save(new)
            except ConflictError:
                continue
            record_breaker_state(partner, self._channel, saved.state.value)
            return saved
        raise ConflictError(f"breaker {self._channel}/{partner}: too many concurrent updates")
