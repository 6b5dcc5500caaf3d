"""Poll one partner's SFTP server: list, wait for stable files, land each exactly once, tidy the source."""

from __future__ import annotations

import contextvars
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from azure.core.exceptions import AzureError
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, Field
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.domain.errors import ConfigurationError, WharfError
from shared.domain.jobs import JobType, utcnow
from shared.domain.ledger import LedgerEntry
from shared.domain.remote import (
    RemoteError,
    RemoteFile,
    RemoteFileChangedError,
    RemoteFileError,
    SourceConfigurationError,
    SourceUnavailableError,
)
from shared.domain.sanitize import display_name, remote_bytes
from shared.ports import FileSource
from shared.services.breaker import CircuitBreaker
from shared.services.landing import Arrival, Claim, ClaimLostError, Landing
from shared.telemetry import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

CHANNEL = "sftp"
T = TypeVar("T")
_URI_SAFE = "/-._~!$&'()*+,;=:@"
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
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep


class FileOutcome(BaseModel):
    path: str
    size: int
    reason: str = ""
    job_id: str = ""
    blob: str = ""


class PollProgress(BaseModel):
    """What a running poll reports to its caller (the CLI prints it)."""

    partner: str
    phase: Literal["connecting", "listing", "settling", "transferring", "done"]
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
    channel: str = CHANNEL
    status: Literal["ok", "partial", "failed", "circuit_open", "disabled"] = "ok"
    requested_by: str = ""
    started_at: datetime
    finished_at: datetime | None = None
    listed: int = 0
    ignored: int = 0  # not matched by include/exclude
    landed: int = 0
    skipped: int = 0
    failed: int = 0
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


class _Tally:
    """Thread-safe counters behind the summary and the progress callback."""

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

    def landed(self, f: RemoteFile, job_id: str, blob: str) -> None:
        with self._lock:
            self.summary.landed += 1
            if len(self.summary.landed_files) < _MAX_LISTED_DETAILS:
                self.summary.landed_files.append(FileOutcome(path=display_name(f.path), size=f.size,
                                                             job_id=job_id, blob=blob))
        self.report(force=True)

    def skipped(self, f: RemoteFile, reason: str, job_id: str = "", *, detail: bool = True) -> None:
        with self._lock:
            self.summary.skipped += 1
            self.summary.skipped_reasons[reason] = self.summary.skipped_reasons.get(reason, 0) + 1
            if detail and len(self.summary.skipped_files) < _MAX_LISTED_DETAILS:
                self.summary.skipped_files.append(FileOutcome(path=display_name(f.path), size=f.size,
                                                              reason=reason, job_id=job_id))

    def failed(self, f: RemoteFile, reason: str, job_id: str = "", *, message: str = "") -> None:
        with self._lock:
            self.summary.failed += 1
            self.summary.failed_reasons[reason] = self.summary.failed_reasons.get(reason, 0) + 1
            if len(self.summary.failed_files) < _MAX_LISTED_DETAILS:
                self.summary.failed_files.append(FileOutcome(path=display_name(f.path), size=f.size,
                                                             reason=f"{reason}: {message}" if message else reason,
                                                             job_id=job_id))
        self.report(force=True)


def poll_partner(services: Services, partner_id: str, *, options: PollOptions | None = None,
                 progress: Callable[[PollProgress], None] | None = None,
                 requested_by: str = "") -> PollSummary:
    """Poll one partner's SFTP source now and land every stable file exactly once.

    Raises NotFoundError for an unknown partner and ConfigurationError for one without an sftp block;
    everything the partner's server does wrong is reported in the summary (and counted by its breaker).
    """
    opts = options or PollOptions()
    partner = services.catalog.get(partner_id)
    cfg = partner.sftp
    if cfg is None:
        raise ConfigurationError(f"partner {partner_id} has no sftp block in the catalogue")
    summary = PollSummary(partner=partner_id, started_at=opts.clock(), requested_by=requested_by)
    if not partner.enabled:
        summary.status, summary.error = "disabled", f"partner {partner_id} is disabled in the catalogue"
        summary.finished_at = opts.clock()
        return summary
    breaker = CircuitBreaker(services.breakers, CHANNEL, threshold=opts.breaker_threshold,
                             cooldown=opts.breaker_cooldown, clock=opts.clock)
    attrs = {"wharf.partner": partner_id, "server.address": cfg.host, "server.port": cfg.port,
             "wharf.requested_by": requested_by}
    with span("sftp.poll", attrs) as s:
        decision = breaker.allow(partner_id)
        if not decision.allowed:
            summary.status, summary.retry_at = "circuit_open", decision.retry_at
            summary.error = (f"circuit open for {partner_id} after repeated failures (last: "
                             f"{decision.last_error or 'unknown'}); next try after {decision.retry_at}")
            summary.finished_at = opts.clock()
            s.set_attribute("wharf.status", summary.status)
            return summary
        tally = _Tally(summary, progress)
        try:
            _SftpPoll(services, partner_id, cfg, opts, tally).run()
        except (RemoteError, ConfigurationError) as exc:
            # The poll as a whole failed: connection, host key, login, a folder that cannot be listed.
            summary.status, summary.error = "failed", str(exc)
            breaker.record_failure(partner_id, str(exc))
            log.error("sftp poll of %s failed: %s", partner_id, exc, extra=log_fields(partner=partner_id))
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
        for key in ("listed", "landed", "skipped", "failed", "bytes"):
            s.set_attribute(f"wharf.{key}", getattr(summary, key))
        s.set_attribute("wharf.status", summary.status)
        log.info("sftp poll of %s: %s, %d listed, %d landed, %d skipped, %d failed, %d bytes", partner_id,
                 summary.status, summary.listed, summary.landed, summary.skipped, summary.failed, summary.bytes,
                 extra=log_fields(partner=partner_id))
        return summary


class _SftpPoll:
    """One poll of one partner: the policy. SftpClient makes the protocol calls, Landing the bookkeeping."""

    def __init__(self, services: Services, partner_id: str, cfg: Any, opts: PollOptions, tally: _Tally) -> None:
        self._s, self.partner, self.cfg, self.opts, self.tally = services, partner_id, cfg, opts, tally
        self.landing = Landing(services, partner_id, channel=CHANNEL, job_type=JobType.SFTP_INGEST,
                               owner=opts.owner, lease=opts.lease, max_attempts=opts.max_attempts,
                               clock=opts.clock)
        self._main: list[FileSource] = []
        self._finished: list[LedgerEntry] = []  # post-action done: marked DONE in batches at the end
        self._sessions: list[FileSource] = []
        self._free: list[FileSource] = []
        self._lock = threading.Lock()

    # --- sessions -----------------------------------------------------------------------------

    def _retrying(self) -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("sftp %s: %s; retrying (attempt %d)", self.partner, exc, state.attempt_number,
                        extra=log_fields(partner=self.partner))

        return Retrying(retry=retry_if_exception_type(SourceUnavailableError),
                        stop=stop_after_attempt(max(1, self.opts.retry_attempts)),
                        wait=wait_exponential_jitter(multiplier=self.opts.retry_initial, max=self.opts.retry_max),
                        sleep=self.opts.sleep, before_sleep=before_sleep, reraise=True)

    def _open_once(self) -> FileSource:
        source = self._s.file_sources.open(self.partner, self.cfg)
        with self._lock:
            self._sessions.append(source)
        return source

    def _open(self) -> FileSource:
        for attempt in self._retrying():
            with attempt:
                return self._open_once()
        raise AssertionError("unreachable: tenacity re-raises the last error")

    def _call(self, box: list[FileSource], fn: Callable[[FileSource], T]) -> T:
        """Run `fn` on the box's session, retrying transient failures on a fresh session."""
        broken = False
        for attempt in self._retrying():
            with attempt:
                if broken:
                    box[0].close()
                    box[0] = self._open_once()
                    broken = False
                try:
                    return fn(box[0])
                except SourceUnavailableError:
                    broken = True
                    raise
        raise AssertionError("unreachable: tenacity re-raises the last error")

    @contextmanager
    def _session(self) -> Iterator[list[FileSource]]:
        """A session for one worker, in a box so that a reconnect carries over to its next file."""
        with self._lock:
            box = [self._free.pop()] if self._free else []
        if not box:
            box = [self._open()]
        try:
            yield box
        finally:
            with self._lock:
                self._free.append(box[0])

    def _close_all(self) -> None:
        with self._lock:
            sessions, self._sessions, self._free = self._sessions, [], []
        for source in sessions:
            source.close()

    # --- the poll -----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.tally.set_phase("connecting")
            self._main = [self._open()]
            self._poll()
        finally:
            self._close_all()

    def _list(self) -> dict[str, RemoteFile]:
        cfg = self.cfg
        skip = [cfg.move_to] if cfg.post_action == "move" and cfg.move_to else []
        wanted: dict[str, RemoteFile] = {}
        ignored = 0
        for directory in cfg.remote_dirs:
            def list_dir(src: FileSource, d: str = directory) -> list[RemoteFile]:
                return src.list_files(d, recursive=cfg.recursive, skip_dirs=skip)

            try:
                files = self._call(self._main, list_dir)
            except RemoteFileError as exc:
                raise SourceConfigurationError(
                    f"partner {self.partner}: remote_dirs entry {display_name(directory)} cannot be listed "
                    f"({os.strerror(exc.errno) if exc.errno else exc}); check sftp.remote_dirs in the catalogue "
                    "and the account's rights on the server") from exc
            for f in files:
                if cfg.wants(f.name):
                    wanted[f.path] = f
                else:
                    ignored += 1
        self.tally.summary.ignored = ignored
        return wanted

    def _arrival(self, f: RemoteFile) -> Arrival:
        # A URI: the path's exact bytes, percent-encoded where a URI needs it (spaces, non-UTF-8 bytes).
        source = f"sftp://{self.cfg.host}:{self.cfg.port}{quote(remote_bytes(f.path), safe=_URI_SAFE)}"
        return Arrival(channel=CHANNEL, path=f.path, name=f.name, size=f.size, mtime=f.mtime, source=source)

    def _poll(self) -> None:
        cfg, tally, opts = self.cfg, self.tally, self.opts
        tally.set_phase("listing")
        started = time.monotonic()
        first = self._list()
        tally.summary.listed = len(first)
        arrivals = {path: self._arrival(f) for path, f in first.items()}
        entries = self.landing.lookup(arrivals.values()) if arrivals else {}
        # Stability: a file is taken only when it is old enough AND a second listing, settle_seconds
        # later, shows the same size and mtime (so a slow upload with an old mtime is not cut short).
        second: dict[str, RemoteFile] = {}
        if first:
            tally.set_phase("settling")
            wait = opts.settle_seconds - (time.monotonic() - started)
            if wait > 0:
                opts.sleep(wait)
            second = self._list()
        now = opts.clock()
        claims_wanted: list[tuple[RemoteFile, Arrival]] = []
        takeovers: list[tuple[RemoteFile, Arrival, LedgerEntry]] = []
        finishes: list[tuple[RemoteFile, LedgerEntry, str]] = []
        for path, f in sorted(first.items(), key=lambda item: (item[1].mtime, item[0])):
            arrival = arrivals[path]
            entry = entries.get(arrival.key)
            again = second.get(path)
            if entry is not None and entry.state.value in ("LANDED", "DONE"):
                if entry.state.value == "LANDED" or cfg.post_action != "leave":
                    finishes.append((f, entry, entry.state.value))
                else:
                    tally.skipped(f, "already_ingested", entry.job_id, detail=False)
                continue
            if again is None:
                tally.skipped(f, "vanished")
                continue
            if not f.same_version(again):
                tally.skipped(f, "changing")
                continue
            if now.timestamp() - f.mtime < cfg.min_age_seconds:
                tally.skipped(f, "too_new")
                continue
            plan = self.landing.plan(entry, now)
            if plan.action == "claim":
                claims_wanted.append((f, arrival))
            elif plan.action == "take_over" and entry is not None:
                takeovers.append((f, arrival, entry))
            else:
                tally.skipped(f, plan.reason or plan.action, entry.job_id if entry else "",
                              detail=plan.reason != "already_skipped")

        # Post-actions left over (crash after landing) or for a file that came back: no re-landing.
        for f, entry, state in finishes:
            self._finish_only(f, entry, state)

        # Over-size files are refused once, with a log line and a job event; never downloaded.
        budget = cfg.max_files_per_poll
        to_claim: list[tuple[RemoteFile, Arrival]] = []
        for f, arrival in claims_wanted:
            if f.size > cfg.max_file_size_bytes:
                stored = self.landing.skip(arrival, self._over_size(f))
                tally.skipped(f, "over_size", stored.job_id if stored else "")
            elif budget > 0:
                to_claim.append((f, arrival))
                budget -= 1
            else:
                tally.skipped(f, "deferred")
        to_take: list[tuple[RemoteFile, Arrival, LedgerEntry]] = []
        for f, arrival, entry in takeovers:
            if f.size > cfg.max_file_size_bytes:  # the limit was lowered since an earlier attempt
                stored = self.landing.skip(arrival, self._over_size(f), entry=entry)
                tally.skipped(f, "over_size", stored.job_id if stored else "")
            elif budget > 0:
                to_take.append((f, arrival, entry))
                budget -= 1
            else:
                tally.skipped(f, "deferred")

        files = {a.key: f for f, a in to_claim}
        claims, lost = self.landing.claim_new([a for _, a in to_claim])
        for key, reason in lost.items():
            tally.skipped(files[key], reason)
        work = [(files[c.arrival.key], c) for c in claims]
        for f, arrival, entry in to_take:
            claim = self.landing.take_over(arrival, entry)
            if claim is None:
                tally.skipped(f, "claimed_elsewhere")
            else:
                work.append((f, claim))
        if not work:
            return
        tally.to_transfer = len(work)
        tally.bytes_to_transfer = sum(f.size for f, _ in work)
        tally.set_phase("transferring")
        workers = max(1, min(self.opts.concurrency, len(work)))
        with self._lock:
            self._free.append(self._main[0])  # the listing session becomes a worker's
        try:
            if workers == 1:
                for f, claim in work:
                    self._transfer(f, claim)
                return
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"sftp-{self.partner}") as pool:
                # Each task runs in a copy of this context: its spans stay children of the poll's span.
                futures = [pool.submit(contextvars.copy_context().run, self._transfer, f, claim)
                           for f, claim in work]
                for future in futures:
                    future.result()
        finally:
            with self._lock:
                finished, self._finished = self._finished, []
            if finished:
                self.landing.finish_many(finished)

    def _over_size(self, f: RemoteFile) -> str:
        return (f"over-size: {f.size} bytes is more than the partner's max_file_size_bytes "
                f"({self.cfg.max_file_size_bytes})")

    # --- one file -----------------------------------------------------------------------------

    def _transfer(self, f: RemoteFile, claim: Claim) -> None:
        e = claim.entry
        attrs = {"server.address": self.cfg.host, "server.port": self.cfg.port, "file.size": f.size,
                 "wharf.partner": self.partner, "wharf.job_id": e.job_id, "wharf.transfer_id": e.transfer_id}
        with span("sftp.file", attrs), self._session() as box:
            self.tally.current = display_name(f.name)
            final = self.cfg.post_action == "leave"  # nothing follows: straight to DONE
            try:
                self._call(box, lambda src: self.landing.land(
                    claim, lambda: src.read_chunks(f.path, expected=f), on_bytes=self.tally.add_bytes,
                    final=final))
            except RemoteFileError as exc:
                if exc.missing:
                    self.landing.fail(claim, "vanished before it was read", gone=True)
                    self.tally.skipped(f, "vanished", claim.job_id if claim.job_created else "")
                else:
                    reason = "permission_denied" if exc.denied else "read_error"
                    self.landing.fail(claim, str(exc))
                    self.tally.failed(f, reason, claim.job_id if claim.job_created else "", message=str(exc))
                return
            except RemoteFileChangedError as exc:
                self.landing.fail(claim, str(exc), gone=True)
                self.tally.skipped(f, "changing", claim.job_id if claim.job_created else "")
                return
            except SourceUnavailableError as exc:
                self.landing.fail(claim, str(exc))
                self.tally.source_failed = str(exc)
                self.tally.failed(f, "source_unavailable", claim.job_id if claim.job_created else "",
                                  message=str(exc))
                return
            except (ClaimLostError, AzureError, WharfError) as exc:
                log.exception("landing %s failed", display_name(f.path), extra=log_fields(claim.job_id))
                self.landing.fail(claim, str(exc))
                self.tally.failed(f, "storage_error" if isinstance(exc, AzureError) else "error",
                                  claim.job_id if claim.job_created else "", message=str(exc))
                return
            self.tally.landed(f, claim.job_id, f"{e.container}/{e.blob_path}")
            if not final and self._post_action(box, f, claim.entry):
                with self._lock:
                    self._finished.append(claim.entry)

    def _finish_only(self, f: RemoteFile, entry: LedgerEntry, state: str) -> None:
        """The file was landed before: only the post-action (and DONE) are left; never land it twice."""
        with span("sftp.finish", {"server.address": self.cfg.host, "server.port": self.cfg.port,
                                  "file.size": f.size, "wharf.partner": self.partner, "wharf.job_id": entry.job_id,
                                  "wharf.transfer_id": entry.transfer_id}):
            if self._post_action(self._main, f, entry) and state == "LANDED":
                self.landing.finish(entry)
        self.tally.skipped(f, "already_ingested", entry.job_id, detail=state == "LANDED")

    def _post_action(self, box: list[FileSource], f: RemoteFile, entry: LedgerEntry) -> bool:
        cfg = self.cfg
        action = cfg.post_action
        if action == "leave":
            return True
        with span("sftp.post_action", {"wharf.post_action": action, "wharf.job_id": entry.job_id,
                                       "server.address": cfg.host, "server.port": cfg.port}):
            try:
                if action == "delete":
                    self._call(box, lambda src: src.remove(f.path))
                elif action == "move":
                    self._call(box, lambda src: src.rename(f.path, posixpath.join(cfg.move_to, f.name)))
                elif action == "rename":
                    self._call(box, lambda src: src.rename(f.path, f.path + cfg.rename_suffix))
            except RemoteFileError as exc:
                if exc.missing:
                    return True  # someone (another poller) already did it
                log.warning("post-action %s of %s failed: %s; the next poll retries it", action,
                            display_name(f.path), exc, extra=log_fields(entry.job_id, partner=self.partner))
                return False
            except SourceUnavailableError as exc:
                log.warning("post-action %s of %s failed: %s; the next poll retries it", action,
                            display_name(f.path), exc, extra=log_fields(entry.job_id, partner=self.partner))
                return False
        log.info("post-action %s done for %s", action, display_name(f.path),
                 extra=log_fields(entry.job_id, partner=self.partner))
        return True


__all__ = ["FileOutcome", "PollOptions", "PollProgress", "PollSummary", "default_owner", "poll_partner"]
