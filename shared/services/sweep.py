"""The jobs sweep (timer jobs_sweep): work that never finished is re-sent, completed or failed, with a reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError

from shared.adapters import durable_http
from shared.bootstrap import Services
from shared.domain.errors import WharfError
from shared.domain.job_index import JobQuery
from shared.domain.jobs import EventType, Job, JobEvent, JobStatus
from shared.domain.messages import FileLanded
from shared.observability.redaction import redact
from shared.observability.tracing import log_fields, span
from shared.services import process
from shared.services.repair import repair_recent_jobs
from shared.services.stalled import mark_stalled
from shared.workflows import failure_reason

log = logging.getLogger(__name__)

# OrchestrationRuntimeStatus values of an orchestration that will not run again.
ENDED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
RECORDED_BY = "sweep"
# The most PENDING or RUNNING jobs one run lists per status (a backlog larger than this is swept over several runs).
_SCAN_LIMIT = 10_000
# Orchestration status checks per run, per job the run may act on: jobs whose orchestration is still running
# stay the oldest, and must not keep the sweep from the orphans behind them.
CHECKS_PER_ACTION = 10
_REASON_CHARS = 1000


@dataclass
class SweepSummary:
    """What one run did: job ids by action; `due` counts the jobs old enough, `examined` those looked at."""

    due: int = 0
    examined: int = 0
    alive: int = 0
    resent: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # jobs a crash had left out of the lists (projection)
    stalled: list[str] = field(default_factory=list)  # job.stalled recorded this run (shared/services/stalled.py)
    # Deliveries a crash left PENDING/SENDING (shared/services/delivery_sweep.py), as "job_id/index".
    deliveries_requeued: list[str] = field(default_factory=list)
    deliveries_failed: list[str] = field(default_factory=list)

    @property
    def acted(self) -> int:
        return len(self.resent) + len(self.completed) + len(self.failed) + len(self.errors)


class EventsRead:
    """The events of each job one sweep run looks at, read once (`services.jobs.events` per job at most once a
    run); `read` holds them by job id, for the stalled-job marking that follows (shared/services/stalled.py).
    What the run appends after reading a job's events is not in them: nothing that reads them looks for it (the
    sweep never records job.stalled before the marking does)."""

    def __init__(self, services: Services) -> None:
        self._jobs = services.jobs
        self.read: dict[str, list[JobEvent]] = {}

    def __call__(self, job_id: str) -> list[JobEvent]:
        if job_id not in self.read:
            self.read[job_id] = self._jobs.events(job_id)
        return self.read[job_id]


async def sweep_jobs(services: Services, client: Any, *, now: datetime) -> SweepSummary:
    """Finish what no orchestration will finish. `client` is the durable client (instance id = job id).

    - PENDING, untouched WHARF_PENDING_RESEND_MINUTES, no orchestration: re-sent to the file-landed queue
      (intake starts an orchestration once per job id), at most WHARF_PENDING_RESEND_MAX times, then FAILED.
    - PENDING or RUNNING (untouched WHARF_STALE_RUNNING_MINUTES) whose orchestration ended or is gone: its
      terminal state from what the events and the orchestration's output say (COMPLETED when every delivery
      is recorded and the orchestration completed them; else FAILED with the reason, raw file quarantined).
    - An orchestration still running is left alone.

    Oldest first; a run acts on (or fails to act on) at most WHARF_SWEEP_MAX_JOBS jobs and checks at most
    CHECKS_PER_ACTION times as many orchestrations. Idempotent: terminal jobs are never touched."""
    settings = services.settings
    summary = SweepSummary()
    events = EventsRead(services)
    client = durable_http.harden(client)  # one failed call must not fail every call beside it (decision 110)
    # The storage work runs in worker threads (asyncio.to_thread): this timer shares the worker's one event loop
    # with every intake, and listing thousands of jobs there would hold them all (decision 111).
    with span("jobs.sweep", {"wharf.sweep.max_jobs": settings.sweep_max_jobs}) as s:
        try:
            summary.repaired = await asyncio.to_thread(repair_recent_jobs, services, now=now)
        except Exception as exc:  # noqa: BLE001 - the repair is a backstop; the rest of the sweep still runs
            log.warning("sweep could not repair recent jobs' projections: %s", redact(failure_reason(exc)))
        due = await asyncio.to_thread(_due, services, now)
        summary.due = len(due)
        for job in due:
            if summary.acted >= settings.sweep_max_jobs or \
                    summary.examined >= settings.sweep_max_jobs * CHECKS_PER_ACTION:
                break
            summary.examined += 1
            try:
                await _sweep_job(services, client, job, now, summary, events)
            except Exception as exc:  # noqa: BLE001 - one job's failure must not stop the others; logged, counted
                summary.errors.append(job.job_id)
                log.warning("sweep could not finish job: %s", redact(failure_reason(exc)),
                            extra=log_fields(job.job_id, partner=job.partner, status=job.status.value))
        try:
            summary.stalled = await asyncio.to_thread(mark_stalled, services, now=now, events=events.read)
        except Exception as exc:  # noqa: BLE001 - marking is a report; the sweep's own work is done
            log.warning("sweep could not mark stalled jobs: %s", redact(failure_reason(exc)))
        try:
            from shared.services.delivery_sweep import sweep_deliveries

            swept = await asyncio.to_thread(sweep_deliveries, services, now=now)
            summary.deliveries_requeued, summary.deliveries_failed = swept.requeued, swept.failed
        except Exception as exc:  # noqa: BLE001 - the jobs' sweep is done; the next run looks again
            log.warning("sweep could not look at stale deliveries: %s", redact(failure_reason(exc)))
        for key in ("due", "examined", "alive"):
            s.set_attribute(f"wharf.sweep.{key}", getattr(summary, key))
        for key in ("resent", "completed", "failed", "errors", "repaired", "stalled"):
            s.set_attribute(f"wharf.sweep.{key}", len(getattr(summary, key)))
        if summary.examined:
            log.info("jobs sweep: %d due, %d resent, %d completed, %d failed, %d still running, %d errors",
                     summary.due, len(summary.resent), len(summary.completed), len(summary.failed), summary.alive,
                     len(summary.errors))
    return summary


def due_queries(services: Services, now: datetime) -> list[tuple[JobQuery, datetime]]:
    """The index queries of one run, with the `updated_at` cutoff of each: one per open status, created within
    WHARF_SWEEP_WINDOW_DAYS and no later than the cutoff (a job's last event is never before its creation, so a
    job created after the cutoff cannot be due). Terminal jobs and jobs older than the window are not read."""
    since = now - timedelta(days=services.settings.sweep_window_days)
    cutoffs = {status: _cutoff(services, status, now) for status in (JobStatus.PENDING, JobStatus.RUNNING)}
    return [(JobQuery(status=status.value, since=since, until=cutoff), cutoff) for status, cutoff in cutoffs.items()]


def _cutoff(services: Services, status: JobStatus, now: datetime) -> datetime:
    """A job of `status` is due when its last event is no later than this."""
    settings = services.settings
    minutes = settings.pending_resend_minutes if status is JobStatus.PENDING else settings.stale_running_minutes
    return now - timedelta(minutes=minutes)


def _due(services: Services, now: datetime) -> list[Job]:
    """PENDING and RUNNING jobs with no event for longer than their age, oldest first (JobsByTime rows: the sweep
    reads each job's projection before it acts on it)."""
    due: list[Job] = []
    with span("jobs.sweep.due", {"wharf.sweep.window_days": services.settings.sweep_window_days}) as s:
        for query, cutoff in due_queries(services, now):
            page = services.jobs.query_jobs(query, limit=_SCAN_LIMIT, now=now)
            if page.next_cursor:  # newest first: the oldest are the ones left out until these are settled
                log.warning("sweep lists only the %d newest %s jobs of its window", _SCAN_LIMIT, query.status)
            due.extend(job for job in page.jobs if job.updated_at <= cutoff)
        s.set_attribute("wharf.sweep.due", len(due))
    return sorted(due, key=lambda j: (j.updated_at, j.job_id))


async def _sweep_job(services: Services, client: Any, listed: Job, now: datetime, summary: SweepSummary,
                     events: EventsRead) -> None:
    with span("jobs.sweep.job", {"wharf.job_id": listed.job_id, "wharf.partner": listed.partner,
                                 "wharf.job.status": listed.status.value}) as s:
        status = await client.get_status(listed.job_id)
        runtime = _runtime(status)
        s.set_attribute("wharf.orchestration.status", runtime or "missing")
        if runtime is not None and runtime not in ENDED:
            summary.alive += 1
            log.debug("orchestration still %s; left alone", runtime, extra=log_fields(listed.job_id))
            return
        await asyncio.to_thread(_act, services, listed, runtime, status, now, summary, events)


def _act(services: Services, listed: Job, runtime: str | None, status: Any, now: datetime,
         summary: SweepSummary, events: EventsRead) -> None:
    """The storage side of one job's sweep (blocking: run in a worker thread)."""
    job = services.jobs.get_job(listed.job_id)  # fresh: it may have finished since the listing
    if job.status in (JobStatus.COMPLETED, JobStatus.FAILED) or job.updated_at > _cutoff(services, job.status, now):
        return  # finished, or touched since (the index row the listing came from may lag its projection)
    if runtime is None:
        if job.status is JobStatus.PENDING:
            _resend_or_fail(services, job, now, summary, events)
        else:
            _fail(services, job, f"orchestration lost: the task hub has no instance {job.job_id} for this "
                                 "RUNNING job", _step(status), summary, events)
        return
    _finish(services, job, runtime, status, summary, events)


def _runtime(status: Any) -> str | None:
    """The orchestration's runtime status name, or None when there is no such instance."""
    runtime = getattr(status, "runtime_status", None) if status else None
    if runtime is None:
        return None
    return str(getattr(runtime, "value", runtime))


def _step(status: Any) -> str:
    custom = getattr(status, "custom_status", None)
    return str(custom.get("step") or "") if isinstance(custom, Mapping) else ""


def _finish(services: Services, job: Job, runtime: str, status: Any, summary: SweepSummary,
            events: EventsRead) -> None:
    output = getattr(status, "output", None)
    if runtime == "Completed" and isinstance(output, Mapping) and output.get("status") == "COMPLETED":
        routes = list(output.get("routes") or [])
        routed = {e.data.get("index") for e in events(job.job_id) if e.type is EventType.ROUTED}
        archived = "archive" in job.steps_completed
        if len(routed) >= len(routes) and archived:
            note = "the orchestration delivered to every destination and archived the file"
            if output.get("reason"):
                note += f"; it could not record the completion ({output['reason']})"
            rows = output.get("rows", job.counts.get("output_rows", 0))
            process.complete_job(services, {**_ref(job), "routes": len(routes), "rows": rows,
                                            "recorded_by": RECORDED_BY, "note": _clip(note)})
            summary.completed.append(job.job_id)
            log.info("sweep completed job: %s", note, extra=log_fields(job.job_id, partner=job.partner))
            return
        reason = (f"orchestration ended as Completed but the job's events record {len(routed)} of {len(routes)} "
                  "deliveries" + ("" if archived else " and no archive"))
        _fail(services, job, reason, "complete", summary, events)
    elif runtime == "Completed" and isinstance(output, Mapping) and output.get("status") == "FAILED":
        # The orchestration failed the job but could not record it (fail_job failed after its retries).
        _fail(services, job, str(output.get("reason") or "orchestration ended as Completed: FAILED"),
              str(output.get("step") or _step(status)), summary, events)
    else:
        _fail(services, job, f"orchestration ended as {runtime}: {_text(output)}", _step(status), summary, events)


def _resend_or_fail(services: Services, job: Job, now: datetime, summary: SweepSummary, events: EventsRead) -> None:
    settings = services.settings
    queue = settings.landed_queue
    if not job.blob_path:
        _fail(services, job, "no landed file recorded (no file.landed event): there is nothing to process",
              "start", summary, events)
        return
    resends = [e for e in events(job.job_id) if _is_resend(e)]
    minutes = max(0, round((now - job.updated_at).total_seconds() / 60))
    if len(resends) >= settings.pending_resend_max:
        _fail(services, job, f"not started: re-sent to the {queue} queue {len(resends)} time(s), and no "
                             f"orchestration started in the {minutes} minute(s) since the last", "start", summary,
              events)
        return
    container, _, path = job.blob_path.partition("/")
    transfers = services.jobs.transfers(job.job_id)
    message = FileLanded(job_id=job.job_id, partner=job.partner, container=container, blob_path=path,
                         file_name=job.file_name, bytes=job.bytes, sha256=job.sha256,
                         transfer_id=transfers[0].transfer_id if transfers else "",
                         source=job.source or RECORDED_BY)
    attempt = len(resends) + 1
    reason = (f"PENDING for {minutes} minute(s) with no orchestration: re-sent to {queue} "
              f"(attempt {attempt} of {settings.pending_resend_max})")
    services.queues.send(queue, message.to_message())
    services.jobs.append(job.job_id, EventType.NOTE, {"sweep": "resend", "attempt": attempt, "queue": queue,
                                                      "reason": reason})
    services.jobs.log(job.job_id, "WARNING", reason)
    summary.resent.append(job.job_id)
    log.warning("sweep re-sent job: %s", reason, extra=log_fields(job.job_id, partner=job.partner))


def _is_resend(event: JobEvent) -> bool:
    return event.type is EventType.NOTE and event.data.get("sweep") == "resend"


def _fail(services: Services, job: Job, reason: str, step: str, summary: SweepSummary, events: EventsRead) -> None:
    """FAILED as the orchestration would have: quarantine the raw file (unless already done), every reason kept."""
    reason = _clip(reason)
    ref = {**_ref(job), "step": step or "sweep", "reason": reason, "recorded_by": RECORDED_BY}
    reasons = [reason]
    already = any(e.type is EventType.STEP_FAILED for e in events(job.job_id))
    if job.blob_path and not already:
        container, _, path = job.blob_path.partition("/")
        try:
            process.quarantine_file(services, {**ref, "container": container, "blob_path": path, "report_path": ""})
        except (AzureError, WharfError, OSError) as exc:
            reasons.append(f"quarantine failed: {redact(failure_reason(exc))}")
    process.fail_job(services, {**ref, "reason": _clip("; ".join(reasons))})
    services.jobs.log(job.job_id, "ERROR", f"failed by the sweep: {reason}")
    summary.failed.append(job.job_id)
    log.warning("sweep failed job: %s", reason, extra=log_fields(job.job_id, partner=job.partner, step=step))


def _ref(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, "partner": job.partner, "file_name": job.file_name}


def _text(output: Any) -> str:
    if output is None:
        return "no output"
    text = output if isinstance(output, str) else str(output)
    return text.strip().splitlines()[0] if text.strip() else "no output"


def _clip(text: str) -> str:
    return redact(text)[:_REASON_CHARS]
