"""Drop intake: a blob put at drop/{partner}/{name} is made immutable (a server-side copy in inbound/ with its
sha256), becomes a job, and is taken off the drop folder; only the copy is processed and replayed.

The same code takes outgoing files (`OUTBOUND`): a blob an internal system puts at outbound/{partner}/{name}
becomes an OUTBOUND job (direction outbound: the partner's `outbound.routes`, shared.services.outbound)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import posixpath
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.jobs import EventType, FileTransfer, JobEvent, JobStatus, JobType, utcnow
from shared.domain.sanitize import display_name, encode_original, sanitize_name
from shared.metrics import FailureReason, record_failure, record_ingest, record_job_done
from shared.observability.tracing import current_trace_id, log_fields, span, trace_carrier
from shared.ports import BlobInfo
from shared.services.intake import orchestration_input, start_processing

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

CHANNEL = "drop"
INBOUND = "inbound"
QUARANTINE = "quarantine"
#: Quarantine folder, job partner (no partner folder) and metric partner of drops no catalogued partner owns.
UNKNOWN = "_unknown"
_METADATA_MAX = 2048  # blob metadata is at most 8 KiB in all; keep each value well under it


@dataclass(frozen=True)
class Handover:
    """A folder where files are handed to Wharf: its channel (spans, metrics, metadata), the job type and id
    prefix of the jobs it makes, and the direction those jobs take (inbound routes, or the outbound ones)."""

    channel: str
    job_type: JobType
    prefix: str
    direction: str = "inbound"


DROP = Handover(CHANNEL, JobType.DROP, "job-drop")
OUTBOUND = Handover("outbound", JobType.OUTBOUND, "job-out", "outbound")


@dataclass(frozen=True)
class Dropped:
    """One version of a dropped blob (`etag`) and what became of it: a job whose raw file is the copy at
    `copy_container/copy_path`; `ref` is the orchestration to start, None when the file was quarantined."""

    container: str
    blob_path: str
    etag: str
    job_id: str
    partner: str
    file_name: str
    copy_container: str
    copy_path: str
    sha256: str
    size: int
    ref: dict[str, Any] | None
    reason: str = ""

    @property
    def quarantined(self) -> bool:
        return self.ref is None


@dataclass(frozen=True)
class _Place:
    """Where a drop goes. Ids derive from the blob's name and version, so every retry of one drop event
    (and a duplicate event) lands the same copy as the same job."""

    partner: str  # the partner folder ("" when the blob is not in one)
    original: str  # the name under the partner folder, nested folders included (untrusted)
    name: str  # the sanitised file name: the last segment of `original`
    job_id: str
    transfer_id: str
    day: datetime


def _place(container: str, blob_path: str, blob: BlobInfo, handover: Handover) -> _Place:
    partner, sep, rest = blob_path.partition("/")
    if not sep:  # drop/{name}: no partner folder
        partner, rest = "", blob_path
    key = f"{container}/{blob_path}@{blob.etag}".encode("utf-8", "surrogateescape")
    digest = hashlib.sha256(key).hexdigest()
    when = (blob.last_modified or utcnow()).astimezone(UTC)  # the adapters always know it
    stamp = f"{when:%Y%m%d%H%M%S%f}"
    return _Place(partner=partner, original=rest, name=sanitize_name(posixpath.basename(rest)),
                  job_id=f"{handover.prefix}-{stamp}-{digest[:12]}", transfer_id=f"tr-{stamp}-{digest[12:24]}",
                  day=when)


def _metadata_text(value: str, *, encode: bool = True) -> str:
    """ASCII for blob metadata: percent-encoded (printable ASCII kept as it is unless `encode`), cut to size."""
    printable = value.isascii() and value.isprintable()
    encoded = value if printable and not encode else encode_original(value)
    return encoded if len(encoded) <= _METADATA_MAX else encoded[:_METADATA_MAX - 3] + "..."


def _refusal(services: Services, container: str, place: _Place, handover: Handover) -> str:
    """Why this drop cannot be processed, or "" when it can. A catalogue that does not load raises (the
    drop is retried): only a catalogue that loads and lacks the partner refuses a file."""
    if not place.partner:
        return (f"'{display_name(place.original)}' is not in a partner folder: files go to "
                f"{container}/{{partner}}/{{name}}")
    if place.partner not in services.catalog:
        return f"partner '{display_name(place.partner)}' is not in the catalogue"
    if handover.direction == "outbound" and getattr(services.catalog.get(place.partner), "outbound", None) is None:
        return (f"partner '{display_name(place.partner)}' has no outbound block in the catalogue (outbound.routes "
                "say where its outgoing files go)")
    return ""


def land_drop(services: Services, *, container: str, blob_path: str, handover: Handover = DROP) -> Dropped | None:
    """Copy the current version of a dropped blob to inbound/{partner}/{yyyy}/{MM}/{dd}/{transfer_id}/{name}
    (or, for a partner the catalogue lacks, to quarantine/_unknown/...) and record its job, event by event
    (each written if absent, so a retry after any partial attempt completes it). None when the blob is gone
    or changed before it was copied: a newer version has its own drop event."""
    with span("drop.land", {"wharf.channel": handover.channel, "wharf.container": container,
                            "file.path": display_name(blob_path)}) as s:
        try:
            blob = services.blobs.get_info(container, blob_path)
        except NotFoundError:
            log.info("dropped blob %s/%s is gone (taken by an earlier attempt, or removed): nothing to do",
                     container, display_name(blob_path), extra=log_fields())
            return None
        place = _place(container, blob_path, blob, handover)
        s.set_attribute("wharf.job_id", place.job_id)
        s.set_attribute("wharf.transfer_id", place.transfer_id)
        s.set_attribute("file.size", blob.size)
        reason = _refusal(services, container, place, handover)
        events = _Events(services, place.job_id)
        landed = events.first(EventType.FILE_LANDED)
        if landed is not None:
            # An earlier attempt already decided where this version went; a catalogue edited since changes
            # nothing for it (a refused file is replayed from quarantine once its partner exists).
            refused = str(landed.data.get("blob_path", "")).startswith(f"{QUARANTINE}/")
            reason = (reason or "refused by an earlier attempt") if refused else ""
        if reason:
            s.set_attribute("wharf.quarantined", True)
            return _quarantine(services, events, container, blob_path, blob, place, reason, handover)
        return _land(services, events, container, blob_path, blob, place, handover)


def _source(container: str, blob_path: str) -> str:
    return display_name(f"blob:{container}/{blob_path}")


def _copy(services: Services, container: str, blob_path: str, blob: BlobInfo, place: _Place, target: str,
          path: str, extra: Mapping[str, str], channel: str) -> tuple[BlobInfo, bool] | None:
    """The immutable copy of this version: the one an earlier attempt made, else a new server-side copy.
    Returns (copy, made now), or None when the drop blob changed or vanished before it was copied."""
    try:
        existing = services.blobs.get_info(target, path)
    except NotFoundError:
        existing = None
    if existing is not None and existing.sha256 and existing.size == blob.size:
        meta = {k.lower(): v for k, v in existing.metadata.items()}
        if meta.get("drop_etag") == blob.etag and meta.get("job_id") == place.job_id:
            return existing, False
    metadata = {"original_name": _metadata_text(place.original), "partner": _metadata_text(place.partner),
                "job_id": place.job_id, "transfer_id": place.transfer_id, "channel": channel,
                "source": _metadata_text(f"blob:{container}/{blob_path}"), "drop_etag": blob.etag,
                **trace_carrier(), **extra}
    try:
        return services.blobs.copy(container, blob_path, target, path, source_etag=blob.etag,
                                   metadata=metadata), True
    except (ConflictError, NotFoundError) as exc:
        log.info("dropped blob %s/%s changed or vanished before it was copied (%s); its newer version is a "
                 "drop of its own", container, display_name(blob_path), exc, extra=log_fields(place.job_id))
        return None


class _Events:
    """A job's intake events, each written only if the job does not have one of its type yet."""

    def __init__(self, services: Services, job_id: str) -> None:
        self._s, self.job_id = services, job_id
        self._events = services.jobs.events(job_id)
        self._types = {e.type for e in self._events}

    def first(self, event_type: EventType) -> JobEvent | None:
        return next((e for e in self._events if e.type is event_type), None)

    def once(self, event_type: EventType, data: Mapping[str, Any]) -> JobEvent | None:
        if event_type in self._types:
            return None
        try:
            event = self._s.jobs.append(self.job_id, event_type, data)
        except ConflictError:
            # Another attempt appended at the same sequence number meanwhile: fine if it wrote this event.
            self._events = self._s.jobs.events(self.job_id)
            self._types = {e.type for e in self._events}
            if event_type in self._types:
                return None
            raise
        self._events.append(event)
        self._types.add(event_type)
        return event


def _created(container: str, blob_path: str, blob: BlobInfo, place: _Place, partner: str,
             handover: Handover) -> dict[str, Any]:
    data: dict[str, Any] = {
        "partner": partner, "job_type": handover.job_type, "source": _source(container, blob_path),
        "file_name": place.name, "original_name": display_name(place.original), "remote_path": display_name(blob_path),
        "size": blob.size, "transfer_id": place.transfer_id, "channel": handover.channel}
    if handover.direction != "inbound":
        data["direction"] = handover.direction
    return data


def _record_landed(services: Services, events: _Events, container: str, blob_path: str, place: _Place,
                   copy: BlobInfo) -> bool:
    """file.landed, the FileTransfer row and the log line; True when file.landed was written now."""
    destination = f"{copy.container}/{copy.path}"
    written = events.once(EventType.FILE_LANDED, {
        "blob_path": destination, "bytes": copy.size, "sha256": copy.sha256, "transfer_id": place.transfer_id,
        "file_name": place.name}) is not None
    services.jobs.add_transfer(FileTransfer(
        job_id=place.job_id, transfer_id=place.transfer_id, file_name=place.name,
        source=_source(container, blob_path), destination=destination,
        status="QUARANTINED" if copy.container == QUARANTINE else "LANDED", transfer_date=utcnow(),
        bytes=copy.size, sha256=copy.sha256))
    if written:
        renamed = f" as {place.name}" if place.name != place.original else ""
        note = " (zero-byte file)" if copy.size == 0 else ""
        services.jobs.log(place.job_id, "INFO",
                          f"dropped file {display_name(place.original)}{renamed} from {_source(container, blob_path)}: "
                          f"{copy.size} bytes{note}, sha256 {copy.sha256}, copied to {destination}",
                          trace_id=current_trace_id())
    return written


def _land(services: Services, events: _Events, container: str, blob_path: str, blob: BlobInfo,
          place: _Place, handover: Handover) -> Dropped | None:
    path = f"{place.partner}/{place.day:%Y/%m/%d}/{place.transfer_id}/{place.name}"
    started = time.monotonic()
    copied = _copy(services, container, blob_path, blob, place, INBOUND, path, {}, handover.channel)
    if copied is None:
        return None
    copy, made = copied
    events.once(EventType.CREATED, _created(container, blob_path, blob, place, place.partner, handover))
    _record_landed(services, events, container, blob_path, place, copy)
    # `once` skips events a first attempt wrote; a crash between an event and its projection update would
    # leave the job invisible in lists without this (cheap when the projection is current).
    services.jobs.ensure_projection(place.job_id)
    if made:
        record_ingest(place.partner, handover.channel, copy.size, time.monotonic() - started)
    log.info("dropped file landed", extra=log_fields(place.job_id, partner=place.partner, bytes=copy.size,
                                                     transfer_id=place.transfer_id))
    ref: dict[str, Any] = {"job_id": place.job_id, "partner": place.partner, "container": INBOUND,
                           "blob_path": path, "file_name": place.name}
    return Dropped(container=container, blob_path=blob_path, etag=blob.etag, job_id=place.job_id,
                   partner=place.partner, file_name=place.name, copy_container=INBOUND, copy_path=path,
                   sha256=copy.sha256, size=copy.size, ref=ref)


def _quarantine(services: Services, events: _Events, container: str, blob_path: str, blob: BlobInfo,
                place: _Place, reason: str, handover: Handover) -> Dropped | None:
    """Refused drop: copy to quarantine/_unknown/..., a FAILED job that says why (replayable once the
    partner exists), job.failed published, a failure counted; no orchestration."""
    path = f"{UNKNOWN}/{place.day:%Y/%m/%d}/{place.transfer_id}/{place.name}"
    copied = _copy(services, container, blob_path, blob, place, QUARANTINE, path,
                   {"reason": _metadata_text(reason, encode=False)}, handover.channel)
    if copied is None:
        return None
    copy, _ = copied
    partner = display_name(place.partner)[:100] if place.partner else UNKNOWN
    action = ("add the partner to the catalogue, then replay this job" if place.partner
              else f"drop the file again under {container}/{{partner}}/")
    full = f"{reason}; the file is quarantined at {QUARANTINE}/{path} and was not processed ({action})"
    events.once(EventType.CREATED, _created(container, blob_path, blob, place, partner, handover))
    _record_landed(services, events, container, blob_path, place, copy)
    events.once(EventType.STEP_FAILED, {"step": "intake", "reason": full, "quarantine": f"{QUARANTINE}/{path}"})
    if events.first(EventType.FAILED) is None:
        # Published before job.failed is written: a retry after a crash in between publishes again (at least
        # once), never not at all.
        services.publisher.publish("job.failed", {"job_id": place.job_id, "partner": partner,
                                                  "file_name": place.name, "step": "intake", "reason": full},
                                   subject=f"{partner}/{place.job_id}")
    failed = events.once(EventType.FAILED, {"reason": full, "step": "intake"})
    job = services.jobs.ensure_projection(place.job_id)
    if failed is not None:
        services.jobs.log(place.job_id, "ERROR", f"intake refused: {full}", trace_id=current_trace_id())
        record_failure(UNKNOWN, handover.channel, FailureReason.CONFIGURATION)
        job = job or services.jobs.get_job(place.job_id)  # ensure_projection returned it (None: no events)
        record_job_done(UNKNOWN, JobStatus.FAILED, (failed.at - job.created_at).total_seconds())
    log.warning("dropped file quarantined: %s", full, extra=log_fields(place.job_id, partner=partner))
    return Dropped(container=container, blob_path=blob_path, etag=blob.etag, job_id=place.job_id,
                   partner=partner, file_name=place.name, copy_container=QUARANTINE, copy_path=path,
                   sha256=copy.sha256, size=copy.size, ref=None, reason=full)


def remove_drop(services: Services, dropped: Dropped) -> bool:
    """Take the dropped blob off the drop folder, only if it is still the version that was copied (ETag):
    a newer upload under the same name stays, and becomes a job of its own. True when removed."""
    try:
        services.blobs.delete(dropped.container, dropped.blob_path, etag=dropped.etag)
    except ConflictError:
        text = (f"{dropped.container}/{display_name(dropped.blob_path)} was not removed: a newer version was "
                "uploaded under the same name after this one was copied; it becomes a job of its own")
        services.jobs.log(dropped.job_id, "INFO", text, trace_id=current_trace_id())
        log.info(text, extra=log_fields(dropped.job_id, partner=dropped.partner))
        return False
    return True


async def take_drop(services: Services, client: Any, *, container: str, blob_path: str,
                    handover: Handover = DROP) -> Dropped | None:
    """The drop trigger's work, as one trace: land the drop (copy + job), start its orchestration (not for a
    quarantined file), then remove the drop blob. Each step is idempotent, so a failure anywhere is retried
    whole; the blob is removed last, so a retry always finds it."""
    with span(f"intake.{handover.channel}", {"wharf.channel": handover.channel, "wharf.container": container,
                                             "file.path": display_name(blob_path)}) as s:
        # Blocking storage calls, in a worker thread: the event loop is every async invocation's (decision 111).
        dropped = await asyncio.to_thread(land_drop, services, container=container, blob_path=blob_path,
                                          handover=handover)
        if dropped is None:
            return None
        s.set_attribute("wharf.job_id", dropped.job_id)
        s.set_attribute("wharf.partner", dropped.partner)
        s.set_attribute("wharf.quarantined", dropped.quarantined)
        if dropped.ref is not None:
            # The orchestration continues this trace: one trace per file, as on every other channel.
            await start_processing(client, orchestration_input({**dropped.ref, **trace_carrier()}))
        await asyncio.to_thread(remove_drop, services, dropped)
        return dropped


BLOB_CREATED = "Microsoft.Storage.BlobCreated"
_SUBJECT = re.compile(r"/blobServices/default/containers/(?P<container>[^/]+)/blobs/(?P<path>.+)", re.DOTALL)
#: Containers a drop event may name: `drop` (and `drop-<suffix>`, devhost test runs). Anything else (inbound,
#: archive, ...) is refused, so a misrouted subscription can never move Wharf's own blobs.
DROP_CONTAINER = re.compile(r"drop(?:-[a-z0-9-]{1,58})?")
OUTBOUND_CONTAINER = re.compile(r"outbound(?:-[a-z0-9-]{1,54})?")


def drop_from_event(event_type: str, subject: str, handover: Handover = DROP) -> tuple[str, str] | None:
    """(container, blob path) of an Event Grid `BlobCreated` event for the handover's container (`drop` or
    `outbound`, or one of their `-suffix` test twins), from its subject
    (`/blobServices/default/containers/drop/blobs/{partner}/{name}`, the blob name as stored); None (logged)
    for any other event: redelivering it would change nothing."""
    match = _SUBJECT.fullmatch(subject or "")
    pattern = OUTBOUND_CONTAINER if handover.direction == "outbound" else DROP_CONTAINER
    if event_type != BLOB_CREATED or match is None or not pattern.fullmatch(match["container"]):
        log.warning("%s trigger: ignored an event that is not a BlobCreated in a %s container (type %s, "
                    "subject %s)", handover.channel, handover.channel, display_name(str(event_type)[:80]),
                    display_name(str(subject)[:200]), extra=log_fields())
        return None
    return match["container"], match["path"]


async def take_drop_event(services: Services, client: Any, *, event_type: str, subject: str,
                          handover: Handover = DROP) -> Dropped | None:
    """The Event Grid drop (or outbound) trigger: the event names the blob; `take_drop` does the rest."""
    found = drop_from_event(event_type, subject, handover)
    if found is None:
        return None
    container, blob_path = found
    return await take_drop(services, client, container=container, blob_path=blob_path, handover=handover)
