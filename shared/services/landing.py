"""Landing, for every channel: claim in the ledger -> stream into a blob -> job, transfer, events, log ->
file-landed message. SFTP polling uses it; mailbox polling reuses it with channel "mail"."""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.domain.errors import ConflictError, NotFoundError, WharfError
from shared.domain.ids import new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobType, utcnow
from shared.domain.ledger import LedgerEntry, LedgerState, ledger_key
from shared.domain.messages import FileLanded
from shared.domain.sanitize import display_name, encode_original, sanitize_name
from shared.metrics import record_failure, record_ingest
from shared.ports import BlobInfo
from shared.telemetry import current_trace_id, inject_traceparent, log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

INBOUND_CONTAINER = "inbound"
_BATCH = 100  # ledger claims per table transaction (one partition: the partner)
_METADATA_MAX = 2048  # blob metadata is at most 8 KiB in all; keep each value well under it


class ClaimLostError(WharfError):
    """Another instance took this file over (our lease ran out): stop without committing anything."""


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
                  error: str = "") -> LedgerEntry:
        now = self._clock()
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
        todo = list(arrivals)
        claims: list[Claim] = []
        lost: dict[str, str] = {}
        with span("landing.claim", {"wharf.partner": self.partner, "wharf.files": len(todo)}):
            for start in range(0, len(todo), _BATCH):
                chunk = todo[start:start + _BATCH]
                entries = [self.new_entry(a) for a in chunk]
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
                    continue
                claims += [Claim(a, e) for a, e in zip(chunk, stored, strict=True)]
        return claims, lost

    def claim_one(self, arrival: Arrival) -> tuple[Claim | None, str]:
        try:
            return Claim(arrival, self._s.ledger.create(self.new_entry(arrival))), ""
        except ConflictError:
            pass
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
            log.info("took over %s (attempt %d, was %s)", display_name(arrival.path), taken.attempts,
                     entry.state.value, extra=log_fields(taken.job_id, partner=self.partner))
            return Claim(arrival, taken, job_created=False)

    # --- landing ------------------------------------------------------------------------------

    def _ensure_job(self, claim: Claim) -> None:
        if claim.job_created:
            return
        a, e = claim.arrival, claim.entry
        try:
            self._s.jobs.append(e.job_id, EventType.CREATED, {
                "partner": self.partner, "job_type": self.job_type, "source": a.source,
                "file_name": posixpath.basename(e.blob_path), "original_name": display_name(a.name),
                "remote_path": display_name(a.path), "size": a.size, "mtime": a.mtime,
                "transfer_id": e.transfer_id, "channel": a.channel,
            })
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
             on_bytes: Callable[[int], None] | None = None, final: bool = False) -> Landed:
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
                chunks = iter(open_chunks())
                # Open and read the first chunk before the job exists: a vanished or unreadable file
                # leaves no job behind.
                first = next(chunks, None)
                self._ensure_job(claim)
                body = _chain(first, chunks)
                try:
                    blob = self._s.blobs.upload_stream(e.container, e.blob_path,
                                                       self._renewing(claim, body, on_bytes),
                                                       metadata=self.metadata(claim))
                except Exception as exc:
                    self._note_failure(claim, exc)
                    record_failure(self.partner, self.channel, exc)
                    raise
            else:
                self._ensure_job(claim)
                if on_bytes is not None:
                    on_bytes(blob.size)
                s.set_attribute("wharf.reused_blob", True)
            message = self._record(claim, blob, reused=reused, final=final)
            if not reused:
                record_ingest(self.partner, self.channel, blob.size, time.monotonic() - started)
            return Landed(claim, blob, message, reused_blob=reused)

    def _note_failure(self, claim: Claim, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        log.warning("transfer of %s failed: %s", display_name(claim.arrival.path), reason,
                    extra=log_fields(claim.job_id, partner=self.partner))
        try:
            self._s.jobs.append(claim.job_id, EventType.NOTE, {
                "message": f"transfer attempt {claim.entry.attempts} failed: {reason}"})
            self._s.jobs.log(claim.job_id, "WARNING", f"transfer attempt {claim.entry.attempts} of "
                                                      f"{display_name(claim.arrival.name)} failed: {reason}",
                             trace_id=current_trace_id())
        except WharfError:
            log.exception("could not record the failed transfer", extra=log_fields(claim.job_id))

    def _record(self, claim: Claim, blob: BlobInfo, *, reused: bool, final: bool) -> FileLanded:
        a, e = claim.arrival, claim.entry
        name = posixpath.basename(e.blob_path)
        already = reused or e.attempts > 1
        if not (already and any(ev.type is EventType.FILE_LANDED for ev in self._s.jobs.events(e.job_id))):
            self._s.jobs.append(e.job_id, EventType.FILE_LANDED, {
                "blob_path": f"{e.container}/{e.blob_path}", "bytes": blob.size, "sha256": blob.sha256,
                "transfer_id": e.transfer_id, "file_name": name})
        now = self._clock()
        self._s.jobs.add_transfer(FileTransfer(
            job_id=e.job_id, transfer_id=e.transfer_id, file_name=name, source=a.source,
            destination=f"{e.container}/{e.blob_path}", status="LANDED", transfer_date=now, bytes=blob.size,
            sha256=blob.sha256))
        note = " (zero-byte file)" if blob.size == 0 else ""
        renamed = f" as {name}" if name != a.name else ""
        self._s.jobs.log(e.job_id, "INFO", f"landed {display_name(a.name)}{renamed} from {display_name(a.source)}: "
                                          f"{blob.size} bytes{note}, sha256 {blob.sha256}, blob {e.container}/"
                                          f"{e.blob_path}", trace_id=current_trace_id())
        carrier: dict[str, Any] = {}
        inject_traceparent(carrier)
        message = FileLanded(job_id=e.job_id, partner=self.partner, container=e.container, blob_path=e.blob_path,
                             file_name=name, bytes=blob.size, sha256=blob.sha256, transfer_id=e.transfer_id,
                             source=a.source, traceparent=carrier.get("traceparent"))
        self._s.queues.send(self._s.settings.landed_queue, message.to_message())
        try:
            state = LedgerState.DONE if final else LedgerState.LANDED
            claim.entry = self._s.ledger.update(replace(e, state=state, sha256=blob.sha256, error=""))
        except (ConflictError, NotFoundError):
            # Only when our lease ran out mid-way: the taker re-records idempotently (same job, same blob).
            log.warning("ledger entry moved while landing; the new owner finishes it",
                        extra=log_fields(e.job_id, partner=self.partner))
        if blob.size == 0:
            log.info("landed a zero-byte file", extra=log_fields(e.job_id, partner=self.partner))
        log.info("file landed", extra=log_fields(e.job_id, partner=self.partner, bytes=blob.size,
                                                 transfer_id=e.transfer_id))
        return message

    # --- after landing ------------------------------------------------------------------------

    def finish(self, claim_or_entry: Claim | LedgerEntry) -> LedgerEntry | None:
        """Post-action done: LANDED -> DONE. None when another instance got there first."""
        entry = claim_or_entry.entry if isinstance(claim_or_entry, Claim) else claim_or_entry
        try:
            return self._s.ledger.update(replace(entry, state=LedgerState.DONE))
        except (ConflictError, NotFoundError):
            return None

    def finish_many(self, entries: Iterable[LedgerEntry]) -> int:
        """`finish` for many entries, in batches of 100 (one table transaction each); an entry that moved
        meanwhile is skipped. Safe to defer: an entry left LANDED only makes a later poll repeat the
        (idempotent) post-action. Returns how many were marked DONE."""
        todo = [replace(e, state=LedgerState.DONE) for e in entries]
        done = 0
        for start in range(0, len(todo), _BATCH):
            chunk = todo[start:start + _BATCH]
            try:
                done += len(self._s.ledger.update_many(chunk))
            except (ConflictError, NotFoundError):
                done += sum(1 for e in chunk if self.finish(replace(e, state=LedgerState.LANDED)) is not None)
        return done

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
