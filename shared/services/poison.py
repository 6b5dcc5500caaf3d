"""Bad queue messages: checked on arrival, dead-lettered at once (with the reason) to `<queue>-poison`, and the
poison queues watched (depths, a gauge) and worked by an operator (list, show, requeue, drop).

A message that can never be processed (not JSON, the wrong shape, a refused value, a partner or job that is
not there) is not retried: the trigger moves it to `<queue>-poison` wrapped in an envelope that says why, records
the reason on its job when the message names a job that exists, logs it, counts it
(`wharf.messages.dead_lettered{queue,reason}`) and returns normally, so the host deletes the original.
Anything transient (storage down while checking or dead-lettering) raises: the host retries it, and after
maxDequeueCount moves it to the poison queue itself, as it is (shown as "reason unknown").
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.domain.errors import NotFoundError, WharfError
from shared.domain.hostmessages import BadMessageError, BadMessageReason, decode_host_message, parse_message
from shared.domain.jobs import EventType, JobStatus, utcnow
from shared.domain.messages import FileLanded, FileLandedBatch, PollRequest, is_batch, looks_like_id
from shared.domain.transfer_batches import TransferBatch
from shared.metrics import record_dead_lettered, record_poison_depth
from shared.observability.redaction import redact
from shared.observability.tracing import continued_from, log_fields, messaging_attrs, span

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import MessageQueue, QueuedMessage

log = logging.getLogger(__name__)

POISON_SUFFIX = "-poison"
#: Marks a Wharf dead-letter envelope (its version): a poison message without it was put there by the host.
ENVELOPE_KEY = "wharf_dead_letter"
ENVELOPE_VERSION = 1
UNKNOWN_REASON = "reason unknown (host retries exhausted)"
#: The envelope's JSON must fit a queue message (the adapters refuse more than 48 KiB before base64).
_ENVELOPE_LIMIT = 44 * 1024
#: How many messages `take` looks through, at most, for one id (a poison queue is read 32 at a time).
DEFAULT_SCAN = 1000
#: Seconds the messages `take` looks through stay hidden (released as soon as the search ends).
SCAN_HIDE_SECONDS = 60
_SYSTEM = "azure_storage_queue"


def poison_queue(queue: str) -> str:
    """`file-landed` -> `file-landed-poison`; a poison queue's name is returned as it is."""
    return queue if queue.endswith(POISON_SUFFIX) else f"{queue}{POISON_SUFFIX}"


def source_queue(poison: str) -> str:
    """`file-landed-poison` -> `file-landed`."""
    return poison[: -len(POISON_SUFFIX)] if poison.endswith(POISON_SUFFIX) else poison


def watched_queues(services: Services) -> list[str]:
    """The poison queues of the queues Wharf's triggers read (poll requests, landed files, transfer batches)."""
    s = services.settings
    return [poison_queue(q) for q in (s.poll_queue, s.landed_queue, s.transfer_queue, s.redelivery_queue)]


# --------------------------------------------------------------------------------------------- arrival


@dataclass(frozen=True)
class Delivery:
    """One delivery of a queue message to a trigger: what the host handed over (the body base64-decoded)."""

    queue: str
    id: str
    body: bytes
    dequeue_count: int = 0
    inserted_at: datetime | None = None


def delivery_of(queue: str, msg: Any) -> Delivery:
    """A Delivery from the `func.QueueMessage` a trigger gets (fields the host did not set are left empty)."""
    inserted = getattr(msg, "insertion_time", None)
    return Delivery(queue=queue, id=str(getattr(msg, "id", None) or ""), body=bytes(msg.get_body() or b""),
                    dequeue_count=int(getattr(msg, "dequeue_count", None) or 0),
                    inserted_at=inserted if isinstance(inserted, datetime) else None)


def accept_file_landed(services: Services, delivery: Delivery) -> dict[str, Any] | None:
    """The orchestration reference of a file-landed message, or None when it was bad and is dead-lettered.

    Checked: a JSON object, FileLanded's fields (safe names, a landing container, id formats), a job that
    exists and is this partner's and this file's, a partner in the catalogue. Transient errors raise."""
    try:
        return _check_file_landed(services, delivery)
    except BadMessageError as exc:
        dead_letter(services, delivery, exc)
        return None


def accept_file_landed_many(services: Services, delivery: Delivery) -> list[dict[str, Any]]:
    """The orchestration references of a file-landed message: one for a FileLanded, one per good entry of a
    FileLandedBatch (a recorded batch of files in one message).

    A bad message is dead-lettered whole, as `accept_file_landed` does. A bad entry of a good batch is
    dead-lettered alone, with its own reason: its envelope holds the entry as the body and `<message id>#<index>`
    as the message id (so `wharf poison requeue` sends it back as a single FileLanded); the other entries go on.
    Transient errors raise: the host retries the whole delivery (starting is idempotent per job id)."""
    try:
        data = decode_host_message(delivery.body)
        if not is_batch(data):
            return [_check_landed(services, data)]
        batch = parse_message(FileLandedBatch, data)
    except BadMessageError as exc:
        dead_letter(services, delivery, exc)
        return []
    refs: list[dict[str, Any]] = []
    with span("intake.file_landed_batch", {"wharf.files": len(batch.files)}) as s:
        for index, entry in enumerate(batch.files):
            try:
                refs.append(_check_landed(services, entry))
            except BadMessageError as exc:
                part = replace(delivery, id=f"{delivery.id}#{index}" if delivery.id else f"#{index}",
                               body=json.dumps(entry).encode("utf-8"))
                dead_letter(services, part, exc)
        s.set_attribute("wharf.dead_lettered", len(batch.files) - len(refs))
    return refs


def _check_file_landed(services: Services, delivery: Delivery) -> dict[str, Any]:
    return _check_landed(services, decode_host_message(delivery.body))


def _check_landed(services: Services, data: dict[str, Any]) -> dict[str, Any]:
    from shared.services.intake import orchestration_input

    message = parse_message(FileLanded, data)
    try:
        job = services.jobs.get_job(message.job_id)
    except NotFoundError as exc:
        raise BadMessageError(BadMessageReason.UNKNOWN_JOB, f"there is no job {message.job_id} (a file-landed "
                              "message always follows its job)", job_id=message.job_id) from exc
    named = f"{message.container}/{message.blob_path}"
    if job.partner != message.partner or (job.blob_path and job.blob_path != named):
        raise BadMessageError(BadMessageReason.JOB_MISMATCH,
                              f"the message names partner {message.partner} and file {named}, but job {job.job_id} "
                              f"is partner {job.partner}'s, file {job.blob_path or '(none recorded)'}",
                              job_id=message.job_id, partner=message.partner)
    _require_partner(services, message.partner, job_id=message.job_id)
    return orchestration_input(message.to_message())


def accept_poll_request(services: Services, delivery: Delivery) -> tuple[PollRequest, dict[str, str]] | None:
    """The poll request and its trace carrier, or None when it was bad and is dead-lettered (a partner that is
    not in the catalogue, or has no source on that channel, included). Transient errors raise."""
    try:
        return _check_poll_request(services, delivery)
    except BadMessageError as exc:
        dead_letter(services, delivery, exc)
        return None


def _check_poll_request(services: Services, delivery: Delivery) -> tuple[PollRequest, dict[str, str]]:
    data = decode_host_message(delivery.body)
    request = parse_message(PollRequest, data)
    partner = _require_partner(services, request.partner)
    if (partner.sftp if request.channel == "sftp" else partner.mailbox) is None:
        raise BadMessageError(BadMessageReason.NO_SOURCE, f"partner {request.partner} has no {request.channel} "
                              "source in the catalogue", partner=request.partner)
    return request, _carrier(data)


def accept_transfer_batch(services: Services, delivery: Delivery) -> tuple[TransferBatch, dict[str, str]] | None:
    """The transfer batch and its trace carrier (the poll's), or None when it was bad and is dead-lettered (not
    a TransferBatch, or a partner not in the catalogue or without an sftp source). Transient errors raise."""
    try:
        data = decode_host_message(delivery.body)
        batch = parse_message(TransferBatch, data)
        if _require_partner(services, batch.partner).sftp is None:
            raise BadMessageError(BadMessageReason.NO_SOURCE, f"partner {batch.partner} has no sftp source in the "
                                  "catalogue", partner=batch.partner)
    except BadMessageError as exc:
        dead_letter(services, delivery, exc)
        return None
    return batch, _carrier(data)


def _require_partner(services: Services, partner_id: str, *, job_id: str = "") -> Any:
    catalog = services.catalog  # a catalogue that does not load raises (CatalogError): retried, not dead-lettered
    if partner_id not in catalog:
        raise BadMessageError(BadMessageReason.UNKNOWN_PARTNER, f"partner {partner_id} is not in the catalogue "
                              "(removed, or never added)", job_id=job_id, partner=partner_id)
    return catalog.get(partner_id)


def _carrier(data: Mapping[str, Any]) -> dict[str, str]:
    return {k: v for k, v in data.items() if k in ("traceparent", "tracestate") and isinstance(v, str) and v}


def _body_carrier(body: bytes) -> dict[str, str]:
    """The trace a bad message carries, if it is JSON enough to carry one."""
    try:
        return _carrier(decode_host_message(body))
    except BadMessageError:
        return {}


# --------------------------------------------------------------------------------------------- dead-lettering


def dead_letter(services: Services, delivery: Delivery, error: BadMessageError, *,
                now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """Move a bad message to `<queue>-poison` now, with the reason; returns the envelope.

    First the reason is recorded on the job, when the message names one that exists (once per message id:
    a retry after a failure below does not record it twice): a PENDING job, which nothing else would run,
    becomes FAILED (job.failed published); any other a note. Then the envelope is sent. Anything failing
    raises (the host retries the delivery); nothing here creates a job."""
    poison = poison_queue(delivery.queue)
    job_id = error.job_id if looks_like_id(error.job_id) else ""
    attrs = {**messaging_attrs(_SYSTEM, delivery.queue, "settle", message_id=delivery.id or None),
             "wharf.dead_letter.reason": error.reason.value, "wharf.job_id": job_id or None,
             "wharf.partner": error.partner or None}
    with continued_from(_body_carrier(delivery.body)), span("queue.dead_letter", attrs) as s:
        doc = envelope(delivery, error, job_id=job_id, at=now())
        recorded = _record_on_job(services, delivery, error, job_id, poison) if job_id else ""
        s.set_attribute("wharf.dead_letter.job_recorded", recorded or "none")
        services.queues.send(poison, doc)
        record_dead_lettered(delivery.queue, error.reason)
        log.warning("queue message %s dead-lettered to %s (%s): %s", delivery.id or "(no id)", poison,
                    error.reason.value, redact(error.detail),
                    extra=log_fields(job_id or None, queue=delivery.queue, poison_queue=poison,
                                     message_id=delivery.id, reason=error.reason.value,
                                     dequeue_count=delivery.dequeue_count, job_recorded=recorded or "none"))
        _read_depth(services.queues, poison)
        return doc


def envelope(delivery: Delivery, error: BadMessageError, *, job_id: str, at: datetime) -> dict[str, Any]:
    """What goes on the poison queue: the reason, where it came from, and the original body (as text when it is
    UTF-8, else base64), cut (and flagged, with the whole body's sha256) only if it would not fit a message."""
    body = delivery.body
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    doc: dict[str, Any] = {
        ENVELOPE_KEY: ENVELOPE_VERSION, "reason": error.reason.value, "detail": redact(error.detail)[:2000],
        "queue": delivery.queue, "message_id": delivery.id, "dequeue_count": delivery.dequeue_count,
        "inserted_at": delivery.inserted_at.astimezone(UTC).isoformat() if delivery.inserted_at else None,
        "dead_lettered_at": at.astimezone(UTC).isoformat(), "job_id": job_id, "partner": error.partner[:100],
        "body_encoding": "text" if text is not None else "base64", "body_bytes": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(), "body_truncated": False,
        "body": text if text is not None else base64.b64encode(body).decode("ascii"),
    }
    keep = len(body)
    while len(json.dumps(doc).encode()) > _ENVELOPE_LIMIT and keep > 0:
        keep //= 2
        cut = body[:keep]
        doc["body_truncated"] = True
        doc["body"] = cut.decode("utf-8", "ignore") if text is not None else base64.b64encode(cut).decode("ascii")
    return doc


def _record_on_job(services: Services, delivery: Delivery, error: BadMessageError, job_id: str,
                   poison: str) -> str:
    """'failed', 'noted', 'already' (recorded by an earlier attempt), or '' (no such job: nothing created)."""
    from shared.services import process

    try:
        job = services.jobs.get_job(job_id)
    except NotFoundError:
        return ""
    if delivery.id and any(e.type is EventType.NOTE and (e.data.get("dead_letter") or {}).get("message_id")
                           == delivery.id for e in services.jobs.events(job_id)):
        return "already"
    action = (f"fix the cause, then `wharf poison requeue {poison} {delivery.id}`"
              + (f" or `wharf replay {job_id}`" if job.blob_path else ""))
    reason = redact(f"its {delivery.queue} message was dead-lettered to {poison} ({error.reason.value}): "
                    f"{error.detail}; {action}")[:2000]
    services.jobs.append(job_id, EventType.NOTE, {
        "reason": reason, "dead_letter": {"queue": delivery.queue, "poison_queue": poison,
                                          "message_id": delivery.id, "reason": error.reason.value}})
    fail = job.status is JobStatus.PENDING and error.reason is not BadMessageReason.JOB_MISMATCH
    services.jobs.log(job_id, "ERROR" if fail else "WARNING", f"intake refused: {reason}")
    if not fail:
        return "noted"
    process.fail_job(services, {"job_id": job_id, "partner": job.partner, "file_name": job.file_name,
                                "step": "intake", "reason": reason, "recorded_by": "intake"})
    return "failed"


# --------------------------------------------------------------------------------------------- watching


def poison_depths(services: Services) -> dict[str, int]:
    """Messages waiting in each watched poison queue (approximate, as the service counts), by queue name;
    also set as the gauge wharf.queue.poison_depth{queue}. A queue that cannot be read is left out."""
    depths: dict[str, int] = {}
    with span("queue.poison_depths"):
        for queue in watched_queues(services):
            depth = _read_depth(services.queues, queue)
            if depth is not None:
                depths[queue] = depth
    return depths


def poison_health(services: Services, *, queue_reachable: bool = True) -> dict[str, Any]:
    """The `poison` section of the health details: each watched poison queue's depth. Not read when the queue
    service is already known to be down (the details say so under storage.queue)."""
    if not queue_reachable:
        return {"state": "unknown", "detail": "the queue service is unavailable"}
    depths = poison_depths(services)
    missing = [q for q in watched_queues(services) if q not in depths]
    total = sum(depths.values())
    state = "unknown" if missing else ("messages_waiting" if total else "ok")
    out: dict[str, Any] = {"state": state, "depths": depths, "total": total}
    if total:
        out["detail"] = "dead-lettered messages are waiting: `wharf poison list`"
    if missing:
        out["unread"] = missing
    return out


def record_poison_depths(services: Services) -> None:
    """poison_depths for a timer: never raises (a storage outage is the sweep's and health's to report)."""
    try:
        poison_depths(services)
    except Exception:  # watching must never fail the timer it runs in
        log.warning("poison queue depths not read", exc_info=True)


def _read_depth(queues: MessageQueue, queue: str) -> int | None:
    try:
        depth = queues.depth(queue)
    except Exception as exc:  # noqa: BLE001 - a gauge reading is best effort; the caller says what is missing
        log.warning("depth of %s not read: %s", queue, type(exc).__name__)
        return None
    record_poison_depth(queue, depth)
    return depth


# --------------------------------------------------------------------------------------------- operating


@dataclass(frozen=True)
class PoisonMessage:
    """A message in a poison queue, as an operator sees it: Wharf's envelope unwrapped, or a message the host
    poisoned itself (its original body, no reason)."""

    queue: str  # the poison queue
    id: str
    inserted_at: datetime | None
    dequeue_count: int
    reason: str
    detail: str
    job_id: str
    source_queue: str
    body: bytes  # the original body (as the trigger was handed it)
    body_truncated: bool = False
    dead_lettered_at: str = ""
    original_id: str = ""
    envelope: bool = False
    body_sha256: str = ""

    @classmethod
    def from_queued(cls, queue: str, message: QueuedMessage) -> PoisonMessage:
        doc = _envelope_of(message.body)
        if doc is None:
            return cls(queue=queue, id=message.id, inserted_at=message.inserted_at,
                       dequeue_count=message.dequeue_count, source_queue=source_queue(queue), reason=UNKNOWN_REASON,
                       detail="", job_id=_job_id_in(message.body), body=message.body,
                       body_sha256=hashlib.sha256(message.body).hexdigest())
        raw = str(doc.get("body") or "")
        try:
            body = base64.b64decode(raw) if doc.get("body_encoding") == "base64" else raw.encode("utf-8")
        except ValueError:
            body = raw.encode("utf-8")
        return cls(queue=queue, id=message.id, inserted_at=message.inserted_at, dequeue_count=message.dequeue_count,
                   source_queue=source_queue(queue), reason=str(doc.get("reason") or "unknown"),
                   detail=str(doc.get("detail") or ""), job_id=str(doc.get("job_id") or ""), body=body,
                   body_truncated=bool(doc.get("body_truncated")),
                   dead_lettered_at=str(doc.get("dead_lettered_at") or ""),
                   original_id=str(doc.get("message_id") or ""), envelope=True,
                   body_sha256=str(doc.get("body_sha256") or ""))

    def body_text(self) -> str:
        """The original body for a terminal: the text, or `base64:...` when it is not UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(self.body).decode("ascii")

    def to_dict(self, *, body: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queue": self.queue, "id": self.id,
            "inserted_at": self.inserted_at.astimezone(UTC).isoformat() if self.inserted_at else None,
            "dequeue_count": self.dequeue_count, "reason": self.reason, "detail": self.detail,
            "job_id": self.job_id, "source_queue": self.source_queue, "dead_lettered_by": (
                "wharf" if self.envelope else "host"), "dead_lettered_at": self.dead_lettered_at or None,
            "original_message_id": self.original_id or None, "body_bytes": len(self.body),
            "body_truncated": self.body_truncated}
        if body:
            out["body"] = self.body_text()
        return out


def _envelope_of(body: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get(ENVELOPE_KEY) == ENVELOPE_VERSION else None


def _job_id_in(body: bytes) -> str:
    try:
        value = json.loads(body).get("job_id")
    except (ValueError, AttributeError):
        return ""
    return value if looks_like_id(value) else ""


@dataclass(frozen=True)
class PoisonListing:
    queue: str
    depth: int
    messages: list[PoisonMessage]

    def to_dict(self) -> dict[str, Any]:
        return {"queue": self.queue, "depth": self.depth,
                "messages": [m.to_dict(body=False) for m in self.messages]}


def list_poison(services: Services, queue: str | None = None, *, limit: int = 32) -> list[PoisonListing]:
    """The first `limit` (at most 32: what the service lets anyone peek) messages of one poison queue, or of
    every watched one, untouched, with each queue's depth."""
    queues = [poison_queue(queue)] if queue else watched_queues(services)
    out = []
    with span("poison.list"):
        for name in queues:
            found = [PoisonMessage.from_queued(name, m) for m in services.queues.peek_raw(name, max(1, min(limit, 32)))]
            depth = _read_depth(services.queues, name)
            out.append(PoisonListing(queue=name, depth=depth if depth is not None else len(found), messages=found))
    return out


def show(services: Services, queue: str, message_id: str, *, scan: int = DEFAULT_SCAN) -> PoisonMessage:
    """One poison message by id: peeked when among the first 32, else found by receiving (and released at once)."""
    name = poison_queue(queue)
    with span("poison.show", messaging_attrs(_SYSTEM, name, "receive", message_id=message_id)):
        for m in services.queues.peek_raw(name, 32):
            if m.id == message_id:
                return PoisonMessage.from_queued(name, m)
        taken = take(services.queues, name, message_id, scan=scan)
        try:
            return PoisonMessage.from_queued(name, taken)
        finally:
            _release(services.queues, name, [taken])


def requeue(services: Services, queue: str, message_id: str, *, scan: int = DEFAULT_SCAN) -> PoisonMessage:
    """Put a poison message's original body back on its source queue, then delete it from the poison queue.

    A truncated envelope is refused (its body is not whole). If the delete fails after the send, the error says
    so: the message is then on both queues (intake is idempotent by job id; drop the poison copy)."""
    name = poison_queue(queue)
    target = source_queue(name)
    with span("poison.requeue", messaging_attrs(_SYSTEM, name, "settle", message_id=message_id)) as s:
        taken = take(services.queues, name, message_id, scan=scan)
        message = PoisonMessage.from_queued(name, taken)
        if message.body_truncated:
            _release(services.queues, name, [taken])
            raise WharfError(f"message {message_id} cannot be requeued: its envelope holds only the first bytes "
                             f"of a {message.body_sha256[:12]}... body that was too large to keep whole")
        try:
            new_id = services.queues.send_raw(target, message.body)
        except BaseException:
            _release(services.queues, name, [taken])
            raise
        s.set_attribute("wharf.requeued_as", new_id)
        try:
            services.queues.delete(name, taken.id, taken.pop_receipt)
        except NotFoundError as exc:
            raise WharfError(f"message {message_id} was requeued to {target} as {new_id}, but it stayed in {name} "
                             f"(it was received by someone else meanwhile): drop it with `wharf poison drop {name} "
                             f"{message_id}`") from exc
        log.info("poison message %s requeued to %s as %s", message_id, target, new_id,
                 extra=log_fields(message.job_id or None, queue=name, message_id=message_id, requeued_as=new_id))
        if message.job_id and looks_like_id(message.job_id):
            _note_operator(services, message.job_id, f"its dead-lettered message {message_id} was requeued to "
                                                     f"{target} (as {new_id}) by an operator")
        _read_depth(services.queues, name)
        return message


def drop(services: Services, queue: str, message_id: str, *, scan: int = DEFAULT_SCAN) -> PoisonMessage:
    """Delete one poison message for good."""
    name = poison_queue(queue)
    with span("poison.drop", messaging_attrs(_SYSTEM, name, "settle", message_id=message_id)):
        taken = take(services.queues, name, message_id, scan=scan)
        message = PoisonMessage.from_queued(name, taken)
        services.queues.delete(name, taken.id, taken.pop_receipt)
        log.info("poison message %s dropped from %s", message_id, name,
                 extra=log_fields(message.job_id or None, queue=name, message_id=message_id))
        if message.job_id and looks_like_id(message.job_id):
            _note_operator(services, message.job_id, f"its dead-lettered message {message_id} was dropped from "
                                                     f"{name} by an operator")
        _read_depth(services.queues, name)
        return message


def _note_operator(services: Services, job_id: str, text: str) -> None:
    try:
        services.jobs.get_job(job_id)
    except NotFoundError:
        return
    services.jobs.append(job_id, EventType.NOTE, {"reason": text, "recorded_by": "wharf poison"})
    services.jobs.log(job_id, "INFO", text)


def take(queues: MessageQueue, queue: str, message_id: str, *, scan: int = DEFAULT_SCAN,
         hide: int = SCAN_HIDE_SECONDS, clock: Callable[[], float] = time.monotonic) -> QueuedMessage:
    """Receive the message `message_id` (hidden, with its pop receipt: the caller deletes or releases it).

    A storage queue gives pop receipts only to what it hands out, 32 at a time, oldest first: the messages
    received on the way are held hidden (so the next batch is new ones) and released once the search ends.
    Bounded: at most `scan` messages and `hide` seconds; NotFoundError when the id was not among them."""
    held: dict[str, QueuedMessage] = {}
    found: QueuedMessage | None = None
    deadline = clock() + max(hide - 10, 5)
    try:
        while found is None and len(held) < scan and clock() < deadline:
            batch = queues.receive(queue, max_messages=min(32, scan - len(held)), visibility_timeout=hide)
            fresh = 0
            for m in batch:
                if m.id == message_id:
                    found = m
                    continue
                fresh += m.id not in held
                held[m.id] = m  # the latest receipt: a message seen again (its hiding ran out) has a new one
            if not fresh and found is None:  # nothing new is coming (empty, or only messages seen already)
                break
    finally:
        _release(queues, queue, held.values())
    if found is not None:
        return found
    limit = f", the limit of {scan}" if len(held) >= scan else ""
    raise NotFoundError(f"no message {message_id} in {queue} (looked through {len(held)} message(s){limit}); "
                        f"`wharf poison list {queue}` shows the first 32")


def _release(queues: MessageQueue, queue: str, messages: Iterable[QueuedMessage]) -> None:
    for m in messages:
        try:
            queues.release(queue, m.id, m.pop_receipt)
        except Exception as exc:  # noqa: BLE001 - it becomes visible again when its hiding runs out anyway
            log.info("poison message %s not released (%s); visible again in a minute", m.id, type(exc).__name__)
