"""Intake: from a landed file (queue message, blob drop, upload, replay) to one orchestration per job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import AzureError

from shared.adapters import durable_http
from shared.bootstrap import Services
from shared.domain.errors import DependencyUnavailableError, NotFoundError, WharfError
from shared.domain.hostmessages import BadMessageError, decode_host_message, parse_message
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, JobType
from shared.domain.messages import FileLanded
from shared.observability.redaction import redact
from shared.observability.tracing import continued_from, inject_traceparent, log_fields, span
from shared.workflows import failure_reason

log = logging.getLogger(__name__)

ORCHESTRATOR = "process_file_orchestrator"
__all__ = ["decode_host_message", "orchestration_input", "replay", "start_processing", "take_file_landed"]
_REF_KEYS = ("job_id", "partner", "container", "blob_path", "file_name")


def orchestration_input(message: Mapping[str, Any]) -> dict[str, Any]:
    """The small reference an orchestration carries: ids and paths, plus the trace it continues."""
    missing = [k for k in _REF_KEYS if not message.get(k)]
    if missing:
        raise ValueError(f"file-landed message is missing {', '.join(missing)}")
    ref = {k: str(message[k]) for k in _REF_KEYS}
    if message.get("traceparent"):
        ref["traceparent"] = str(message["traceparent"])
    if message.get("restart_before"):  # a resume: see start_processing
        ref["restart_before"] = str(message["restart_before"])
    return ref


#: How long start_processing waits for a terminated instance to end before the message is retried.
TERMINATE_WAIT_SECONDS = 20.0
_ENDED = ("Completed", "Failed", "Terminated", "Canceled")


def _runtime(status: Any) -> str:
    value = getattr(status, "runtime_status", None)
    return str(getattr(value, "value", value or ""))


def _created(status: Any) -> Any:
    from datetime import UTC, datetime

    created = getattr(status, "created_time", None)
    if isinstance(created, datetime):
        return created if created.tzinfo else created.replace(tzinfo=UTC)
    return None


async def _restart(client: Any, job_id: str, status: Any, restart_before: str, s: Any) -> bool:
    """A resume (`wharf jobs resume`): an instance created before the request is terminated (a hung one would
    otherwise never let the job go on) and started again; one created after it is the restart already (this
    message came again), left alone. Whether a new instance was started."""
    import asyncio
    import time
    from datetime import datetime

    asked = datetime.fromisoformat(restart_before)
    created = _created(status)
    if created is not None and created >= asked.replace(microsecond=0):
        s.set_attribute("wharf.duplicate", True)
        log.info("orchestration already restarted after the resume; not restarted again", extra=log_fields(job_id))
        return False
    runtime = _runtime(status)
    if runtime not in _ENDED:
        await client.terminate(job_id, f"resume requested at {restart_before}: restarted from its last step")
        log.warning("orchestration terminated for a resume", extra=log_fields(job_id, status=runtime))
        deadline = time.monotonic() + TERMINATE_WAIT_SECONDS
        while _runtime(status) not in _ENDED:
            if time.monotonic() > deadline:
                raise DependencyUnavailableError("the task hub", f"instance {job_id} did not end within "
                                                 f"{TERMINATE_WAIT_SECONDS:.0f} s of its termination")
            await asyncio.sleep(0.25)
            status = await client.get_status(job_id)
    s.set_attribute("wharf.restarted_from", runtime)
    return True


async def take_file_landed(services: Services, client: Any, delivery: Any) -> int:
    """The file-landed trigger's work: check the message (one reference per job; bad ones dead-lettered), then
    start each job's orchestration. The checks are blocking storage calls, so they run in a worker thread: an
    async function shares the worker's one event loop with every other async invocation, and a storage that is
    slow or gone (its retries, its read timeouts) must hold this invocation only, not every intake and durable
    client call beside it (decision 111). The number of orchestrations asked for."""
    from shared.services import poison

    refs = await asyncio.to_thread(poison.accept_file_landed_many, services, delivery)
    for ref in refs:
        await start_processing(client, ref)
    return len(refs)


async def start_processing(client: Any, ref: Mapping[str, Any]) -> bool:
    """Start process_file with instance id = job id. A redelivered message starts nothing twice.
    The orchestration input carries the trace of this span, so every activity nests under it."""
    job_id = ref["job_id"]
    client = durable_http.harden(client)  # one failed call must not fail every call beside it (decision 110)
    with continued_from(ref), span("intake.start", {"wharf.job_id": job_id, "wharf.partner": ref["partner"]}) as s:
        payload = {k: v for k, v in ref.items() if k not in ("traceparent", "tracestate", "restart_before")}
        inject_traceparent(payload)
        status = await client.get_status(job_id)
        exists = status is not None and getattr(status, "runtime_status", None) is not None
        if exists and ref.get("restart_before"):
            if not await _restart(client, job_id, status, str(ref["restart_before"]), s):
                return False
        elif exists:
            s.set_attribute("wharf.duplicate", True)
            log.info("orchestration already exists; not started again",
                     extra=log_fields(job_id, status=str(status.runtime_status)))
            return False
        await client.start_new(ORCHESTRATOR, instance_id=job_id, client_input=payload)
        log.info("orchestration started", extra=log_fields(job_id))
        return True


def replay(services: Services, job_id: str) -> dict[str, Any]:
    """Reprocess the stored raw file of a job as a new job linked to the old one.

    The message is checked first (BadMessageError, nothing written, when the job's reference is refused), then
    the new job is recorded, then queued. When the queue refuses the message, the new job stays PENDING
    (with a note saying why) and the jobs sweep re-sends it; this raises DependencyUnavailableError naming it,
    so a retry by the caller is not needed (and would only add another job)."""
    with span("jobs.replay", {"wharf.job_id": job_id}) as s:
        old = services.jobs.get_job(job_id)
        if not old.blob_path:
            raise NotFoundError(f"job {job_id} has no stored raw file to replay")
        container, _, path = old.blob_path.partition("/")
        if not services.blobs.exists(container, path):
            raise NotFoundError(f"raw file of job {job_id} is gone: {old.blob_path}")
        new_id = new_job_id()
        s.set_attribute("wharf.new_job_id", new_id)
        # The message first: a reference the file-landed model refuses (a partner id that cannot be in the
        # catalogue, a container files are not landed in) is refused here, before anything is written.
        try:
            message = parse_message(FileLanded, {
                "job_id": new_id, "partner": old.partner, "container": container, "blob_path": path,
                "file_name": old.file_name, "bytes": old.bytes, "sha256": old.sha256, "source": f"replay:{job_id}"})
        except BadMessageError as exc:
            raise BadMessageError(exc.reason, f"job {job_id} cannot be replayed: {exc.detail}") from exc
        created: dict[str, Any] = {"partner": old.partner, "job_type": JobType.REPLAY, "source": f"replay:{job_id}",
                                   "file_name": old.file_name, "parent_job_id": job_id}
        # An outbound job's replay is outbound too (its outbound.routes, the route it was sent with).
        for event in services.jobs.events(job_id)[:1]:
            if event.type is EventType.CREATED and event.data.get("direction"):
                created["direction"] = event.data["direction"]
                if event.data.get("route"):
                    created["route"] = event.data["route"]
        services.jobs.append(new_id, EventType.CREATED, created)
        services.jobs.append(new_id, EventType.FILE_LANDED, {"blob_path": old.blob_path, "bytes": old.bytes,
                                                            "sha256": old.sha256, "file_name": old.file_name})
        services.jobs.append(job_id, EventType.REPLAYED, {"new_job_id": new_id})
        services.jobs.log(job_id, "INFO", f"replayed as {new_id}")
        services.jobs.log(new_id, "INFO", f"replay of {job_id}")
        queue = services.settings.landed_queue
        try:
            services.queues.send(queue, message.to_message())
        except (AzureError, WharfError, OSError) as exc:
            cause = redact(failure_reason(exc)).rstrip(". ")
            minutes = f"{services.settings.pending_resend_minutes:g}"
            note = (f"could not queue the replay on {queue} ({cause}); the jobs sweep re-sends this PENDING job "
                    f"once it is {minutes} minute(s) old")
            log.warning("replay not queued", extra=log_fields(new_id, replay_of=job_id, reason=cause))
            try:
                services.jobs.append(new_id, EventType.NOTE, {"reason": note, "queue": queue})
                services.jobs.log(new_id, "WARNING", note)
            except (AzureError, WharfError, OSError):
                log.warning("replay note not recorded", extra=log_fields(new_id), exc_info=True)
            raise DependencyUnavailableError(
                f"queue {queue}", f"{cause}; the replay of {job_id} is recorded as job {new_id} (PENDING), which "
                f"the jobs sweep re-sends once it is {minutes} minute(s) old: do not replay again") from exc
        log.info("job replayed", extra=log_fields(job_id, new_job_id=new_id))
        return {"job_id": new_id, "replay_of": job_id}
