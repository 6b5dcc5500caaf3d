"""Deliveries for operators: list, show, and redeliver (re-send one delivery of a job on purpose).

A redelivery is a new Deliveries record of the job (the next free index, at least REDELIVERY_BASE) linked to
the one it re-sends (`redelivery_of`). Asking (`request_redelivery`: `wharf redeliver`, the API) records it
PENDING and queues a RedeliveryRequest; the function app's worker (`on_redelivery`) delivers it by the same
destination kind from the job's processed output, with a `delivery.redelivered` event on the job saying how it
went. A record a crash left PENDING or SENDING is found by the sweep (shared/services/delivery_sweep.py). The
destination is the route's destination at that index in the catalogue as it is now (a route that is gone
cannot be redelivered).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.domain.delivery import Delivery, DeliveryState
from shared.domain.errors import ConflictError, NotFoundError, WharfError
from shared.domain.jobs import EventType, utcnow
from shared.observability.redaction import redact
from shared.observability.tracing import current_trace_id, log_fields, span
from shared.services.outbound import direction_of, job_output, outbound_routes

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

#: Redeliveries take indexes from here up, so they never take the index of one of a route's own destinations.
REDELIVERY_BASE = 100


def delivery_row(d: Delivery) -> dict[str, Any]:
    return {"job_id": d.job_id, "index": d.index, "partner": d.partner, "kind": d.kind, "target": d.target,
            "route": d.route, "state": d.state.value, "step": d.step.value, "remote_path": d.remote_path,
            "bytes": d.bytes, "sha256": d.sha256, "attempts": d.attempts, "error": d.error, "verified": d.verified,
            "redelivery_of": d.redelivery_of,
            "created_at": d.created_at.isoformat() if d.created_at else "",
            "updated_at": d.updated_at.isoformat() if d.updated_at else "",
            "sent_at": d.sent_at.isoformat() if d.sent_at else ""}


def list_deliveries(services: Services, *, job_id: str | None = None, state: str | None = None,
                    partner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    with span("deliveries.list", {"wharf.job_id": job_id or "", "wharf.partner": partner or ""}):
        if job_id:
            found = [d for d in services.deliveries.for_job(job_id)
                     if (state is None or d.state.value == state) and (partner is None or d.partner == partner)]
        else:
            found = services.deliveries.list_deliveries(state=state, partner=partner, limit=limit)
        return [delivery_row(d) for d in found[:limit]]


def show_delivery(services: Services, job_id: str, index: int) -> dict[str, Any]:
    with span("deliveries.show", {"wharf.job_id": job_id, "wharf.destination.index": index}):
        row = delivery_row(services.deliveries.get(job_id, index))
        row["redelivered_by"] = [d.index for d in services.deliveries.for_job(job_id) if d.redelivery_of == index]
        return row


def _original(records: list[Delivery], record: Delivery) -> int:
    """The route's own destination index a record delivers (a redelivery's, followed back)."""
    by_index = {d.index: d for d in records}
    seen = set()
    while record.redelivery_of is not None and record.redelivery_of in by_index and record.index not in seen:
        seen.add(record.index)
        record = by_index[record.redelivery_of]
    return record.redelivery_of if record.redelivery_of is not None else record.index


def _chosen(records: list[Delivery], destination: int | None) -> list[Delivery]:
    if destination is not None:
        for d in records:
            if d.index == destination:
                return [d]
        known = ", ".join(str(d.index) for d in records) or "none"
        raise NotFoundError(f"the job has no delivery {destination} (its deliveries: {known})")
    latest: dict[int, Delivery] = {}
    for d in records:  # by index: a later redelivery replaces what it re-sent
        latest[_original(records, d)] = d
    failed = [d for d in latest.values() if d.state is DeliveryState.FAILED]
    if not failed:
        raise NotFoundError("no delivery of this job failed; name the one to send again with --destination N "
                            f"(its deliveries: {', '.join(str(d.index) for d in records) or 'none'})")
    return failed


def _destination(services: Services, job: Any, record: Delivery, original: int) -> dict[str, Any]:
    events = services.jobs.events(job.job_id)
    direction, _ = direction_of(events)
    routes = outbound_routes(services, job.partner) if direction == "outbound" \
        else list(getattr(services.catalog.get(job.partner), "routes", []) or [])
    for route in routes:
        if route.name == record.route:
            if original >= len(route.destinations):
                break
            dest: dict[str, Any] = route.destinations[original].model_dump(mode="json")
            if dest.get("kind") != record.kind:
                raise WharfError(f"route {record.route!r} destination {original} is now a {dest.get('kind')} "
                                 f"destination, not {record.kind}: not redelivered (replay the job instead)")
            return dest
    raise NotFoundError(f"route {record.route!r} of partner {job.partner} no longer has destination {original} "
                        "in the catalogue: nothing to redeliver to")


def request_redelivery(services: Services, job_id: str, *, destination: int | None = None,
                       by: str = "cli") -> list[dict[str, Any]]:
    """Queue the re-sending of the job's failed deliveries (or the one `destination` names): each a new PENDING
    delivery record linked to the one it re-sends, and a RedeliveryRequest on the redeliveries queue that the
    function app's worker sends (`run_redelivery`). Returns the new records' rows (PENDING).

    NotFoundError / WharfError before anything is written when there is nothing (or nowhere) to re-send. When the
    queue refuses the message the record stays PENDING and the sweep queues it (`sweep_deliveries`);
    DependencyUnavailableError says so."""
    from shared.domain.errors import DependencyUnavailableError
    from shared.domain.messages import RedeliveryRequest

    with span("deliveries.redeliver.request", {"wharf.job_id": job_id, "wharf.requested_by": by}) as s:
        job = services.jobs.get_job(job_id)
        s.set_attribute("wharf.partner", job.partner)
        records = services.deliveries.for_job(job_id)
        chosen = _chosen(records, destination)
        for old in chosen:  # every destination is checked before anything is written
            _destination(services, job, old, _original(records, old))
        rows: list[dict[str, Any]] = []
        unsent: list[int] = []
        for old in chosen:
            index = _new_record(services, job_id, old, max(d.index for d in services.deliveries.for_job(job_id)))
            note = f"redelivery of delivery {old.index} requested by {by}: queued as delivery {index}"
            services.jobs.append(job_id, EventType.NOTE, {"action": "redelivery.requested", "by": by,
                                                          "index": index, "redelivery_of": old.index,
                                                          "message": note})
            services.jobs.log(job_id, "INFO", note, trace_id=current_trace_id())
            try:
                services.queues.send(services.settings.redelivery_queue,
                                     RedeliveryRequest(job_id=job_id, index=index, requested_by=by).to_message())
            except Exception as exc:  # noqa: BLE001 - the PENDING record is what the sweep queues again
                log.warning("redelivery %s could not be queued: %s", index, redact(str(exc))[:300],
                            extra=log_fields(job_id, index=index))
                unsent.append(index)
            log.info("redelivery queued", extra=log_fields(job_id, partner=job.partner, index=index,
                                                            redelivery_of=old.index, by=by))
            rows.append(delivery_row(services.deliveries.get(job_id, index)))
        if unsent:
            raise DependencyUnavailableError(
                "the redeliveries queue", f"redelivery record(s) {unsent} of job {job_id} are recorded PENDING but "
                "the queue refused them; the sweep queues them within WHARF_DELIVERY_STALE_MINUTES (do not ask again)")
        return rows


def run_redelivery(services: Services, job_id: str, index: int, *, by: str = "") -> dict[str, Any]:
    """Send redelivery record `index` of the job (the worker of the redeliveries queue). Idempotent: a record
    already SENT (or after) is left alone; a SENDING one left by a crash is taken over by the delivery (its step
    says what to look for). A failed attempt is recorded (FAILED, a delivery.redelivered event) and not raised:
    the delivery retried what was transient already, and the operator decides whether to send it again."""
    from shared.domain.delivery import AFTER_SENT
    from shared.services.process import route_file

    with span("deliveries.redeliver", {"wharf.job_id": job_id, "wharf.destination.index": index}) as s:
        job = services.jobs.get_job(job_id)
        s.set_attribute("wharf.partner", job.partner)
        record = services.deliveries.get(job_id, index)
        fields = log_fields(job_id, partner=job.partner, index=index, redelivery_of=record.redelivery_of,
                            kind=record.kind)
        if record.redelivery_of is None:
            raise NotFoundError(f"delivery {index} of job {job_id} is a route's own delivery, not a redelivery")
        if record.state in AFTER_SENT or record.state is DeliveryState.FAILED:
            # SENT: this message came again after the send. FAILED: an attempt of this request failed (recorded
            # then) or the sweep gave up on it; the operator asks again for another attempt.
            log.info("redelivery is %s already; not sent again", record.state.value, extra=fields)
            s.set_attribute("wharf.already", record.state.value)
            return delivery_row(record)
        records = services.deliveries.for_job(job_id)
        original = _original(records, record)
        output = job_output(services, job_id)
        delivered = [{k: v for k, v in e.data.items() if k not in ("route", "index")}
                     for e in services.jobs.events(job_id) if e.type is EventType.ROUTED]
        container, _, blob_path = job.blob_path.partition("/")
        data: dict[str, Any] = {"index": index, "redelivery_of": record.redelivery_of, "kind": record.kind, "by": by}
        try:
            dest = _destination(services, job, record, original)
            log.info("redelivering", extra=fields)
            ref = {"job_id": job_id, "partner": job.partner, "container": container, "blob_path": blob_path,
                   "file_name": job.file_name, "route": record.route, "index": index, "destination": dest,
                   "output": output, "delivered": delivered, "redelivery_of": record.redelivery_of}
            result = route_file(services, ref)
        except Exception as exc:  # noqa: BLE001 - recorded on the record and the job
            reason = redact(str(exc) or type(exc).__name__)[:1000]
            mark_failed(services, job_id, index, reason)
            services.jobs.append(job_id, EventType.REDELIVERED, {**data, "state": "FAILED", "error": reason})
            services.jobs.log(job_id, "WARNING", f"redelivery of delivery {record.redelivery_of} (as {index}) "
                                                 f"failed: {reason}", trace_id=current_trace_id())
            log.warning("redelivery failed: %s", reason, extra=fields)
            s.set_attribute("wharf.error", type(exc).__name__)
        else:
            services.jobs.append(job_id, EventType.REDELIVERED, {**data, "state": "SENT",
                                                                 "target": str(result.get("target", ""))})
            services.jobs.log(job_id, "INFO", f"delivery {record.redelivery_of} re-sent on purpose as delivery "
                                              f"{index}: {result.get('target', '')}", trace_id=current_trace_id())
        return delivery_row(services.deliveries.get(job_id, index))


def mark_failed(services: Services, job_id: str, index: int, reason: str) -> bool:
    """The record FAILED with `reason` unless it is SENT (or after) or FAILED already; whether it changed."""
    from dataclasses import replace

    from shared.domain.delivery import AFTER_SENT

    for _ in range(3):
        current = services.deliveries.get(job_id, index)
        if current.state in AFTER_SENT or current.state is DeliveryState.FAILED:
            return False
        try:
            services.deliveries.update(replace(current, state=DeliveryState.FAILED, error=reason,
                                               updated_at=utcnow()))
            return True
        except ConflictError:
            continue  # written meanwhile: look again
    return False


def on_redelivery(services: Services, delivery: Any) -> dict[str, Any] | None:
    """The redeliveries queue's worker: a RedeliveryRequest sent (`run_redelivery`), or a bad message
    dead-lettered with its reason (not a request, no such job or record). Transient errors raise (retried)."""
    from shared.domain.hostmessages import BadMessageError, BadMessageReason, decode_host_message, parse_message
    from shared.domain.messages import RedeliveryRequest
    from shared.observability.tracing import continued_from
    from shared.services import poison

    try:
        data = decode_host_message(delivery.body)
        request = parse_message(RedeliveryRequest, data)
        try:
            services.jobs.get_job(request.job_id)
            services.deliveries.get(request.job_id, request.index)
        except NotFoundError as exc:
            raise BadMessageError(BadMessageReason.UNKNOWN_JOB, str(exc), job_id=request.job_id) from None
    except BadMessageError as exc:
        poison.dead_letter(services, delivery, exc)
        return None
    with continued_from({k: str(v) for k, v in data.items() if k in ("traceparent", "tracestate")}):
        try:
            return run_redelivery(services, request.job_id, request.index, by=request.requested_by)
        except NotFoundError as exc:  # a route's own delivery named: never sendable this way
            poison.dead_letter(services, delivery, BadMessageError(BadMessageReason.INVALID_FIELD, str(exc),
                                                                   job_id=request.job_id))
            return None


def _new_record(services: Services, job_id: str, old: Delivery, highest: int) -> int:
    """Create the redelivery's PENDING record (the next free index, linked to `old`); its index."""
    index = max(highest + 1, REDELIVERY_BASE)
    for _ in range(10):
        try:
            services.deliveries.create(Delivery(
                job_id=job_id, index=index, partner=old.partner, kind=old.kind, target=old.target, route=old.route,
                bytes=old.bytes, sha256=old.sha256, created_at=utcnow(), redelivery_of=old.index))
            return index
        except ConflictError:
            index += 1  # another redelivery took it meanwhile
    raise ConflictError(f"no free delivery index for job {job_id} after {index}")


__all__ = ["REDELIVERY_BASE", "delivery_row", "list_deliveries", "on_redelivery", "request_redelivery",
           "run_redelivery", "show_delivery"]
