"""Poll one partner's SFTP server: list, wait for stable files, land each exactly once, tidy the source."""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import posixpath
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from azure.core.exceptions import AzureError
from opentelemetry.trace import Status, StatusCode
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.domain.errors import ConfigurationError, WharfError
from shared.domain.ids import new_id
from shared.domain.jobs import EventType, JobType
from shared.domain.ledger import LedgerEntry, LedgerState
from shared.domain.naming import stamped
from shared.domain.remote import (
    RemoteError,
    RemoteFile,
    RemoteFileChangedError,
    RemoteFileError,
    SourceConfigurationError,
    SourceUnavailableError,
)
from shared.domain.sanitize import display_name, remote_bytes
from shared.domain.transfer_batches import TransferBatch, batch_owner, is_batch_owner
from shared.faults import fault_point
from shared.observability.tracing import log_fields, span
from shared.ports import FileSource, Slot, SlotsBusyError
from shared.services.landing import Arrival, Claim, ClaimLostError, Landing, NotStableError, Uploaded
from shared.services.polls import (
    FileOutcome,
    PollOptions,
    PollProgress,
    PollSummary,
    PollTally,
    default_options,
    default_owner,
    guarded_poll,
)
from shared.services.storage import one_line, storage_unavailable

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

CHANNEL = "sftp"
T = TypeVar("T")
_URI_SAFE = "/-._~!$&'()*+,;=:@"
_RECORD_BATCH = 100  # landed files recorded together (jobs, transfers, logs, ledger in a few transactions)
_RECORD_SECONDS = 2.0  # ... or sooner, once the oldest of them has waited this long
UNIQUE_LIMIT = 100  # numbered names a move/rename tries after the mtime-tagged one (on_exists: unique)
_BUSY_BACKOFF = 5.0  # seconds a poll with sessions shares them before it tries for another slot
_VANISHED_PER_POLL = 100  # LANDED entries of files no longer on the source marked DONE by one poll


class _SecondLook:
    """Several workers: the second listing, taken `settle_seconds` after the first while the transfers
    already run. Every commit waits for it: a file is committed only if both listings (and the read's final
    fstat) agree on its size and mtime, so the stability wait overlaps the transfers instead of preceding
    them."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._files: dict[str, RemoteFile] = {}
        self._error: BaseException | None = None

    def open(self, files: dict[str, RemoteFile]) -> None:
        self._files = files
        self._done.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._done.set()

    def confirm(self, f: RemoteFile, source: FileSource) -> None:
        self._done.wait()
        name = display_name(f.path)
        if self._error is not None:
            raise NotStableError(f"{name}: the second listing failed ({self._error}); not committed",
                                 reason="unconfirmed")
        _same_or_raise(f, self._files.get(f.path))


class _ListedLook:
    """A transfer batch: the first look is the poll's listing (`listed_at`, wall clock, in the message), the
    second the read's final fstat, which `read_chunks(expected=...)` compares with the listing before the last
    chunk. `wait()` (once, before the first read) makes every read start at least `settle_seconds` after the
    listing, so that fstat is a second look taken late enough; a batch picked up later than that waits not at
    all and opens no extra session or listing."""

    def __init__(self, listed_at: float, settle_seconds: float, sleep: Callable[[float], None]) -> None:
        self._due, self._sleep = listed_at + settle_seconds, sleep

    def wait(self) -> None:
        left = self._due - time.time()
        if left > 0:
            self._sleep(left)

    def confirm(self, f: RemoteFile, source: FileSource) -> None:
        """Nothing more to look at: the read itself compared the file with the listing, after the interval."""


class SessionsBusyError(RemoteError):
    """Every SFTP session the partner allows (sftp.max_sessions) stayed in use by other workers or instances.
    The poll fails, but the partner's circuit breaker does not count it: its server is not at fault."""

    counts_for_breaker = False


class _LimitedSource:
    """A FileSource holding one of the partner's session slots; `close()` closes the session, then frees it."""

    def __init__(self, source: FileSource, slot: Slot, on_close: Callable[[], None]) -> None:
        self._source, self._slot, self._on_close, self._closed = source, slot, on_close, False
        self.host, self.port = source.host, source.port

    def list_files(self, directory: str, *, recursive: bool = False, skip_dirs: Any = ()) -> list[RemoteFile]:
        return self._source.list_files(directory, recursive=recursive, skip_dirs=skip_dirs)

    def stat(self, path: str) -> RemoteFile:
        return self._source.stat(path)

    def read_chunks(self, path: str, *, expected: RemoteFile | None = None) -> Iterator[bytes]:
        return self._source.read_chunks(path, expected=expected)

    def remove(self, path: str) -> None:
        self._source.remove(path)

    def rename(self, source: str, target: str) -> None:
        self._source.rename(source, target)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._source.close()
        finally:
            self._slot.release()
            self._on_close()


def _same_or_raise(f: RemoteFile, again: RemoteFile | None) -> None:
    """The second look agrees with the first, or NotStableError says how it does not."""
    name = display_name(f.path)
    if again is None:
        raise NotStableError(f"{name} vanished between the two looks", reason="vanished")
    if not f.same_version(again):
        raise NotStableError(f"{name} changed between the two looks ({f.size} bytes at mtime {f.mtime}, "
                             f"then {again.size} at {again.mtime})", reason="changing")


class _StatLook:
    """One worker: the second look is a stat of the file on the worker's own session, taken once
    `settle_seconds` have passed since the first listing (after a quick transfer it waits out the rest).
    The wait overlaps the transfer and no second session is opened."""

    def __init__(self, settle_seconds: float, started: float, sleep: Callable[[float], None]) -> None:
        self._due, self._sleep = started + settle_seconds, sleep
        self._waited = False  # one worker, one file at a time: the interval is waited out once per poll

    def confirm(self, f: RemoteFile, source: FileSource) -> None:
        wait = self._due - time.monotonic()
        if wait > 0 and not self._waited:
            self._sleep(wait)
        self._waited = True
        try:
            again: RemoteFile | None = source.stat(f.path)
        except RemoteFileError as exc:
            if not exc.missing:
                raise
            again = None
        _same_or_raise(f, again)


def poll_partner(services: Services, partner_id: str, *, options: PollOptions | None = None,
                 progress: Callable[[PollProgress], None] | None = None,
                 requested_by: str = "") -> PollSummary:
    """Poll one partner's SFTP source now and land every stable file exactly once.

    Raises NotFoundError for an unknown partner and ConfigurationError for one without an sftp block;
    everything the partner's server does wrong is reported in the summary (and counted by its breaker).
    """
    opts = options or default_options(services)
    partner = services.catalog.get(partner_id)
    cfg = partner.sftp
    if cfg is None:
        raise ConfigurationError(f"partner {partner_id} has no sftp block in the catalogue")
    return guarded_poll(services, partner, channel=CHANNEL, opts=opts, requested_by=requested_by,
                        progress=progress, attrs={"server.address": cfg.host, "server.port": cfg.port},
                        run=lambda tally: _SftpPoll(services, partner_id, cfg, opts, tally).run(),
                        poll_failures=(RemoteError, ConfigurationError))


def run_transfer_batch(services: Services, batch: TransferBatch, *, options: PollOptions | None = None,
                       progress: Callable[[PollProgress], None] | None = None) -> PollSummary:
    """Transfer one claim batch a poll put on the transfer-batches queue (any instance's worker does this).

    The batch's claims, still CLAIMED by `batch:<batch id>`, are adopted (ETag-conditional: of two deliveries of
    one message each file goes to one) and landed exactly as a poll lands them; an entry that moved meanwhile
    (landed, taken over after the batch lease, ...) is left to its new owner. A poll-level failure (no session
    slot, the server down, the circuit open) is in the summary's status: the caller puts the batch back."""
    opts = options or default_options(services, settle_seconds=batch.settle_seconds)
    partner = services.catalog.get(batch.partner)
    cfg = partner.sftp
    if cfg is None:
        raise ConfigurationError(f"partner {batch.partner} has no sftp block in the catalogue")
    return guarded_poll(services, partner, channel=CHANNEL, opts=opts, requested_by=batch.owner, progress=progress,
                        attrs={"server.address": cfg.host, "server.port": cfg.port, "wharf.batch_id": batch.batch_id,
                               "wharf.files": len(batch.keys), "wharf.deferrals": batch.deferrals},
                        run=lambda tally: _SftpPoll(services, batch.partner, cfg, opts, tally).run_batch(batch),
                        poll_failures=(RemoteError, ConfigurationError), span_name="sftp.transfer_batch")


def _who(f: RemoteFile) -> tuple[str, int]:
    """How a remote file appears in a poll summary: its printable path and size."""
    return display_name(f.path), f.size


class _SftpPoll:
    """One poll of one partner: the policy. SftpClient makes the protocol calls, Landing the bookkeeping."""

    def __init__(self, services: Services, partner_id: str, cfg: Any, opts: PollOptions, tally: PollTally) -> None:
        self._s, self.partner, self.cfg, self.opts, self.tally = services, partner_id, cfg, opts, tally
        self.landing = Landing(services, partner_id, channel=CHANNEL, job_type=JobType.SFTP_INGEST,
                               owner=opts.owner, lease=opts.lease, max_attempts=opts.max_attempts,
                               clock=opts.clock)
        self._main: list[FileSource] = []
        self._finished: list[LedgerEntry] = []  # post-action done: marked DONE in batches at the end
        self._pending: list[tuple[RemoteFile, Uploaded]] = []  # uploaded, waiting to be recorded together
        self._pending_since = 0.0
        # post_action leave with several workers: batches are recorded on this thread, not by the worker that
        # filled them (nothing follows on the source, so no session is needed), and that worker goes on.
        self._recorder: ThreadPoolExecutor | None = None
        self._recorded: list[Future[None]] = []
        self._sessions: list[FileSource] = []
        self._free: list[FileSource] = []
        self._lock = threading.Lock()
        self._storage_gone: BaseException | None = None  # the first storage-unavailable error: the poll stops
        self._returned = threading.Condition(self._lock)  # a session went back to `_free`, or one closed
        self._held = 0  # sessions open now (each holds one of the partner's slots)
        self._busy_until = 0.0  # no new session tried before this (monotonic): the slots were all taken
        # Concurrent sessions to this partner across every worker and instance: blob-lease slots.
        self.max_sessions = int(getattr(cfg, "max_sessions", None) or services.settings.sftp_max_sessions)
        self._slot_name = f"sftp-{partner_id}"
        self._batch_lease = timedelta(minutes=services.settings.transfer_batch_lease_minutes)

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

    def _closed_one(self) -> None:
        with self._lock:
            self._held -= 1
            self._returned.notify_all()

    def _open_once(self, *, wait: float | None = None) -> FileSource:
        """A new session holding one of the partner's slots, waiting up to `wait` seconds for a free one (default
        WHARF_SFTP_SESSION_WAIT_SECONDS); SessionsBusyError when none freed in time."""
        seconds = self._s.settings.sftp_session_wait_seconds if wait is None else wait
        try:
            slot = self._s.slots.acquire(self._slot_name, self.max_sessions, wait_seconds=seconds)
        except SlotsBusyError as exc:
            raise SessionsBusyError(
                f"partner {self.partner}: all {self.max_sessions} SFTP sessions it allows (sftp.max_sessions or "
                f"WHARF_SFTP_MAX_SESSIONS) stayed in use by other workers for {seconds:g} s") from exc
        try:
            source = self._s.file_sources.open(self.partner, self.cfg)
        except BaseException:
            slot.release()
            raise
        limited = _LimitedSource(source, slot, self._closed_one)
        with self._lock:
            self._held += 1
            self._sessions.append(limited)
        return limited

    def _open(self, *, wait: float | None = None) -> FileSource:
        for attempt in self._retrying():
            with attempt:
                return self._open_once(wait=wait)
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

    def _checkout(self) -> list[FileSource]:
        """A free session of this poll, else a new one if a slot is free now, else the next one another worker
        of this poll hands back (a worker with no session at all waits for a slot instead)."""
        while True:
            with self._lock:
                if self._free:
                    return [self._free.pop()]
                others = self._held > 0
                busy = others and time.monotonic() < self._busy_until
            if not busy:
                try:
                    return [self._open(wait=0 if others else None)]
                except SessionsBusyError:
                    if not others:
                        raise
                    with self._lock:  # every slot taken elsewhere: share this poll's sessions for a while
                        self._busy_until = time.monotonic() + _BUSY_BACKOFF
            with self._lock:
                self._returned.wait_for(lambda: bool(self._free) or self._held == 0, timeout=5)

    @contextmanager
    def _session(self) -> Iterator[list[FileSource]]:
        """A session for one worker, in a box so that a reconnect carries over to its next file."""
        box = self._checkout()
        try:
            yield box
        finally:
            with self._lock:
                self._free.append(box[0])
                self._returned.notify_all()

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

    def run_batch(self, batch: TransferBatch) -> None:
        try:
            self.tally.set_phase("connecting")
            self._main = [self._open()]  # a slot first: nothing is adopted until a session is ours
            self._run_batch(batch)
        finally:
            self._close_all()

    def _run_batch(self, batch: TransferBatch) -> None:
        """Adopt the batch's claims and land them (see `run_transfer_batch`)."""
        tally, now = self.tally, self.opts.clock()
        started = time.monotonic()
        fields = {"partner": self.partner, "batch_id": batch.batch_id}
        entries = self._s.ledger.get_many(self.partner, batch.keys)
        tally.summary.listed = len(batch.keys)
        adopt: list[tuple[RemoteFile, LedgerEntry]] = []
        work: list[tuple[RemoteFile, Claim]] = []
        for key in batch.keys:
            entry = entries.get(key)
            if entry is None or entry.channel != CHANNEL:
                log.warning("transfer batch %s names ledger key %s, which is not an sftp entry of %s; skipped",
                            batch.batch_id, key, self.partner, extra=log_fields(**fields))
                tally.skipped(key, 0, "not_claimed")
                continue
            f = RemoteFile(entry.path, entry.size, entry.mtime)
            if entry.state is LedgerState.CLAIMED and entry.owner == batch.owner:
                adopt.append((f, entry))
                continue
            plan = self.landing.plan(entry, now)
            if plan.action == "take_over":  # its lease ran out (a crashed worker), or an attempt failed
                claim = self.landing.take_over(self._arrival(f), entry)
                if claim is not None:
                    work.append((f, claim))
                    continue
                reason = "claimed_elsewhere"
            else:  # landed, done, or another owner's now: not this batch's any more (a later poll finishes it)
                reason = plan.reason or plan.action
            tally.skipped(*_who(f), reason, entry.job_id, detail=False)
        stored = self.landing.adopt_many([e for _, e in adopt])
        for (f, entry), taken in zip(adopt, stored, strict=True):
            if taken is None:
                tally.skipped(*_who(f), "claimed_elsewhere", entry.job_id, detail=False)
            else:
                work.append((f, Claim(self._arrival(f), taken)))
        log.info("transfer batch %s: %d of %d files to transfer", batch.batch_id, len(work), len(batch.keys),
                 extra=log_fields(**fields, deferrals=batch.deferrals))
        look = _ListedLook(batch.listed_at, batch.settle_seconds, self.opts.sleep)
        look.wait()
        self._transfer_all(work, started, listed=look)

    def _enqueue_batches(self, to_claim: list[tuple[RemoteFile, Arrival]],
                         to_take: list[tuple[RemoteFile, Arrival, LedgerEntry]], *, listed_at: float) -> None:
        """Claim the files in batches of `batch_files` (owner `batch:<id>`) and put each batch on the
        transfer-batches queue: any instance's worker transfers it (`run_transfer_batch`). A batch whose message
        cannot be sent is released (FAILED, retried by a later poll)."""
        size = self.opts.batch_files
        items: list[tuple[RemoteFile, Arrival, LedgerEntry | None]] = [(f, a, None) for f, a in to_claim]
        items += [(f, a, e) for f, a, e in to_take]
        queue = self._s.settings.transfer_queue
        self.tally.set_phase("transferring")
        with span("sftp.enqueue_batches", {"wharf.partner": self.partner, "wharf.files": len(items),
                                           "wharf.batch_files": size}) as s:
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                batch_id = new_id("tb", self.opts.clock())
                landing = Landing(self._s, self.partner, channel=CHANNEL, job_type=JobType.SFTP_INGEST,
                                  owner=batch_owner(batch_id), lease=self.opts.lease,
                                  max_attempts=self.opts.max_attempts, clock=self.opts.clock)
                with span("sftp.enqueue_batch", {"wharf.partner": self.partner, "wharf.batch_id": batch_id}) as b:
                    files = {a.key: f for f, a, _ in chunk}
                    claims, lost = landing.claim_new([a for _, a, e in chunk if e is None])
                    for key, reason in lost.items():
                        self.tally.skipped(*_who(files[key]), reason)
                    for f, a, e in chunk:
                        if e is not None:
                            taken = landing.take_over(a, e)
                            if taken is None:
                                self.tally.skipped(*_who(f), "claimed_elsewhere")
                            else:
                                claims.append(taken)
                    b.set_attribute("wharf.files", len(claims))
                    if not claims:
                        continue
                    message = TransferBatch(partner=self.partner, batch_id=batch_id,
                                            keys=[c.entry.key for c in claims], listed_at=listed_at,
                                            settle_seconds=self.opts.settle_seconds,
                                            requested_by=self.opts.owner[:200])
                    try:
                        self._s.queues.send(queue, message.to_message())  # carries this poll's traceparent
                    except (AzureError, WharfError) as exc:
                        log.warning("transfer batch %s could not be queued: %s; its %d files are released for the "
                                    "next poll", batch_id, exc, len(claims),
                                    extra=log_fields(partner=self.partner, batch_id=batch_id))
                        for claim in claims:
                            landing.fail(claim, f"the transfer batch could not be queued: {exc}")
                            self.tally.failed(*_who(files[claim.entry.key]), "queue_error", message=str(exc))
                        continue
                    self.tally.queued(len(claims))
                    log.info("transfer batch %s queued: %d files", batch_id, len(claims),
                             extra=log_fields(partner=self.partner, batch_id=batch_id, files=len(claims)))
            s.set_attribute("wharf.batches", self.tally.summary.batches)

    def _list(self, seen: set[str] | None = None) -> dict[str, RemoteFile]:
        """The wanted files of every remote_dirs entry, by path; `seen` gets every path listed, wanted or not.
        Raises when any directory cannot be listed: a listing that returns is complete."""
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
                if seen is not None:
                    seen.add(f.path)
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
        seen: set[str] = set()
        first = self._list(seen)
        listed_at = time.time()  # after the listing: a second look is never earlier than settle_seconds after it
        tally.summary.listed = len(first)
        arrivals = {path: self._arrival(f) for path, f in first.items()}
        entries = self.landing.lookup(arrivals.values()) if arrivals else {}
        now = opts.clock()
        claims_wanted: list[tuple[RemoteFile, Arrival]] = []
        takeovers: list[tuple[RemoteFile, Arrival, LedgerEntry]] = []
        finishes: list[tuple[RemoteFile, LedgerEntry, str]] = []
        for path, f in sorted(first.items(), key=lambda item: (item[1].mtime, item[0])):
            arrival = arrivals[path]
            entry = entries.get(arrival.key)
            if entry is not None and entry.state.value in ("LANDED", "DONE"):
                if entry.state.value == "LANDED" or cfg.post_action != "leave":
                    finishes.append((f, entry, entry.state.value))
                else:
                    tally.skipped(*_who(f), "already_ingested", entry.job_id, detail=False)
                continue
            if now.timestamp() - f.mtime < cfg.min_age_seconds:
                tally.skipped(*_who(f), "too_new")
                continue
            if (entry is not None and entry.state is LedgerState.CLAIMED and is_batch_owner(entry.owner)
                    and not entry.lease_expired(now, self._batch_lease)):
                tally.skipped(*_who(f), "queued", entry.job_id, detail=False)  # a worker will take its batch
                continue
            plan = self.landing.plan(entry, now)
            if plan.action == "claim":
                claims_wanted.append((f, arrival))
            elif plan.action == "take_over" and entry is not None:
                takeovers.append((f, arrival, entry))
            else:
                tally.skipped(*_who(f), plan.reason or plan.action, entry.job_id if entry else "",
                              detail=plan.reason != "already_skipped")

        # Post-actions left over (crash after landing) or for a file that came back: no re-landing.
        for f, entry, state in finishes:
            self._finish_only(f, entry, state)
        self._finish_vanished(seen, now)

        # Over-size files are refused once, with a log line and a job event; never downloaded.
        budget = cfg.max_files_per_poll
        to_claim: list[tuple[RemoteFile, Arrival]] = []
        for f, arrival in claims_wanted:
            if f.size > cfg.max_file_size_bytes:
                stored = self.landing.skip(arrival, self._over_size(f))
                tally.skipped(*_who(f), "over_size", stored.job_id if stored else "")
            elif budget > 0:
                to_claim.append((f, arrival))
                budget -= 1
            else:
                tally.skipped(*_who(f), "deferred")
        to_take: list[tuple[RemoteFile, Arrival, LedgerEntry]] = []
        for f, arrival, entry in takeovers:
            if f.size > cfg.max_file_size_bytes:  # the limit was lowered since an earlier attempt
                stored = self.landing.skip(arrival, self._over_size(f), entry=entry)
                tally.skipped(*_who(f), "over_size", stored.job_id if stored else "")
            elif budget > 0:
                to_take.append((f, arrival, entry))
                budget -= 1
            else:
                tally.skipped(*_who(f), "deferred")

        if opts.batch_files and len(to_claim) + len(to_take) > opts.batch_files:
            self._enqueue_batches(to_claim, to_take, listed_at=listed_at)
            return
        files = {a.key: f for f, a in to_claim}

        def claimed() -> Iterator[list[tuple[RemoteFile, Claim]]]:
            """The files to transfer, one claim transaction at a time, then the take-overs."""
            for claims, lost in self.landing.claim_batches([a for _, a in to_claim]):
                for key, reason in lost.items():
                    tally.skipped(*_who(files[key]), reason)
                yield [(files[c.arrival.key], c) for c in claims]
            taken = []
            for f, arrival, entry in to_take:
                claim = self.landing.take_over(arrival, entry)
                if claim is None:
                    tally.skipped(*_who(f), "claimed_elsewhere")
                else:
                    taken.append((f, claim))
            yield taken

        # The transfers of the first claimed batch start while the next ones are claimed.
        batches = claimed()
        work = next((batch for batch in batches if batch), [])
        self._transfer_all(work, started, more=batches, planned=len(to_claim) + len(to_take))

    def _transfer_all(self, work: list[tuple[RemoteFile, Claim]], started: float,
                      listed: _ListedLook | None = None, *,
                      more: Iterator[list[tuple[RemoteFile, Claim]]] | None = None, planned: int = 0) -> None:
        """Transfer claimed files on up to `concurrency` sessions (never more than the partner's slots allow),
        record them in batches, then mark DONE those whose post-action ran. `listed`: a transfer batch's look
        (else the second look is taken here: a listing, or a stat with one worker). `more`: further files,
        claimed while the first ones transfer (`planned` files in all, at most)."""
        tally, opts = self.tally, self.opts
        if not work:
            return
        tally.to_transfer = len(work)
        tally.bytes_to_transfer = sum(f.size for f, _ in work)
        tally.set_phase("transferring")
        workers = max(1, min(opts.concurrency, self.max_sessions, max(planned, len(work))))
        # Stability: a file is committed only when it was old enough at the first listing AND a second look,
        # settle_seconds later, shows the same size and mtime (so a slow upload with an old mtime is not cut
        # short). Transfers start at once and only their commits wait for the second look: with several
        # workers it is one more listing on the listing session, with one worker a stat on its own session.
        look: _SecondLook | _StatLook | _ListedLook
        unclaimed: BaseException | None = None
        recorder = self._recorder = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sftp-{self.partner}-record")
            if self.cfg.post_action == "leave" and workers > 1 else None)
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"sftp-{self.partner}") as pool:
                if listed is not None or workers == 1:
                    look = listed or _StatLook(opts.settle_seconds, started, opts.sleep)
                    with self._lock:
                        self._free.append(self._main[0])  # the listing session does the transfer
                        self._returned.notify_all()
                else:
                    look = _SecondLook()
                # Each task runs in a copy of this context: its spans stay children of the poll's span.
                futures = [pool.submit(contextvars.copy_context().run, self._transfer, f, claim, look)
                           for f, claim in work]
                try:
                    for batch in more or ():
                        if self._storage_gone is not None:
                            break  # storage went away: nothing more is claimed (the workers stop too)
                        tally.to_transfer += len(batch)
                        tally.bytes_to_transfer += sum(f.size for f, _ in batch)
                        futures += [pool.submit(contextvars.copy_context().run, self._transfer, f, claim, look)
                                    for f, claim in batch]
                except (AzureError, WharfError) as exc:
                    # A claim transaction failed: the files claimed before it are still landed and recorded,
                    # the rest stay unclaimed for the next poll; the error is the poll's once that is done.
                    if storage_unavailable(exc):
                        self._stop_for_storage(exc)
                    else:
                        unclaimed = exc
                if isinstance(look, _SecondLook):
                    self._second_look(look, started)
                    with self._lock:
                        self._free.append(self._main[0])  # the listing session becomes a worker's
                        self._returned.notify_all()
                for future in futures:
                    future.result()
            if recorder is not None:
                recorder.shutdown(wait=True)  # every batch handed to it is recorded (or failed) first
                for recorded in self._recorded:
                    recorded.result()
            remaining = self._take_pending(force=True)
            if remaining and self._storage_gone is None:
                with self._session() as box:
                    self._flush(box, remaining)
            if unclaimed is not None and self._storage_gone is None:
                raise unclaimed
        finally:
            if recorder is not None:
                recorder.shutdown(wait=True)  # a worker failed: the batches handed over are still recorded
                self._recorder, self._recorded = None, []
            with self._lock:
                finished, self._finished = self._finished, []
            if finished and self._storage_gone is None:
                self.landing.finish_many(finished)  # left LANDED otherwise: a later poll marks them DONE
        gone = self._storage_gone
        if gone is not None:
            log.error("sftp poll of %s stopped: storage unavailable: %s; %d of %d file(s) landed, the rest are left "
                      "to the next poll (their claims expire with the %g s lease)", self.partner, one_line(gone),
                      self.tally.summary.landed, len(work), self.opts.lease.total_seconds(),
                      extra=log_fields(partner=self.partner))
            raise gone

    def _second_look(self, gate: _SecondLook, started: float) -> None:
        """Wait out the settle interval, list again and open the gate (or fail it: nothing commits)."""
        try:
            wait = self.opts.settle_seconds - (time.monotonic() - started)
            if wait > 0:
                self.opts.sleep(wait)
            gate.open(self._list())
        except BaseException as exc:
            gate.fail(exc)
            raise

    def _over_size(self, f: RemoteFile) -> str:
        return (f"over-size: {f.size} bytes is more than the partner's max_file_size_bytes "
                f"({self.cfg.max_file_size_bytes})")

    # --- one file -----------------------------------------------------------------------------

    def _transfer(self, f: RemoteFile, claim: Claim, look: _SecondLook | _StatLook | _ListedLook) -> None:
        e = claim.entry
        if self._storage_gone is not None:
            return  # storage went away: not started; the claim expires with its lease (no other write)
        attrs = {"server.address": self.cfg.host, "server.port": self.cfg.port, "file.size": f.size,
                 "wharf.partner": self.partner, "wharf.job_id": e.job_id, "wharf.transfer_id": e.transfer_id}
        with span("sftp.file", attrs), self._session() as box:
            self.tally.current = display_name(f.name)
            final = self.cfg.post_action == "leave"  # nothing follows: straight to DONE
            retry = claim.job_created or e.attempts > 1
            uploaded: Uploaded | None = None
            try:
                if retry:
                    # A take-over: the one-by-one path, which reuses a blob an earlier attempt committed.
                    self._call(box, lambda src: self.landing.land(
                        claim, lambda: src.read_chunks(f.path, expected=f), on_bytes=self.tally.add_bytes,
                        final=final, before_commit=lambda: look.confirm(f, src)))
                else:
                    uploaded = self._call(box, lambda src: self.landing.upload(
                        claim, lambda: src.read_chunks(f.path, expected=f), on_bytes=self.tally.add_bytes,
                        before_commit=lambda: look.confirm(f, src)))
            except NotStableError as exc:
                if exc.reason == "unconfirmed":
                    self.landing.fail(claim, str(exc))
                    self.tally.failed(*_who(f), "source_unavailable", claim.job_id if claim.job_created else "",
                                      message=str(exc))
                else:
                    self.landing.fail(claim, str(exc), gone=True)
                    self.tally.skipped(*_who(f), exc.reason, claim.job_id if claim.job_created else "")
                return
            except RemoteFileError as exc:
                if exc.missing:
                    self.landing.fail(claim, "vanished before it was read", gone=True)
                    self.tally.skipped(*_who(f), "vanished", claim.job_id if claim.job_created else "")
                else:
                    reason = "permission_denied" if exc.denied else "read_error"
                    self.landing.fail(claim, str(exc))
                    self.tally.failed(*_who(f), reason, claim.job_id if claim.job_created else "", message=str(exc))
                return
            except RemoteFileChangedError as exc:
                self.landing.fail(claim, str(exc), gone=True)
                self.tally.skipped(*_who(f), "changing", claim.job_id if claim.job_created else "")
                return
            except SourceUnavailableError as exc:
                self.landing.fail(claim, str(exc))
                self.tally.source_failed = str(exc)
                self.tally.failed(*_who(f), "source_unavailable", claim.job_id if claim.job_created else "",
                                  message=str(exc))
                return
            except (ClaimLostError, AzureError, WharfError) as exc:
                if storage_unavailable(exc):
                    self._stop_for_storage(exc)
                    return
                log.warning("landing %s failed: %s", display_name(f.path), one_line(exc),
                            exc_info=log.isEnabledFor(logging.DEBUG),
                            extra=log_fields(claim.job_id, partner=self.partner))
                self.landing.fail(claim, str(exc))
                self.tally.failed(*_who(f), "storage_error" if isinstance(exc, AzureError) else "error",
                                  claim.job_id if claim.job_created else "", message=str(exc))
                return
            if uploaded is None:
                self._after_landing(box, f, claim)
                return
            with self._lock:
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append((f, uploaded))
            batch = self._take_pending()
            if not batch:
                return
            recorder = self._recorder
            if recorder is None:
                self._flush(box, batch)
            else:  # post_action leave: recorded on the recorder thread (in this file's context), no session held
                self._recorded.append(recorder.submit(contextvars.copy_context().run, self._flush, [], batch))

    def _stop_for_storage(self, exc: BaseException) -> None:
        """Storage is unavailable (retries spent): no further file is started and nothing more is written;
        `run` raises the error once the files in flight have stopped. What this poll holds stays as the ledger
        says: CLAIMED entries expire with their lease and the next poll takes them over (reusing a blob that
        was committed), LANDED entries get their post-action again; nothing is lost or landed twice."""
        with self._lock:
            if self._storage_gone is None:
                self._storage_gone = exc

    def _take_pending(self, *, force: bool = False) -> list[tuple[RemoteFile, Uploaded]]:
        """The uploaded files to record now: all of them when forced, when a batch is full, or when the oldest
        has waited `_RECORD_SECONDS` (so that a poll of large files does not hold its first ones back)."""
        with self._lock:
            due = force or len(self._pending) >= _RECORD_BATCH or (
                bool(self._pending) and time.monotonic() - self._pending_since >= _RECORD_SECONDS)
            if not due:
                return []
            batch, self._pending = self._pending, []
            return batch

    def _flush(self, box: list[FileSource], batch: list[tuple[RemoteFile, Uploaded]]) -> None:
        """Record uploaded files together, then run their post-actions (never before they are recorded) on the
        box's session (the recorder's empty box with post_action leave: there are none)."""
        files = {id(up.claim): f for f, up in batch}
        landed, failed = self.landing.record_many([up for _, up in batch], final=self.cfg.post_action == "leave")
        for up, exc in failed:
            f = files[id(up.claim)]
            if storage_unavailable(exc):
                # Committed, not recorded: the claim stays CLAIMED and the take-over records the committed blob.
                self._stop_for_storage(exc)
                continue
            log.warning("recording %s failed: %s; a later poll records it from the committed blob",
                        display_name(f.path), exc, extra=log_fields(up.claim.job_id, partner=self.partner))
            self.landing.fail(up.claim, f"recording failed: {exc}")
            self.tally.failed(*_who(f), "storage_error" if isinstance(exc, AzureError) else "error",
                              up.claim.job_id if up.claim.job_created else "", message=str(exc))
        for item in landed:
            self._after_landing(box, files[id(item.claim)], item.claim)

    def _after_landing(self, box: list[FileSource], f: RemoteFile, claim: Claim) -> None:
        e = claim.entry
        self.tally.landed(*_who(f), claim.job_id, f"{e.container}/{e.blob_path}")
        if self.cfg.post_action == "leave" or e.state.value != "LANDED":
            return  # DONE already, or the ledger write failed: a later poll tidies up
        if self._post_action(box, f, e):
            with self._lock:
                self._finished.append(e)

    def _finish_only(self, f: RemoteFile, entry: LedgerEntry, state: str) -> None:
        """The file was landed before: only the post-action (and DONE) are left; never land it twice."""
        with span("sftp.finish", {"server.address": self.cfg.host, "server.port": self.cfg.port,
                                  "file.size": f.size, "wharf.partner": self.partner, "wharf.job_id": entry.job_id,
                                  "wharf.transfer_id": entry.transfer_id}):
            if self._post_action(self._main, f, entry) and state == "LANDED":
                self.landing.finish(entry)
        self.tally.skipped(*_who(f), "already_ingested", entry.job_id, detail=state == "LANDED")

    def _covers(self, path: str) -> bool:
        """Whether this poll's listing would have shown a file at `path` (a directory it listed whole)."""
        cfg = self.cfg
        parent = posixpath.dirname(path)
        skip = {d.rstrip("/") for d in ([cfg.move_to] if cfg.post_action == "move" and cfg.move_to else [])}
        for directory in cfg.remote_dirs:
            root = directory.rstrip("/") or "/"
            if parent == root:
                return True
            if cfg.recursive and path.startswith(root.rstrip("/") + "/") and not any(
                    path.startswith(s + "/") for s in skip):
                return True
        return False

    def _finish_vanished(self, seen: set[str], now: datetime) -> None:
        """LANDED entries whose file is no longer on the source: DONE (`Landing.finish_gone`). Only files in a
        directory this poll listed whole count; a file still listed keeps its entry LANDED until its post-action
        succeeds."""
        self.landing.finish_gone(
            lambda e: e.path not in seen and self._covers(e.path), limit=_VANISHED_PER_POLL,
            span_name="sftp.finish_vanished", now=now,
            why=lambda e: f"{display_name(e.path)} is no longer on the source; its post-action "
                          f"({self.cfg.post_action}) is taken as done, ledger DONE")

    def _post_action(self, box: list[FileSource], f: RemoteFile, entry: LedgerEntry) -> bool:
        """Delete, move or rename the landed file; True when done (the ledger entry may become DONE).

        A partner's file is never replaced: move and rename take the first free name (see `_move`). When the
        post-action cannot complete, the file stays where it is, its entry stays LANDED (the next poll only
        retries the post-action, it never lands the file again) and the job and the poll summary say why."""
        cfg = self.cfg
        action = cfg.post_action
        if action == "leave":
            return True
        target = ""
        with span("sftp.post_action", {"wharf.post_action": action, "wharf.job_id": entry.job_id,
                                       "server.address": cfg.host, "server.port": cfg.port}) as s:
            try:
                if action == "delete":
                    self._call(box, lambda src: src.remove(f.path))
                else:
                    target = self._move(box, f)
                    s.set_attribute("wharf.renamed", posixpath.basename(target) != self._plain_name(f))
            except RemoteFileError as exc:
                if exc.missing:
                    return True  # someone (another poller, an earlier attempt) already did it
                reason = self._refused(f, exc)
                s.set_status(Status(StatusCode.ERROR, "post_action_failed"))
                log.warning("post-action %s of %s failed: %s", action, display_name(f.path), reason,
                            extra=log_fields(entry.job_id, partner=self.partner))
                self._note_on_job(entry.job_id, reason)
                self.tally.failed(*_who(f), "post_action_failed", entry.job_id, message=reason)
                return False
            except SourceUnavailableError as exc:
                log.warning("post-action %s of %s failed: %s; the next poll retries it", action,
                            display_name(f.path), exc, extra=log_fields(entry.job_id, partner=self.partner))
                return False
        log.info("post-action %s done for %s%s", action, display_name(f.path),
                 f" -> {display_name(target)}" if target else "", extra=log_fields(entry.job_id, partner=self.partner))
        fault_point("sftp.after_post_action")
        return True

    def _plain_name(self, f: RemoteFile) -> str:
        return f.name + (self.cfg.rename_suffix if self.cfg.post_action == "rename" else "")

    def _move(self, box: list[FileSource], f: RemoteFile) -> str:
        """Move (to move_to) or rename (add the suffix) under the first free name; returns the target.

        on_exists unique: the plain name, then the name tagged with the file's mtime, then that numbered
        (`orders.csv`, `orders.20261201T083005Z.csv`, `orders.20261201T083005Z.2.csv`, ...); fail: the plain
        name only. Each try is a rename that never replaces (RemoteFileError EEXIST when taken)."""
        cfg = self.cfg
        folder = cfg.move_to if cfg.post_action == "move" else posixpath.dirname(f.path)
        suffix = cfg.rename_suffix if cfg.post_action == "rename" else ""
        names = stamped(f.name, f.mtime, UNIQUE_LIMIT) if cfg.on_exists == "unique" else iter([f.name])
        taken: RemoteFileError | None = None
        for name in names:
            target = posixpath.join(folder, name + suffix)

            def rename(src: FileSource, to: str = target) -> None:
                src.rename(f.path, to)

            try:
                self._call(box, rename)
                return target
            except RemoteFileError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                taken = taken or exc  # the plain target: what a failure names
        assert taken is not None
        raise taken

    def _refused(self, f: RemoteFile, exc: RemoteFileError) -> str:
        cfg = self.cfg
        if exc.errno == errno.EEXIST:
            names = "and every unique name tried are taken" if cfg.on_exists == "unique" else "already exists"
            return (f"{cfg.post_action} of {display_name(f.path)} refused: {display_name(exc.path)} {names} "
                    f"(on_exists: {cfg.on_exists}); nothing was replaced, the file stays where it is and is not "
                    "taken again; make room for it (or set on_exists: unique) and the next poll finishes the "
                    f"{cfg.post_action}")
        return (f"{cfg.post_action} of {display_name(f.path)} failed: {exc}; the file stays where it is, is not "
                "taken again, and the next poll retries the post-action")

    def _note_on_job(self, job_id: str, reason: str) -> None:
        """Say why on the file's job, once (a later poll that fails the same way adds nothing)."""
        message = f"post-action: {reason}"
        try:
            if any(e.type is EventType.NOTE and e.data.get("message") == message
                   for e in self._s.jobs.events(job_id)):
                return
            self._s.jobs.append(job_id, EventType.NOTE, {"message": message, "post_action": self.cfg.post_action})
            self._s.jobs.log(job_id, "WARNING", message)
        except (WharfError, AzureError) as exc:  # storage is down too: the log line and the poll summary say why
            log.warning("could not record the failed post-action: %s", one_line(exc),
                        exc_info=log.isEnabledFor(logging.DEBUG), extra=log_fields(job_id, partner=self.partner))


__all__ = ["FileOutcome", "PollOptions", "PollProgress", "PollSummary", "default_owner", "poll_partner"]
