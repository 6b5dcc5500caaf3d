"""What every poll shares, whatever the channel: options, summary, progress, and the guarded run
(disabled partner, circuit breaker, span, outcome recorded in the breaker, one log line)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, Field

from shared.domain.jobs import utcnow
from shared.observability.redaction import redact
from shared.observability.tracing import log_fields, span
from shared.services.breaker import CircuitBreaker

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

_MAX_LISTED_DETAILS = 200  # keep summaries (HTTP responses, CLI --json) small


def default_owner() -> str:
    """Who holds a claim: host, process and a random suffix (several pollers may share a process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class PollOptions:
    """How a poll behaves. The defaults suit the minute timer; tests and the CLI shorten them."""

    settle_seconds: float = 1.0  # gap between the two listings that decide a file is stable
    concurrency: int = 4  # files transferred at once, each over its own SFTP session
    lease: timedelta = timedelta(minutes=10)  # a CLAIMED entry older than this was abandoned by a crash
    max_attempts: int = 5  # transfer attempts per file version, across polls
    retry_attempts: int = 3  # tenacity attempts for transient errors (connect, list, transfer)
    retry_initial: float = 1.0
    retry_max: float = 30.0
    breaker_threshold: int = 5  # consecutive failed polls that open the circuit
    breaker_cooldown: timedelta = timedelta(minutes=5)
    owner: str = field(default_factory=default_owner)
    #: SFTP: a listing with more files to take than this is claimed in batches of this size and put on the
    #: transfer-batches queue for any instance's worker (0: this poll transfers everything itself).
    batch_files: int = 0
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep


def default_options(services: Services, **changes: Any) -> PollOptions:
    """The options of a poll: the defaults, the claim lease from WHARF_POLL_LEASE_SECONDS, then `changes` (what
    the caller tunes: the CLI's flags, a batch's stability interval). Every poll path builds its options here, so
    none falls back to PollOptions' own 10-minute lease while the setting says otherwise."""
    return PollOptions(**{"lease": timedelta(seconds=services.settings.poll_lease_seconds), **changes})


class FileOutcome(BaseModel):
    path: str
    size: int
    reason: str = ""
    job_id: str = ""
    blob: str = ""


class PollProgress(BaseModel):
    """What a running poll reports to its caller (the CLI prints it)."""

    partner: str
    phase: Literal["connecting", "listing", "transferring", "done"]
    listed: int = 0
    to_transfer: int = 0
    bytes_to_transfer: int = 0
    landed: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    current: str = ""


class PollSummary(BaseModel):
    """The outcome of one poll. `status`: ok, partial (some files failed), failed (the poll could not
    run: connection, host key, login, listing), circuit_open, disabled."""

    partner: str
    channel: str = "sftp"
    status: Literal["ok", "partial", "failed", "circuit_open", "disabled"] = "ok"
    requested_by: str = ""
    started_at: datetime
    finished_at: datetime | None = None
    listed: int = 0
    ignored: int = 0  # not matched by include/exclude
    landed: int = 0
    skipped: int = 0
    failed: int = 0
    queued: int = 0  # claimed and put on the transfer-batches queue, for any instance's worker
    batches: int = 0
    bytes: int = 0
    skipped_reasons: dict[str, int] = Field(default_factory=dict)
    failed_reasons: dict[str, int] = Field(default_factory=dict)
    landed_files: list[FileOutcome] = Field(default_factory=list)
    skipped_files: list[FileOutcome] = Field(default_factory=list)
    failed_files: list[FileOutcome] = Field(default_factory=list)
    error: str = ""
    retry_at: datetime | None = None

    @property
    def duration_seconds(self) -> float:
        return ((self.finished_at or self.started_at) - self.started_at).total_seconds()


class PollTally:
    """Thread-safe counters behind the summary and the progress callback of one poll."""

    def __init__(self, summary: PollSummary, progress: Callable[[PollProgress], None] | None) -> None:
        self.summary = summary
        self._progress = progress
        self._lock = threading.Lock()
        self.phase: Any = "connecting"
        self.to_transfer = 0
        self.bytes_to_transfer = 0
        self.current = ""
        self.source_failed = ""
        self._last_report = 0.0

    def report(self, *, force: bool = False) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < 0.2:
            return
        self._last_report = now
        s = self.summary
        self._progress(PollProgress(
            partner=s.partner, phase=self.phase, listed=s.listed, to_transfer=self.to_transfer,
            bytes_to_transfer=self.bytes_to_transfer, landed=s.landed, skipped=s.skipped, failed=s.failed,
            bytes=s.bytes, current=self.current))

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        self.report(force=True)

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.summary.bytes += count
        self.report()

    def landed(self, what: str, size: int, job_id: str, blob: str) -> None:
        with self._lock:
            self.summary.landed += 1
            if len(self.summary.landed_files) < _MAX_LISTED_DETAILS:
                self.summary.landed_files.append(FileOutcome(path=what, size=size, job_id=job_id, blob=blob))
        self.report(force=True)

    def queued(self, files: int) -> None:
        with self._lock:
            self.summary.queued += files
            self.summary.batches += 1
        self.report(force=True)

    def skipped(self, what: str, size: int, reason: str, job_id: str = "", *, detail: bool = True) -> None:
        with self._lock:
            s = self.summary
            s.skipped += 1
            s.skipped_reasons[reason] = s.skipped_reasons.get(reason, 0) + 1
            if detail and len(s.skipped_files) < _MAX_LISTED_DETAILS:
                s.skipped_files.append(FileOutcome(path=what, size=size, reason=reason, job_id=job_id))

    def failed(self, what: str, size: int, reason: str, job_id: str = "", *, message: str = "") -> None:
        with self._lock:
            s = self.summary
            s.failed += 1
            s.failed_reasons[reason] = s.failed_reasons.get(reason, 0) + 1
            if len(s.failed_files) < _MAX_LISTED_DETAILS:
                s.failed_files.append(FileOutcome(path=what, size=size, job_id=job_id,
                                                  reason=redact(f"{reason}: {message}" if message else reason)))
        self.report(force=True)


def guarded_poll(
    services: Services, partner: Any, *, channel: str, opts: PollOptions, requested_by: str,
    progress: Callable[[PollProgress], None] | None, attrs: dict[str, Any],
    run: Callable[[PollTally], None], poll_failures: tuple[type[BaseException], ...], span_name: str = "",
) -> PollSummary:
    """Run one poll of `partner` on `channel` behind its circuit breaker.

    `run(tally)` does the channel's work. An exception of `poll_failures` means the poll as a whole
    failed (connection, credentials, a folder that cannot be listed): it is recorded in the summary, the
    breaker and the span, never raised; anything else propagates (the queue retries, then poisons)."""
    partner_id = partner.id
    summary = PollSummary(partner=partner_id, channel=channel, started_at=opts.clock(), requested_by=requested_by)
    if not partner.enabled:
        summary.status, summary.error = "disabled", f"partner {partner_id} is disabled in the catalogue"
        summary.finished_at = opts.clock()
        return summary
    breaker = CircuitBreaker(services.breakers, channel, threshold=opts.breaker_threshold,
                             cooldown=opts.breaker_cooldown, clock=opts.clock)
    with span(span_name or f"{channel}.poll", {"wharf.partner": partner_id, "wharf.channel": channel,
                                  "wharf.requested_by": requested_by, **attrs}) as s:
        decision = breaker.allow(partner_id)
        if not decision.allowed:
            summary.status, summary.retry_at = "circuit_open", decision.retry_at
            summary.error = (f"circuit open for {partner_id} after repeated failures (last: "
                             f"{redact(decision.last_error) or 'unknown'}); next try after {decision.retry_at}")
            summary.finished_at = opts.clock()
            s.set_attribute("wharf.status", summary.status)
            record_last_poll(services, summary)
            return summary
        tally = PollTally(summary, progress)
        try:
            run(tally)
        except poll_failures as exc:
            summary.status, summary.error = "failed", redact(str(exc))
            if getattr(exc, "counts_for_breaker", True):  # not: every session slot busy (the server is fine)
                breaker.record_failure(partner_id, summary.error)
            log.error("%s poll of %s failed: %s", channel, partner_id, exc, extra=log_fields(partner=partner_id))
            s.set_attribute("wharf.error", type(exc).__name__)
            s.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        else:
            if tally.source_failed:
                breaker.record_failure(partner_id, tally.source_failed)
            else:
                breaker.record_success(partner_id)
            summary.status = "partial" if summary.failed else "ok"
        summary.finished_at = opts.clock()
        tally.set_phase("done")
        for key in ("listed", "landed", "skipped", "failed", "queued", "bytes"):
            s.set_attribute(f"wharf.{key}", getattr(summary, key))
        s.set_attribute("wharf.status", summary.status)
        log.info("%s poll of %s: %s, %d listed, %d landed, %d skipped, %d failed, %d queued, %d bytes", channel,
                 partner_id, summary.status, summary.listed, summary.landed, summary.skipped, summary.failed,
                 summary.queued, summary.bytes, extra=log_fields(partner=partner_id, requested_by=requested_by))
        record_last_poll(services, summary)
        return summary


def record_last_poll(services: Services, summary: PollSummary) -> None:
    """Store the poll's outcome as its channel's last poll (LastPolls: one upsert). A report, so a storage
    failure here is logged and never fails the poll (the breaker and the ledger already hold what matters)."""
    from shared.domain.ledger import LAST_POLL_FILES, LastPoll

    try:
        services.last_polls.record(LastPoll(
            channel=summary.channel, partner=summary.partner, status=summary.status, started_at=summary.started_at,
            finished_at=summary.finished_at or summary.started_at, requested_by=summary.requested_by,
            listed=summary.listed, landed=summary.landed, skipped=summary.skipped, failed=summary.failed,
            queued=summary.queued, bytes=summary.bytes, error=summary.error,
            files=tuple(f.path for f in summary.landed_files[:LAST_POLL_FILES])))
    except Exception as exc:  # noqa: BLE001 - see above
        log.warning("could not record the last poll of %s (%s): %s", summary.partner, summary.channel,
                    redact(str(exc))[:300], extra=log_fields(partner=summary.partner, channel=summary.channel))
