"""Deliveries a crash left behind (part of the jobs sweep, every 5 minutes): a Deliveries row PENDING or SENDING
untouched WHARF_DELIVERY_STALE_MINUTES (longer than functionTimeout, so no attempt can still be running) is

- a redelivery (`redelivery_of` set; its worker died, its message was lost or went to the poison queue, or an
  older CLI process was interrupted): queued again on the redeliveries queue, which takes the record over where
  its step says, at most WHARF_REDELIVERY_REQUEUE_MAX times; then FAILED with the reason;
- a route's own delivery of a job that has ended (COMPLETED or FAILED): nothing will run it again, so FAILED with
  the reason (`wharf redeliver JOB --destination N` sends it again);
- a route's own delivery of a job still open: left to its orchestration (the activity's retries take SENDING
  over), the jobs sweep and stalled-job detection (`wharf jobs resume`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from shared.domain.delivery import Delivery, DeliveryState
from shared.domain.errors import NotFoundError
from shared.domain.jobs import EventType, JobStatus
from shared.domain.messages import RedeliveryRequest
from shared.observability.redaction import redact
from shared.observability.tracing import log_fields, span
from shared.services.deliveries_view import mark_failed

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)
REQUEUED = "redelivery.requeued"
_SCAN = 5000  # rows of one state looked at per run (a filtered table scan: operators' volume, not a hot path)


@dataclass
class DeliverySweep:
    """What one run did, as "job_id/index" strings."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # a route's delivery of an open job (its orchestration's)


def sweep_deliveries(services: Services, *, now: datetime) -> DeliverySweep:
    settings = services.settings
    cutoff = now - timedelta(minutes=settings.delivery_stale_minutes)
    out = DeliverySweep()
    with span("deliveries.sweep", {"wharf.stale_minutes": settings.delivery_stale_minutes}) as s:
        for state in (DeliveryState.SENDING, DeliveryState.PENDING):
            for d in services.deliveries.list_deliveries(state=state.value, limit=_SCAN):
                if d.updated_at is not None and d.updated_at > cutoff:
                    continue
                try:
                    _one(services, d, now, out)
                except Exception as exc:  # noqa: BLE001 - one row must not stop the others; logged
                    log.warning("delivery sweep could not handle a delivery: %s", redact(str(exc))[:300],
                                extra=log_fields(d.job_id, index=d.index))
        for key in ("requeued", "failed", "left"):
            s.set_attribute(f"wharf.deliveries.{key}", len(getattr(out, key)))
    return out


def _since(d: Delivery) -> str:
    return d.updated_at.isoformat(timespec="seconds") if d.updated_at else "an unknown time"


def _one(services: Services, d: Delivery, now: datetime, out: DeliverySweep) -> None:
    name = f"{d.job_id}/{d.index}"
    try:
        job = services.jobs.get_job(d.job_id)
    except NotFoundError:
        job = None
    step = f", step {d.step.value}" if d.step.value else ""
    if d.redelivery_of is not None:
        requeues = sum(1 for e in services.jobs.events(d.job_id) if e.type is EventType.NOTE
                       and e.data.get("action") == REQUEUED and e.data.get("index") == d.index) if job else 0
        if job is not None and requeues < services.settings.redelivery_requeue_max:
            services.queues.send(services.settings.redelivery_queue,
                                 RedeliveryRequest(job_id=d.job_id, index=d.index, requested_by="sweep").to_message())
            note = (f"redelivery {d.index} was left {d.state.value} since {_since(d)}{step} (its attempt was "
                    f"interrupted): queued again ({requeues + 1} of {services.settings.redelivery_requeue_max})")
            services.jobs.append(d.job_id, EventType.NOTE, {"action": REQUEUED, "index": d.index, "by": "sweep",
                                                            "message": note})
            services.jobs.log(d.job_id, "WARNING", note)
            log.warning("stale redelivery queued again", extra=log_fields(d.job_id, index=d.index,
                                                                          state=d.state.value))
            out.requeued.append(name)
            return
        reason = (f"redelivery interrupted: left {d.state.value} since {_since(d)}{step} and queued again "
                  f"{requeues} time(s) by the sweep without finishing; `wharf redeliver {d.job_id} --destination "
                  f"{d.redelivery_of}` sends it again")
    elif job is None or job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        ended = f"the job is {job.status.value}" if job else "the job is gone"
        reason = (f"delivery interrupted: left {d.state.value} since {_since(d)}{step} and {ended}, so nothing "
                  f"will retry it; `wharf redeliver {d.job_id} --destination {d.index}` sends it again")
    else:
        out.left.append(name)
        return
    if mark_failed(services, d.job_id, d.index, reason):
        if job is not None:
            services.jobs.append(d.job_id, EventType.NOTE, {"action": "delivery.abandoned", "index": d.index,
                                                            "by": "sweep", "message": reason})
            services.jobs.log(d.job_id, "WARNING", reason)
        log.warning("stale delivery marked FAILED", extra=log_fields(d.job_id, index=d.index, state=d.state.value))
        out.failed.append(name)
