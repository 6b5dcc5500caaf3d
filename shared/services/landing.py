"""Landing, for every channel: claim in the ledger -> stream into a blob -> job, transfer, events, log ->
file-landed message. SFTP polling uses it; mailbox polling reuses it with channel "mail"."""

from __future__ import annotations

import json
import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError
from opentelemetry import context as otel_context

from shared.domain.errors import ConflictError, NotFoundError, WharfError
from shared.domain.ids import new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobType, LogLevel, NewEvent, NewJob, NewLog, utcnow
from shared.domain.ledger import LedgerEntry, LedgerState, ledger_key
from shared.domain.messages import MAX_BATCH_FILES, FileLanded, FileLandedBatch
from shared.domain.remote import RemoteFileChangedError
from shared.domain.sanitize import display_name, encode_original, sanitize_name
from shared.faults import fault_point
from shared.metrics import record_failure, record_ingest
from shared.observability.tracing import attached, current_trace_id, inject_traceparent, log_fields, span
from shared.ports import BlobInfo
from shared.services.storage import one_line, storage_unavailable

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

INBOUND_CONTAINER = "inbound"
_BATCH = 100  # ledger claims per table transaction (one partition: the partner)
_METADATA_MAX = 2048  # blob metadata is at most 8 KiB in all; keep each value well under it
_MESSAGE_BYTES = 40 * 1024  # a FileLandedBatch's JSON at most (the queue adapter refuses more than 48 KiB)


class ClaimLostError(WharfError):
    """Another instance took this file over (our lease ran out): stop without committing anything."""


class NotStableError(WharfError):
    """The second look at the source disagreed with the first (`reason`: vanished or changing): the file
    is not committed, and a later poll takes the version that stays."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Arrival:
    """One version of a file a source offers: an SFTP listing entry, a mail attachment, ...

    `path` is the exact remote identity (undecodable bytes as surrogate escapes); `name` the original,
    untrusted file name; `mtime` seconds since the epoch (a mail's received time); `source` says where
    it came from, for people (`sftp://host:port/path`).
    """

    channel: str
    path: str
    name: str
    size: int
    mtime: int
    source: str

    @property
    def key(self) -> str:
        return ledger_key(self.channel, self.path, self.size, self.mtime)


@dataclass(frozen=True)
class Plan:
    """What to do with an arrival given its ledger entry: claim, take_over, finish (post-action only),
    done (landed and tidied before) or skip (with a reason)."""

    action: str
    reason: str = ""


@dataclass
class Claim:
    """A claimed arrival. `entry` always holds the latest ETag (heartbeats renew the lease)."""

    arrival: Arrival
    entry: LedgerEntry
    job_created: bool = False

    @property
    def job_id(self) -> str:
        return self.entry.job_id


@dataclass(frozen=True)
class Landed:
    claim: Claim
    blob: BlobInfo
    message: FileLanded
    reused_blob: bool = False


@dataclass
class Uploaded:
    """A file whose blob is committed and whose bookkeeping is still to be written (`Landing.record_many`)."""

    claim: Claim
    blob: BlobInfo
    seconds: float  # transfer time, for the ingest metrics
    context: otel_context.Context = field(default_factory=otel_context.get_current)


@dataclass
class _Renewal:
    every: timedelta
    last: datetime = field(default_factory=utcnow)


def _metadata_text(value: str, *, encode: bool = True) -> str:
    """ASCII for blob metadata: percent-encoded (a printable ASCII URI is kept as it is), cut to size."""
    printable = value.isascii() and value.isprintable()
    encoded = value if printable and not encode else encode_original(value)
    return encoded if len(encoded) <= _METADATA_MAX else encoded[:_METADATA_MAX - 3] + "..."


class Landing:
    """Exactly-once landing of one partner's files from one channel.

    Claims are insert-if-absent rows in the Ledger (batched per 100); a CLAIMED row whose lease ran out
    (crashed poller) and a FAILED row with attempts left are taken over with an ETag-conditional update.
    The job id, transfer id and blob path are fixed at claim time, so every retry of a file writes the
    same blob and the same job; a committed blob from a crashed attempt is reused, not downloaded again.
    """

    def __init__(
        self, services: Services, partner: str, *, channel: str, job_type: JobType, owner: str,
        lease: timedelta = timedelta(minutes=10), max_attempts: int = 5,
        clock: Callable[[], datetime] = utcnow, container: str = INBOUND_CONTAINER,
    ) -> None:
        self._s = services
        self.partner, self.channel, self.job_type, self.owner = partner, channel, job_type, owner
        self.lease, self.max_attempts, self._clock, self.container = lease, max_attempts, clock, container

    # --- deciding -----------------------------------------------------------------------------

    def lookup(self, arrivals: Iterable[Arrival]) -> dict[str, LedgerEntry]:
        """Ledger entries of these arrivals, by key (one query per 14 keys)."""
        return self._s.ledger.get_many(self.partner, [a.key for a in arrivals])

    def plan(self, entry: LedgerEntry | None, now: datetime | None = None) -> Plan:
        now = now or self._clock()
        if entry is None:
            return Plan("claim")
        match entry.state:
            case LedgerState.CLAIMED:
                return Plan("take_over") if entry.lease_expired(now, self.lease) else Plan("skip", "claimed_elsewhere")
            case LedgerState.FAILED:
                return Plan("take_over") if entry.attempts < self.max_attempts else Plan("skip", "gave_up")
            case LedgerState.GONE:
                return Plan("take_over")  # it vanished or changed before, and is back as this exact version
            case LedgerState.LANDED:
                return Plan("finish", "post_action_pending")
            case LedgerState.DONE:
                return Plan("done", "already_ingested")
            case LedgerState.REJECTED:
                return Plan("skip", "rejected")
            case _:
                return Plan("skip", "already_skipped")

    def new_entry(self, arrival: Arrival, *, state: LedgerState = LedgerState.CLAIMED,
                  error: str = "", now: datetime | None = None) -> LedgerEntry:
        now = now or self._clock()
        transfer_id = new_transfer_id(now)
        name = sanitize_name(arrival.name)
        return LedgerEntry(
            partner=self.partner, key=arrival.key, channel=arrival.channel, path=arrival.path,
            size=arrival.size, mtime=arrival.mtime, state=state, owner=self.owner, claimed_at=now,
            job_id=new_job_id(now), transfer_id=transfer_id, container=self.container,
            blob_path=f"{self.partner}/{now:%Y/%m/%d}/{transfer_id}/{name}", error=error,
        )

    # --- claiming -----------------------------------------------------------------------------

    def claim_new(self, arrivals: Iterable[Arrival]) -> tuple[list[Claim], dict[str, str]]:
        """Claim arrivals that had no ledger entry. Returns the claims won and, by key, why the others
        were not (another instance claimed them first)."""
        claims: list[Claim] = []
        lost: dict[str, str] = {}
        for won, missed in self.claim_batches(arrivals):
            claims += won
            lost.update(missed)
        return claims, lost

    def claim_batches(self, arrivals: Iterable[Arrival]) -> Iterator[tuple[list[Claim], dict[str, str]]]:
        """`claim_new` one table transaction (`_BATCH` arrivals) at a time: each batch's claims are yielded as
        soon as they are stored, so a caller can start on them while the next batch is claimed."""
        todo = list(arrivals)
        for start in range(0, len(todo), _BATCH):
            chunk = todo[start:start + _BATCH]
            claims: list[Claim] = []
            lost: dict[str, str] = {}
            # The span ends before the yield: the caller's work between batches is not inside it.
            with span("landing.claim", {"wharf.partner": self.partner, "wharf.files": len(chunk)}):
                # One `now` for the batch: its job ids share a time part, so their rows share a partition
                # and `record_many` writes them in a few table transactions.
                now = self._clock()
                entries = [self.new_entry(a, now=now) for a in chunk]
                try:
                    stored = self._s.ledger.create_many(entries)
                except ConflictError:
                    # Someone raced us on at least one key: the batch did nothing; claim one by one.
                    for arrival in chunk:
                        claim, reason = self.claim_one(arrival)
                        if claim:
                            claims.append(claim)
                        else:
                            lost[arrival.key] = reason
                else:
                    fault_point("landing.after_claim")
                    claims = [Claim(a, e) for a, e in zip(chunk, stored, strict=True)]
            yield claims, lost

    def claim_one(self, arrival: Arrival) -> tuple[Claim | None, str]:
        try:
            claim = Claim(arrival, self._s.ledger.create(self.new_entry(arrival)))
        except ConflictError:
            pass
        else:
            fault_point("landing.after_claim")
            return claim, ""
        try:
            entry = self._s.ledger.get(self.partner, arrival.key)
        except NotFoundError:
            return None, "claimed_elsewhere"
        plan = self.plan(entry)
        if plan.action == "take_over":
            return self.take_over(arrival, entry), "claimed_elsewhere"
        return None, plan.reason or plan.action

    def take_over(self, arrival: Arrival, entry: LedgerEntry) -> Claim | None:
        """Claim an entry left CLAIMED by a crashed poller, or FAILED/GONE by an earlier attempt (ETag)."""
        with span("landing.take_over", {"wharf.partner": self.partner, "wharf.job_id": entry.job_id,
                                        "wharf.transfer_id": entry.transfer_id}):
            try:
                taken = self._s.ledger.update(replace(
                    entry, state=LedgerState.CLAIMED, owner=self.owner, claimed_at=self._clock(),
                    attempts=entry.attempts + 1, error=""))
            except (ConflictError, NotFoundError):
                return None
            fault_point("landing.after_claim")
            log.info("took over %s (attempt %d, was %s)", display_name(arrival.path), taken.attempts,
                     entry.state.value, extra=log_fields(taken.job_id, partner=self.partner))
            return Claim(arrival, taken, job_created=False)

    # --- landing ------------------------------------------------------------------------------

    def _created_data(self, claim: Claim) -> dict[str, Any]:
        a, e = claim.arrival, claim.entry
        return {"partner": self.partner, "job_type": self.job_type, "source": a.source,
                "file_name": posixpath.basename(e.blob_path), "original_name": display_name(a.name),
                "remote_path": display_name(a.path), "size": a.size, "mtime": a.mtime,
                "transfer_id": e.transfer_id, "channel": a.channel}

    def _ensure_job(self, claim: Claim) -> None:
        if claim.job_created:
            return
        try:
            self._s.jobs.append(claim.entry.job_id, EventType.CREATED, self._created_data(claim))
        except ConflictError:
            pass  # an earlier attempt created it: same job id by design
        claim.job_created = True

    def _renewing(self, claim: Claim, chunks: Iterable[bytes],
                  on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
        """Pass chunks through; renew the claim's lease while a long transfer runs (ETag-checked)."""
        renewal = _Renewal(every=self.lease / 3, last=self._clock())
        for chunk in chunks:
            yield chunk
            if on_bytes is not None:
                on_bytes(len(chunk))
            now = self._clock()
            if now - renewal.last >= renewal.every:
                try:
                    claim.entry = self._s.ledger.update(replace(claim.entry, claimed_at=now))
                except (ConflictError, NotFoundError) as exc:
                    raise ClaimLostError(f"{display_name(claim.arrival.path)}: another instance took this file "
                                         "over; this transfer stops without committing") from exc
                renewal.last = now

    def _committed_blob(self, claim: Claim) -> BlobInfo | None:
        """The blob an earlier attempt committed for this very claim, if any."""
        e = claim.entry
        try:
            info = self._s.blobs.get_info(e.container, e.blob_path)
        except NotFoundError:
            return None
        meta = {k.lower(): v for k, v in info.metadata.items()}
        if meta.get("ledger_key") == e.key and info.size == e.size and info.sha256:
            return info
        return None

    def metadata(self, claim: Claim) -> dict[str, str]:
        """Blob metadata: ASCII only, so the original name and source are percent-encoded."""
        a, e = claim.arrival, claim.entry
        meta = {
            "original_name": _metadata_text(a.name), "partner": self.partner, "job_id": e.job_id,
            "transfer_id": e.transfer_id, "source": _metadata_text(a.source, encode=False), "channel": a.channel,
            "ledger_key": e.key,
        }
        carrier: dict[str, Any] = {}
        inject_traceparent(carrier)
        if carrier.get("traceparent"):
            meta["traceparent"] = str(carrier["traceparent"])
        return meta

    def land(self, claim: Claim, open_chunks: Callable[[], Iterable[bytes]], *,
             on_bytes: Callable[[int], None] | None = None, final: bool = False,
             before_commit: Callable[[], None] | None = None) -> Landed:
        """Stream the file into its blob (committed once, whole) and record it: job events, FileTransfer,
        log line, file-landed message, ledger LANDED (DONE when `final`: no post-action follows).
        Idempotent per claim: safe to call again after any failure. A file that cannot be opened fails
        before its job exists."""
        e = claim.entry
        attrs = {"wharf.partner": self.partner, "wharf.job_id": e.job_id, "wharf.transfer_id": e.transfer_id,
                 "file.size": e.size, "wharf.channel": self.channel}
        with span("landing.land", attrs) as s:
            retry = e.attempts > 1 or claim.job_created
            blob = self._committed_blob(claim) if retry else None
            reused = blob is not None
            started = time.monotonic()
            if blob is None:
                blob = self._stream(claim, open_chunks, on_bytes, before_commit, job_first=True)
            else:
                self._ensure_job(claim)
                if on_bytes is not None:
                    on_bytes(blob.size)
                s.set_attribute("wharf.reused_blob", True)
            message = self._record(claim, blob, reused=reused, final=final)
            if not reused:
                record_ingest(self.partner, self.channel, blob.size, time.monotonic() - started)
            return Landed(claim, blob, message, reused_blob=reused)

    def _stream(self, claim: Claim, open_chunks: Callable[[], Iterable[bytes]],
                on_bytes: Callable[[int], None] | None, before_commit: Callable[[], None] | None, *,
                job_first: bool) -> BlobInfo:
        """Open the file and stream it into its blob (committed once, whole).

        The file is opened and its first chunk read before anything is written: a vanished or unreadable file
        leaves no job behind. With `job_first` the job is created next (the one-by-one path); otherwise it is
        left to `record_many`. A failure is noted on the job and counted before it propagates, except a refused
        second look, and a source that changed while read when there is no job yet (no job is created for a
        version that is not taken)."""
        e = claim.entry
        chunks = iter(open_chunks())
        first = next(chunks, None)
        if job_first:
            self._ensure_job(claim)
        try:
            blob = self._s.blobs.upload_stream(e.container, e.blob_path,
                                               self._renewing(claim, _chain(first, chunks), on_bytes),
                                               metadata=self.metadata(claim), before_commit=before_commit)
        except Exception as exc:
            if not (isinstance(exc, NotStableError)
                    or (isinstance(exc, RemoteFileChangedError) and not claim.job_created)):
                self._note_failure(claim, exc)
                record_failure(self.partner, self.channel, exc)
            raise
        fault_point("landing.after_upload")
        return blob

    def _note_failure(self, claim: Claim, exc: BaseException) -> None:
        """Say on the file's job (created for the purpose if need be) that a transfer attempt failed.

        Not when storage itself is unavailable: writing the note would only wait out the retries again (the
        poll stops; the claim expires with its lease and the next attempt is counted in the ledger)."""
        reason = str(exc) or type(exc).__name__
        if storage_unavailable(exc):
            log.warning("transfer of %s failed: storage unavailable: %s", display_name(claim.arrival.path),
                        one_line(exc), extra=log_fields(claim.job_id, partner=self.partner))
            return
        log.warning("transfer of %s failed: %s", display_name(claim.arrival.path), reason,
                    extra=log_fields(claim.job_id, partner=self.partner))
        try:
            self._ensure_job(claim)
            self._s.jobs.append(claim.job_id, EventType.NOTE, {
                "message": f"transfer attempt {claim.entry.attempts} failed: {reason}"})
            self._s.jobs.log(claim.job_id, "WARNING", f"transfer attempt {claim.entry.attempts} of "
                                                      f"{display_name(claim.arrival.name)} failed: {reason}",
                             trace_id=current_trace_id())
        except (WharfError, AzureError) as err:  # storage is down too: the ledger and the poll summary say why
            log.warning("could not record the failed transfer of %s: %s", display_name(claim.arrival.path),
                        one_line(err), exc_info=log.isEnabledFor(logging.DEBUG),
                        extra=log_fields(claim.job_id, partner=self.partner))

    def _landed_data(self, claim: Claim, blob: BlobInfo) -> dict[str, Any]:
        e = claim.entry
        return {"blob_path": f"{e.container}/{e.blob_path}", "bytes": blob.size, "sha256": blob.sha256,
                "transfer_id": e.transfer_id, "file_name": posixpath.basename(e.blob_path)}

    def _transfer_row(self, claim: Claim, blob: BlobInfo) -> FileTransfer:
        a, e = claim.arrival, claim.entry
        return FileTransfer(job_id=e.job_id, transfer_id=e.transfer_id, file_name=posixpath.basename(e.blob_path),
                            source=a.source, destination=f"{e.container}/{e.blob_path}", status="LANDED",
                            transfer_date=self._clock(), bytes=blob.size, sha256=blob.sha256)

    def _landed_text(self, claim: Claim, blob: BlobInfo, *, retried: bool = False) -> str | None:
        """The IntegrationLog line of a landing, only when it says something the job's events do not: a zero-byte
        file, a name changed to be safe, a landing that took more than one attempt. A plain, successful landing
        gets none (its `job.created` and `file.landed` events say it all)."""
        a, e = claim.arrival, claim.entry
        name = posixpath.basename(e.blob_path)
        if not (blob.size == 0 or name != a.name or retried):
            return None
        note = " (zero-byte file)" if blob.size == 0 else ""
        renamed = f" as {name}" if name != a.name else ""
        attempt = f" (attempt {e.attempts})" if retried and e.attempts > 1 else ""
        return (f"landed {display_name(a.name)}{renamed} from {display_name(a.source)}: {blob.size} bytes{note}, "
                f"sha256 {blob.sha256}, blob {e.container}/{e.blob_path}{attempt}")

    def _landed_message(self, claim: Claim, blob: BlobInfo) -> FileLanded:
        """The file-landed message of one file, carrying the current trace context."""
        a, e = claim.arrival, claim.entry
        carrier: dict[str, Any] = {}
        inject_traceparent(carrier)
        return FileLanded(job_id=e.job_id, partner=self.partner, container=e.container, blob_path=e.blob_path,
                          file_name=posixpath.basename(e.blob_path), bytes=blob.size, sha256=blob.sha256,
                          transfer_id=e.transfer_id, source=a.source, traceparent=carrier.get("traceparent"))

    def _send_landed(self, claim: Claim, blob: BlobInfo) -> FileLanded:
        """The file-landed message, carrying the current trace context."""
        message = self._landed_message(claim, blob)
        self._s.queues.send(self._s.settings.landed_queue, message.to_message())
        fault_point("landing.after_send")
        return message

    def _send_landed_many(self, uploads: Sequence[Uploaded]
                          ) -> tuple[list[tuple[Uploaded, FileLanded]], list[tuple[Uploaded, Exception]]]:
        """File-landed messages for many recorded files: FileLandedBatch messages of up to MAX_BATCH_FILES
        files (and _MESSAGE_BYTES), each entry in its own file's trace context. A send that fails fails the
        files of that message only."""
        sent: list[tuple[Uploaded, FileLanded]] = []
        failed: list[tuple[Uploaded, Exception]] = []
        group: list[tuple[Uploaded, FileLanded, dict[str, Any]]] = []
        size = 0

        def flush() -> None:
            if not group:
                return
            try:
                # Each entry is serialised once (its dict, sized as JSON below); the batch model checks the list's
                # shape and the dicts are sent as they are, not dumped again.
                files = [entry for _, _, entry in group]
                FileLandedBatch(files=files)
                self._s.queues.send(self._s.settings.landed_queue, {"files": files})
            except (AzureError, WharfError) as exc:
                failed.extend((u, exc) for u, _, _ in group)
            else:
                fault_point("landing.after_send")
                sent.extend((u, m) for u, m, _ in group)
            group.clear()

        for u in uploads:
            with attached(u.context):
                message = self._landed_message(u.claim, u.blob)
            entry = message.to_message()
            entry_size = len(json.dumps(entry)) + 2
            if group and (len(group) >= MAX_BATCH_FILES or size + entry_size > _MESSAGE_BYTES):
                flush()
                size = 0
            group.append((u, message, entry))
            size += entry_size
        flush()
        return sent, failed

    def _landed_state(self, claim: Claim, blob: BlobInfo, *, final: bool) -> LedgerEntry:
        return replace(claim.entry, state=LedgerState.DONE if final else LedgerState.LANDED, sha256=blob.sha256,
                       error="")

    def _mark_landed(self, claim: Claim, blob: BlobInfo, *, final: bool) -> None:
        stored = self._update_one(self._landed_state(claim, blob, final=final), moved_note=True)
        fault_point("landing.after_ledger")
        if stored is not None:
            claim.entry = stored

    def _landed_log(self, claim: Claim, blob: BlobInfo) -> None:
        e = claim.entry
        if blob.size == 0:
            log.info("landed a zero-byte file", extra=log_fields(e.job_id, partner=self.partner))
        log.info("file landed", extra=log_fields(e.job_id, partner=self.partner, bytes=blob.size,
                                                 transfer_id=e.transfer_id))

    def _record(self, claim: Claim, blob: BlobInfo, *, reused: bool, final: bool) -> FileLanded:
        """One file's bookkeeping, one write at a time; idempotent (a retry skips what an attempt wrote).

        A retry also repairs the job's projection: an attempt that died between the job's events and its
        IntegrationJob row (inside `create_jobs` or `append`) left a job no list shows, and this is where every
        later attempt of the file passes (take-over, a job `create_jobs` found existing, the mail poll)."""
        e = claim.entry
        already = reused or e.attempts > 1
        if not (already and any(ev.type is EventType.FILE_LANDED for ev in self._s.jobs.events(e.job_id))):
            self._s.jobs.append(e.job_id, EventType.FILE_LANDED, self._landed_data(claim, blob))  # repairs too
        else:
            self._s.jobs.ensure_projection(e.job_id)
        self._s.jobs.add_transfer(self._transfer_row(claim, blob))
        text = self._landed_text(claim, blob, retried=already)
        if text is not None:
            self._s.jobs.log(e.job_id, "INFO", text, trace_id=current_trace_id())
        message = self._send_landed(claim, blob)
        self._mark_landed(claim, blob, final=final)
        self._landed_log(claim, blob)
        return message

    # --- landing many: upload now, record in batches ----------------------------------------------

    def upload(self, claim: Claim, open_chunks: Callable[[], Iterable[bytes]], *,
               on_bytes: Callable[[int], None] | None = None,
               before_commit: Callable[[], None] | None = None) -> Uploaded:
        """Stream a claimed file into its blob (committed once, whole) and write nothing else yet: the
        caller hands the result to `record_many`, which records many files in a few writes.

        `before_commit` (e.g. the second look at the source) runs after the last byte is read and before
        the commit; what it raises propagates with nothing committed. A file that vanished, could not be
        opened, changed or was refused by `before_commit` leaves no job behind; any other failure is noted
        on the file's job (created for the purpose) before it propagates."""
        e = claim.entry
        attrs = {"wharf.partner": self.partner, "wharf.job_id": e.job_id, "wharf.transfer_id": e.transfer_id,
                 "file.size": e.size, "wharf.channel": self.channel}
        with span("landing.upload", attrs):
            started = time.monotonic()
            blob = self._stream(claim, open_chunks, on_bytes, before_commit, job_first=False)
            return Uploaded(claim, blob, time.monotonic() - started)

    def _new_job(self, up: Uploaded) -> NewJob:
        claim, blob = up.claim, up.blob
        text = self._landed_text(claim, blob)  # None for a plain landing: one row less per file
        return NewJob(job_id=claim.job_id,
                      events=[NewEvent(type=EventType.CREATED, data=self._created_data(claim)),
                              NewEvent(type=EventType.FILE_LANDED, data=self._landed_data(claim, blob))],
                      transfers=[self._transfer_row(claim, blob)],
                      logs=[] if text is None else [NewLog(level=LogLevel.INFO, message=text,
                                                           trace_id=_trace_id(up.context))])

    def record_many(self, uploads: Sequence[Uploaded], *, final: bool
                    ) -> tuple[list[Landed], list[tuple[Uploaded, Exception]]]:
        """Record many uploaded files together: their jobs (`job.created` + `file.landed`), FileTransfer
        rows and the log lines worth writing through `JobStore.create_jobs` (a few table transactions per
        hundred files), one FileLandedBatch message for them (each entry in its file's own trace context), and
        the ledger (LANDED, or DONE when `final`) in batches of 100.

        A file whose job exists already (a retry, or a job created to note a failure) is recorded the
        one-by-one, idempotent way. Returns the files recorded and those that were not, with the error:
        their ledger entries stay CLAIMED for the caller to release (a later poll then finds the
        committed blob and records it without downloading again)."""
        landed: list[Landed] = []
        failed: list[tuple[Uploaded, Exception]] = []
        if not uploads:
            return landed, failed
        with span("landing.record_many", {"wharf.partner": self.partner, "wharf.files": len(uploads),
                                          "wharf.channel": self.channel}):
            fresh = [u for u in uploads if not u.claim.job_created]
            singles = [u for u in uploads if u.claim.job_created]
            created: list[Uploaded] = []
            if fresh:
                try:
                    existing = set(self._s.jobs.create_jobs([self._new_job(u) for u in fresh]))
                except (AzureError, WharfError) as exc:
                    log.warning("recording %d landed files failed: %s", len(fresh), exc,
                                extra=log_fields(partner=self.partner))
                    failed += [(u, exc) for u in fresh]
                    fresh = []
                    existing = set()
                for u in fresh:
                    u.claim.job_created = True
                    (singles if u.claim.job_id in existing else created).append(u)
            sent, unsent = self._send_landed_many(created)
            failed += unsent
            self._mark_many([(u.claim, u.blob) for u, _ in sent], final=final)
            for u, message in sent:
                with attached(u.context):
                    self._landed_log(u.claim, u.blob)
                landed.append(Landed(u.claim, u.blob, message))
                record_ingest(self.partner, self.channel, u.blob.size, u.seconds)
            for u in singles:
                with attached(u.context):
                    try:
                        message = self._record(u.claim, u.blob, reused=True, final=final)
                    except (AzureError, WharfError) as exc:
                        failed.append((u, exc))
                        continue
                landed.append(Landed(u.claim, u.blob, message))
                record_ingest(self.partner, self.channel, u.blob.size, u.seconds)
        return landed, failed

    def _mark_many(self, items: Sequence[tuple[Claim, BlobInfo]], *, final: bool) -> None:
        """Ledger LANDED/DONE for many claims. A storage error fails only its chunk: those files are recorded
        but the ledger still says CLAIMED, so no post-action runs now, and once the lease runs out a later poll
        re-records them idempotently (same jobs, same blobs) and tidies."""
        stored = self._update_many([self._landed_state(c, b, final=final) for c, b in items],
                                   tolerate="landed files", moved_note=True)
        fault_point("landing.after_ledger")
        for (claim, _), entry in zip(items, stored, strict=True):
            if entry is not None:
                claim.entry = entry

    def _update_many(self, entries: Sequence[LedgerEntry], *, tolerate: str | None = None,
                     moved_note: bool = False) -> list[LedgerEntry | None]:
        """The one batch updater of the ledger: `_BATCH` entries per table transaction. When a chunk's
        transaction meets an entry that moved meanwhile (our lease ran out; another instance owns it now),
        its entries are written one at a time and a moved one comes back None: its new owner finishes it.
        With `tolerate` (what the entries are, for the log line) a storage error fails only its chunk
        (None for each entry) instead of propagating."""
        out: list[LedgerEntry | None] = []
        for start in range(0, len(entries), _BATCH):
            chunk = entries[start:start + _BATCH]
            try:
                out += self._s.ledger.update_many(chunk)
            except (ConflictError, NotFoundError):
                out += [self._update_one(e, moved_note=moved_note) for e in chunk]
            except AzureError as exc:
                if tolerate is None:
                    raise
                log.warning("ledger update of %d %s failed: %s; a later poll finishes them", len(chunk), tolerate,
                            exc, extra=log_fields(partner=self.partner))
                out += [None] * len(chunk)
        return out

    def _update_one(self, entry: LedgerEntry, *, moved_note: bool = False) -> LedgerEntry | None:
        """One ledger write; None when the entry moved meanwhile (another instance owns it now)."""
        try:
            return self._s.ledger.update(entry)
        except (ConflictError, NotFoundError):
            if moved_note:
                # Only when our lease ran out mid-way: the taker re-records idempotently (same job, same blob).
                log.warning("ledger entry moved while landing; the new owner finishes it",
                            extra=log_fields(entry.job_id, partner=self.partner))
            return None

    # --- after landing ------------------------------------------------------------------------

    def finish(self, claim_or_entry: Claim | LedgerEntry) -> LedgerEntry | None:
        """Post-action done: LANDED -> DONE. None when another instance got there first."""
        entry = claim_or_entry.entry if isinstance(claim_or_entry, Claim) else claim_or_entry
        return self._update_one(replace(entry, state=LedgerState.DONE))

    def finish_many(self, entries: Iterable[LedgerEntry]) -> int:
        """`finish` for many entries, in batches (one table transaction each); an entry that moved meanwhile
        is skipped. Safe to defer: an entry left LANDED only makes a later poll repeat the (idempotent)
        post-action. Returns how many were marked DONE."""
        stored = self._update_many([replace(e, state=LedgerState.DONE) for e in entries])
        return sum(1 for e in stored if e is not None)

    def finish_gone(self, gone: Callable[[LedgerEntry], bool], *, why: Callable[[LedgerEntry], str], limit: int,
                    span_name: str, now: datetime | None = None) -> int:
        """LANDED entries of this channel whose source item is gone (`gone(entry)`) and whose claim is older than
        the lease: DONE, at most `limit` a call, one log line each (`why(entry)`). Returns how many were marked.

        A poll stopped after a post-action (a file deleted or moved, a mail moved or marked read) and before the
        ledger said DONE leaves the entry LANDED, and no later listing shows its item again. Only entries older
        than the lease are taken (the poll that landed them is not still about to say DONE); the caller decides
        what counts as gone (from a whole listing only). A tidy-up: a storage failure is logged, and the next
        poll tries again."""
        at = (now or self._clock()).timestamp()
        lease = self.lease.total_seconds()
        where = log_fields(partner=self.partner, channel=self.channel)
        with span(span_name, {"wharf.partner": self.partner}) as s:
            try:
                landed = self._s.ledger.entries(self.partner, state=LedgerState.LANDED.value)
            except (AzureError, WharfError) as exc:
                log.warning("%s %s: could not read LANDED ledger entries: %s", self.channel, self.partner,
                            one_line(exc), extra=where)
                return 0
            finished = [e for e in landed if e.channel == self.channel and at - e.claimed_at.timestamp() > lease
                        and gone(e)][:limit]
            s.set_attribute("wharf.entries", len(finished))
            if not finished:
                return 0
            for e in finished:
                log.info(why(e), extra=log_fields(e.job_id, partner=self.partner, channel=self.channel))
            try:
                return self.finish_many(finished)
            except (AzureError, WharfError) as exc:
                log.warning("%s %s: could not mark %d entries DONE whose source is gone: %s; the next poll tries "
                            "again", self.channel, self.partner, len(finished), one_line(exc), extra=where)
                return 0

    def adopt_many(self, entries: Sequence[LedgerEntry]) -> list[LedgerEntry | None]:
        """Take claims queued for a worker (a transfer batch's, still CLAIMED by its `batch:` owner) as this
        Landing's owner, the lease starting now, attempts unchanged (nothing was tried yet); ETag-conditional in
        batches, so of two workers handed one batch each entry goes to one. None for an entry that moved."""
        now = self._clock()
        return self._update_many([replace(e, owner=self.owner, claimed_at=now) for e in entries])

    def fail(self, claim: Claim, reason: str, *, gone: bool = False) -> LedgerEntry | None:
        """Release a claim after a failed attempt: FAILED (retried by a later poll) or GONE."""
        state = LedgerState.GONE if gone else LedgerState.FAILED
        try:
            claim.entry = self._s.ledger.update(replace(claim.entry, state=state, error=reason[:2000]))
            return claim.entry
        except (ConflictError, NotFoundError):
            return None

    def skip(self, arrival: Arrival, reason: str, *, entry: LedgerEntry | None = None) -> LedgerEntry | None:
        """Refuse a file for good (e.g. over-size) and say so once: ledger SKIPPED, a job that failed with
        the reason, and a log line. None when another instance recorded it first."""
        with span("landing.skip", {"wharf.partner": self.partner, "file.size": arrival.size}) as s:
            try:
                if entry is None:
                    stored = self._s.ledger.create(self.new_entry(arrival, state=LedgerState.SKIPPED, error=reason))
                else:
                    stored = self._s.ledger.update(replace(entry, state=LedgerState.SKIPPED, error=reason))
            except (ConflictError, NotFoundError):
                return None
            s.set_attribute("wharf.job_id", stored.job_id)
            claim = Claim(arrival, stored)
            self._ensure_job(claim)
            text = f"skipped {display_name(arrival.name)} ({arrival.size} bytes): {reason}; not downloaded"
            self._s.jobs.log(stored.job_id, "WARNING", text, trace_id=current_trace_id())
            self._s.jobs.append(stored.job_id, EventType.FAILED, {"reason": f"skipped: {reason}"})
            log.warning(text, extra=log_fields(stored.job_id, partner=self.partner))
            return stored


def _trace_id(context: otel_context.Context) -> str:
    with attached(context):
        return current_trace_id()


def _chain(first: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first is None:
        return
    yield first
    yield from rest


def describe(entry: LedgerEntry) -> Mapping[str, Any]:
    """A ledger entry for people (CLI, API): the path made printable."""
    return {"state": entry.state.value, "path": display_name(entry.path), "size": entry.size,
            "mtime": entry.mtime, "job_id": entry.job_id, "transfer_id": entry.transfer_id,
            "blob": f"{entry.container}/{entry.blob_path}", "attempts": entry.attempts, "error": entry.error}
