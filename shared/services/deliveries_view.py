"""Deliveries for operators: list, show, and redeliver (re-send one delivery of a job on purpose).

A redelivery is a new Deliveries record of the job (the next free index, at least REDELIVERY_BASE) linked to
the one it re-sends (`redelivery_of`), delivered now by the same destination kind from the job's processed
output, with a `delivery.redelivered` event on the job saying how it went. The destination is the route's
destination at that index in the catalogue as it is now (a route that is gone cannot be redelivered).
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


def redeliver(services: Services, job_id: str, *, destination: int | None = None,
              by: str = "cli") -> list[dict[str, Any]]:
    """Re-send the job's failed deliveries (or the one `destination` names) as new, linked delivery records.
    Returns their rows; raises the delivery's error (after recording it) when one fails."""
    from shared.services.process import route_file

    with span("deliveries.redeliver", {"wharf.job_id": job_id}) as s:
        job = services.jobs.get_job(job_id)
        s.set_attribute("wharf.partner", job.partner)
        records = services.deliveries.for_job(job_id)
        chosen = _chosen(records, destination)
        output = job_output(services, job_id)
        delivered = [{k: v for k, v in e.data.items() if k not in ("route", "index")}
                     for e in services.jobs.events(job_id) if e.type is EventType.ROUTED]
        container, _, blob_path = job.blob_path.partition("/")
        rows: list[dict[str, Any]] = []
        failure: Exception | None = None
        for old in chosen:
            original = _original(records, old)
            dest = _destination(services, job, old, original)
            index = _new_record(services, job_id, old, max(d.index for d in services.deliveries.for_job(job_id)))
            fields = log_fields(job_id, partner=job.partner, index=index, redelivery_of=old.index, kind=old.kind)
            log.info("redelivering", extra=fields)
            ref = {"job_id": job_id, "partner": job.partner, "container": container, "blob_path": blob_path,
                   "file_name": job.file_name, "route": old.route, "index": index, "destination": dest,
                   "output": output, "delivered": delivered, "redelivery_of": old.index}
            data: dict[str, Any] = {"index": index, "redelivery_of": old.index, "kind": old.kind, "by": by}
            try:
                result = route_file(services, ref)
            except Exception as exc:  # noqa: BLE001 - recorded on the job, then raised to the operator
                reason = redact(str(exc) or type(exc).__name__)[:1000]
                services.jobs.append(job_id, EventType.REDELIVERED, {**data, "state": "FAILED", "error": reason})
                services.jobs.log(job_id, "WARNING", f"redelivery of delivery {old.index} (as {index}) failed: "
                                                     f"{reason}", trace_id=current_trace_id())
                log.warning("redelivery failed: %s", reason, extra=fields)
                failure = failure or exc
            else:
                services.jobs.append(job_id, EventType.REDELIVERED, {**data, "state": "SENT",
                                                                     "target": str(result.get("target", ""))})
                services.jobs.log(job_id, "INFO", f"delivery {old.index} re-sent on purpose as delivery {index}: "
                                                  f"{result.get('target', '')}", trace_id=current_trace_id())
            rows.append(delivery_row(services.deliveries.get(job_id, index)))
        if failure is not None:
            raise failure
        return rows


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


__all__ = ["REDELIVERY_BASE", "delivery_row", "list_deliveries", "redeliver", "show_delivery"]
