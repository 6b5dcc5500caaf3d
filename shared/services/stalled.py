"""Stuck jobs: a job neither COMPLETED nor FAILED WHARF_STALLED_MINUTES after its creation is stalled. The jobs
sweep records `job.stalled` once per job (and counts wharf.jobs.stalled); `resume` sends the job's landed file
to the file-landed queue again, so intake starts its orchestration when none exists (devhost lost its in-memory
orchestrations on a restart, an instance was purged), and the activities skip the steps already completed. The
message carries `restart_before` (the request's time): an instance created before it, a hung one included, is
terminated first (durable client terminate) and started again (shared/services/intake.py, start_processing)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.job_index import JobQuery
from shared.domain.jobs import EventType, Job, JobEvent, JobStatus, utcnow
from shared.domain.messages import FileLanded
from shared.metrics import METER_NAME
from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)
JOBS_STALLED = "wharf.jobs.stalled"
_OPEN = (JobStatus.PENDING, JobStatus.RUNNING)
_WINDOW = timedelta(days=7)  # how far back the sweep looks for stalled jobs
_MAX = 500


@cache
def _counter() -> Any:
    return metrics.get_meter(METER_NAME).create_counter(JOBS_STALLED, unit="{job}",
                                                        description="Jobs found stalled (job.stalled recorded)")


def is_stalled(job: Job, now: datetime, minutes: float) -> bool:
    return job.status in _OPEN and now - job.created_at >= timedelta(minutes=minutes)


def mark_stalled(services: Services, *, now: datetime,
                 events: Mapping[str, Sequence[JobEvent]] | None = None) -> list[str]:
    """Record job.stalled on every stalled job that does not have it yet; their ids. `events`: job events the
    caller read already, by job id (the sweep's, shared/services/sweep.py); the other jobs' are read here."""
    known = events or {}
    minutes = services.settings.stalled_minutes
    marked: list[str] = []
    with span("jobs.stalled", {"wharf.stalled_minutes": minutes}) as s:
        for status in _OPEN:
            query = JobQuery(status=status.value, since=now - _WINDOW, until=now - timedelta(minutes=minutes))
            for job in services.jobs.query_jobs(query, limit=_MAX, now=now).jobs:
                read = known[job.job_id] if job.job_id in known else services.jobs.events(job.job_id)
                if any(e.type is EventType.STALLED for e in read):
                    continue
                age = round((now - job.created_at).total_seconds() / 60)
                # From the events: a listed job is its JobsByTime row, which does not hold the steps.
                steps = [str(e.data.get("step", "")) for e in read if e.type is EventType.STEP_COMPLETED]
                services.jobs.append(job.job_id, EventType.STALLED, {
                    "minutes": age, "status": job.status.value, "last_step": steps[-1] if steps else ""})
                services.jobs.log(job.job_id, "WARNING", f"stalled: {job.status.value} {age} minute(s) after "
                                                         "creation; `wharf jobs resume` restarts it")
                _counter().add(1, {"wharf.partner": job.partner, "wharf.job.status": job.status.value})
                log.warning("job stalled", extra=log_fields(job.job_id, partner=job.partner, minutes=age))
                marked.append(job.job_id)
        s.set_attribute("wharf.stalled", len(marked))
    return marked


def resume(services: Services, job_id: str, *, by: str) -> dict[str, Any]:
    """Queue the job's landed file again (same job id, `restart_before` now): intake terminates the job's
    orchestration if one created before now is still running, and starts it again.
    ConflictError for a finished job (replay it instead), NotFoundError for a job with no landed file."""
    with span("jobs.resume", {"wharf.job_id": job_id}):
        job = services.jobs.get_job(job_id)
        if job.status not in _OPEN:
            raise ConflictError(f"job {job_id} is {job.status.value}; replay it to run it again")
        if not job.blob_path:
            raise NotFoundError(f"job {job_id} has no landed file recorded; there is nothing to resume")
        container, _, path = job.blob_path.partition("/")
        transfers = services.jobs.transfers(job_id)
        message = FileLanded(job_id=job_id, partner=job.partner, container=container, blob_path=path,
                             file_name=job.file_name, bytes=job.bytes, sha256=job.sha256,
                             transfer_id=transfers[0].transfer_id if transfers else "", source=job.source or "resume",
                             restart_before=utcnow())
        services.queues.send(services.settings.landed_queue, message.to_message())
        from_step = job.steps_completed[-1] if job.steps_completed else "start"
        note = f"resume requested by {by}: re-queued; steps done so far: {', '.join(job.steps_completed) or 'none'}"
        services.jobs.append(job_id, EventType.NOTE, {"action": "resume", "by": by, "message": note})
        services.jobs.log(job_id, "INFO", note)
        log.info("job resume queued", extra=log_fields(job_id, partner=job.partner, by=by))
        return {"job_id": job_id, "status": "queued", "from_step": from_step}
