"""Intake: from a landed file (queue message, blob drop, upload, replay) to one orchestration per job."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from shared.bootstrap import Services
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.hostmessages import decode_host_message
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, JobType
from shared.observability.tracing import continued_from, inject_traceparent, log_fields, span

log = logging.getLogger(__name__)

ORCHESTRATOR = "process_file_orchestrator"
__all__ = ["decode_host_message", "orchestration_input", "register_drop", "replay", "start_processing"]
_REF_KEYS = ("job_id", "partner", "container", "blob_path", "file_name")


def orchestration_input(message: Mapping[str, Any]) -> dict[str, Any]:
    """The small reference an orchestration carries: ids and paths, plus the trace it continues."""
    missing = [k for k in _REF_KEYS if not message.get(k)]
    if missing:
        raise ValueError(f"file-landed message is missing {', '.join(missing)}")
    ref = {k: str(message[k]) for k in _REF_KEYS}
    if message.get("traceparent"):
        ref["traceparent"] = str(message["traceparent"])
    return ref


async def start_processing(client: Any, ref: Mapping[str, Any]) -> bool:
    """Start process_file with instance id = job id. A redelivered message starts nothing twice.
    The orchestration input carries the trace of this span, so every activity nests under it."""
    job_id = ref["job_id"]
    with continued_from(ref), span("intake.start", {"wharf.job_id": job_id, "wharf.partner": ref["partner"]}) as s:
        payload = {k: v for k, v in ref.items() if k not in ("traceparent", "tracestate")}
        inject_traceparent(payload)
        status = await client.get_status(job_id)
        if status is not None and getattr(status, "runtime_status", None) is not None:
            s.set_attribute("wharf.duplicate", True)
            log.info("orchestration already exists; not started again",
                     extra=log_fields(job_id, status=str(status.runtime_status)))
            return False
        await client.start_new(ORCHESTRATOR, instance_id=job_id, client_input=payload)
        log.info("orchestration started", extra=log_fields(job_id))
        return True


def register_drop(services: Services, *, container: str, blob_path: str, etag: str, size: int) -> dict[str, Any]:
    """A blob dropped at drop/{partner}/{name} becomes a job. The job id derives from the blob and its
    ETag, so the same drop event delivered twice maps to the same job (and the same orchestration)."""
    partner, _, name = blob_path.partition("/")
    if not partner or not name or "/" in name:
        raise ValueError(f"drop blob '{container}/{blob_path}' is not at drop/{{partner}}/{{name}}")
    digest = hashlib.sha256(f"{container}/{blob_path}@{etag}".encode()).hexdigest()[:24]
    job_id = f"job-drop-{digest}"
    with span("intake.drop", {"wharf.job_id": job_id, "wharf.partner": partner, "file.size": size}):
        try:
            services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": JobType.DROP,
                                                            "source": f"blob:{container}/{blob_path}",
                                                            "file_name": name})
            services.jobs.append(job_id, EventType.FILE_LANDED, {"blob_path": f"{container}/{blob_path}",
                                                                "bytes": size, "file_name": name})
            services.jobs.log(job_id, "INFO", f"dropped file {name} registered ({size} bytes)")
        except ConflictError:
            log.info("drop already registered", extra=log_fields(job_id))
        try:
            services.catalog.get(partner)
        except NotFoundError:
            log.warning("drop for unknown partner", extra=log_fields(job_id, partner=partner))
        return {"job_id": job_id, "partner": partner, "container": container, "blob_path": blob_path,
                "file_name": name}


def replay(services: Services, job_id: str) -> dict[str, Any]:
    """Reprocess the stored raw file of a job as a new job linked to the old one."""
    with span("jobs.replay", {"wharf.job_id": job_id}) as s:
        old = services.jobs.get_job(job_id)
        if not old.blob_path:
            raise NotFoundError(f"job {job_id} has no stored raw file to replay")
        container, _, path = old.blob_path.partition("/")
        if not services.blobs.exists(container, path):
            raise NotFoundError(f"raw file of job {job_id} is gone: {old.blob_path}")
        new_id = new_job_id()
        s.set_attribute("wharf.new_job_id", new_id)
        services.jobs.append(new_id, EventType.CREATED, {
            "partner": old.partner, "job_type": JobType.REPLAY, "source": f"replay:{job_id}",
            "file_name": old.file_name, "parent_job_id": job_id})
        services.jobs.append(new_id, EventType.FILE_LANDED, {"blob_path": old.blob_path, "bytes": old.bytes,
                                                            "sha256": old.sha256, "file_name": old.file_name})
        services.jobs.append(job_id, EventType.REPLAYED, {"new_job_id": new_id})
        services.jobs.log(job_id, "INFO", f"replayed as {new_id}")
        services.jobs.log(new_id, "INFO", f"replay of {job_id}")
        message = {"job_id": new_id, "partner": old.partner, "container": container, "blob_path": path,
                   "file_name": old.file_name, "bytes": old.bytes, "sha256": old.sha256,
                   "source": f"replay:{job_id}"}
        services.queues.send(services.settings.landed_queue, message)
        log.info("job replayed", extra=log_fields(job_id, new_job_id=new_id))
        return {"job_id": new_id, "replay_of": job_id}
