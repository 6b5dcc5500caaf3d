"""Outbound jobs: files an internal system hands to Wharf for a partner, delivered by its `outbound.routes`.

Two ways in, one kind of job (JobType.OUTBOUND, `direction: outbound` on its job.created event):
- a blob put at outbound/{partner}/{name}: the drop intake with the OUTBOUND handover (shared.services.drop:
  an immutable copy in inbound/ with its sha256, the blob removed by ETag, an unknown partner quarantined);
- `wharf send PARTNER FILE [--route NAME]` (`send_file`): the local file streamed into the same kind of
  immutable copy, the job recorded, then queued on the file-landed queue as replays are.

From there it is process_file like any job (events, FileTransfer rows, one trace, replay), with two
differences (docs/decisions.md, 50): the routes are the partner's `outbound.routes` (the one `--route` names,
else the first match, else the default), and there is no validation or transform unless a rule of
`outbound.processing` matches the file name; without one the handed-over file itself is what is delivered.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from shared.domain.errors import ConfigurationError, DependencyUnavailableError, NotFoundError, WharfError
from shared.domain.hostmessages import parse_message
from shared.domain.ids import new_job_id, new_transfer_id
from shared.domain.jobs import EventType, FileTransfer, JobEvent, JobType, utcnow
from shared.domain.messages import FileLanded
from shared.domain.sanitize import display_name, sanitize_name
from shared.metrics import record_ingest
from shared.observability.redaction import redact
from shared.observability.tracing import current_trace_id, log_fields, span, trace_carrier
from shared.workflows import failure_reason

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

OUTBOUND = "outbound"
INBOUND = "inbound"
CHUNK = 4 * 1024 * 1024


def direction_of(events: list[JobEvent]) -> tuple[str, str]:
    """(direction, route named at hand-over) from a job's job.created event: ("inbound", "") by default."""
    for event in events:
        if event.type is EventType.CREATED:
            return str(event.data.get("direction") or "inbound"), str(event.data.get("route") or "")
    return "inbound", ""


def outbound_routes(services: Services, partner_id: str) -> list[Any]:
    """The partner's outbound routes; ConfigurationError when it has no outbound block."""
    partner = services.catalog.get(partner_id)
    outbound = getattr(partner, "outbound", None)
    if outbound is None:
        raise ConfigurationError(f"partner {partner_id} has no outbound block in the catalogue: outbound.routes "
                                 "say where its outgoing files go")
    return list(outbound.routes)


def outbound_rule(services: Services, partner_id: str, file_name: str) -> Any | None:
    """The first rule of the partner's `outbound.processing` whose glob matches, or None (no processing)."""
    from shared.domain.globs import glob_match

    outbound = getattr(services.catalog.get(partner_id), "outbound", None)
    for rule in getattr(getattr(outbound, "processing", None), "rules", None) or []:
        if glob_match(file_name, getattr(rule, "match", "*") or "*"):
            return rule
    return None


def pick_route(routes: list[Any], name: str) -> Any:
    for route in routes:
        if route.name == name:
            return route
    known = ", ".join(r.name for r in routes) or "none"
    raise NotFoundError(f"no outbound route {name!r}; the partner's outbound routes are: {known}")


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def send_file(services: Services, partner_id: str, path: str | Path, *, route: str | None = None,
              name: str | None = None) -> dict[str, Any]:
    """`wharf send`: an OUTBOUND job for a local file. The file is streamed (bounded memory) into
    inbound/{partner}/{yyyy}/{MM}/{dd}/{transfer_id}/{name} with its sha256, the job recorded, and the job queued
    on the file-landed queue. Raises NotFoundError (partner, route, file), ConfigurationError (no outbound block);
    when the queue refuses, the job stays PENDING for the jobs sweep and DependencyUnavailableError says so."""
    source = Path(path)
    routes = outbound_routes(services, partner_id)
    if route:
        pick_route(routes, route)
    if not source.is_file():
        raise NotFoundError(f"no file {display_name(str(source))} to send")
    file_name = sanitize_name(name or source.name)
    now = utcnow()
    job_id, transfer_id = new_job_id(now), new_transfer_id(now)
    blob_path = f"{partner_id}/{now:%Y/%m/%d}/{transfer_id}/{file_name}"
    with span("intake.send", {"wharf.job_id": job_id, "wharf.partner": partner_id, "wharf.channel": "send",
                              "wharf.route": route or ""}) as s:
        metadata = {"job_id": job_id, "partner": partner_id, "transfer_id": transfer_id, "channel": "send",
                    **trace_carrier()}
        started = time.monotonic()
        info = services.blobs.upload_stream(INBOUND, blob_path, _chunks(source), metadata=metadata, overwrite=False)
        record_ingest(partner_id, "send", info.size, time.monotonic() - started)
        s.set_attribute("file.size", info.size)
        origin = f"send:{display_name(source.name)}"
        created: dict[str, Any] = {"partner": partner_id, "job_type": JobType.OUTBOUND, "source": origin,
                                   "file_name": file_name, "original_name": display_name(source.name),
                                   "size": info.size, "transfer_id": transfer_id, "channel": "send",
                                   "direction": OUTBOUND}
        if route:
            created["route"] = route
        services.jobs.append(job_id, EventType.CREATED, created)
        services.jobs.append(job_id, EventType.FILE_LANDED, {
            "blob_path": f"{INBOUND}/{blob_path}", "bytes": info.size, "sha256": info.sha256,
            "transfer_id": transfer_id, "file_name": file_name})
        services.jobs.add_transfer(FileTransfer(
            job_id=job_id, transfer_id=transfer_id, file_name=file_name, source=origin,
            destination=f"{INBOUND}/{blob_path}", status="LANDED", transfer_date=utcnow(), bytes=info.size,
            sha256=info.sha256))
        services.jobs.log(job_id, "INFO", f"outbound file {display_name(source.name)} handed over with wharf send: "
                                          f"{info.size} bytes, sha256 {info.sha256}", trace_id=current_trace_id())
        message = parse_message(FileLanded, {
            "job_id": job_id, "partner": partner_id, "container": INBOUND, "blob_path": blob_path,
            "file_name": file_name, "bytes": info.size, "sha256": info.sha256, "transfer_id": transfer_id,
            "source": origin, **trace_carrier()})
        queue = services.settings.landed_queue
        try:
            services.queues.send(queue, message.to_message())
        except (AzureError, WharfError, OSError) as exc:
            cause = redact(failure_reason(exc)).rstrip(". ")
            note = f"could not queue the outbound job on {queue} ({cause}); the jobs sweep re-sends this PENDING job"
            services.jobs.append(job_id, EventType.NOTE, {"reason": note, "queue": queue})
            log.warning("outbound job not queued", extra=log_fields(job_id, partner=partner_id, reason=cause))
            raise DependencyUnavailableError(f"queue {queue}", f"{cause}; the file is recorded as job {job_id} "
                                                               "(PENDING), which the jobs sweep re-sends") from exc
        log.info("outbound file sent to Wharf", extra=log_fields(job_id, partner=partner_id, bytes=info.size,
                                                                 route=route or ""))
        return {"job_id": job_id, "partner": partner_id, "file_name": file_name, "bytes": info.size,
                "sha256": info.sha256, "blob": f"{INBOUND}/{blob_path}", "route": route or ""}


def passthrough_output(services: Services, job_id: str, ref: Mapping[str, Any]) -> dict[str, Any]:
    """The output of an outbound job without a processing rule: the handed-over file itself (no copy)."""
    info = services.blobs.get_info(ref["container"], ref["blob_path"])
    return {"container": ref["container"], "path": ref["blob_path"], "name": ref["file_name"], "rows": 0,
            "bytes": info.size, "sha256": info.sha256, "url": info.url,
            "content_type": "application/octet-stream"}


def job_output(services: Services, job_id: str) -> dict[str, Any]:
    """The output a job delivered (its transform step's blob), rebuilt from its events for a redelivery."""
    for event in reversed(services.jobs.events(job_id)):
        if event.type is EventType.STEP_COMPLETED and event.data.get("step") == "transform":
            container, _, path = str(event.data.get("output", "")).partition("/")
            if not path:
                break
            info = services.blobs.get_info(container, path)
            rows = int((event.data.get("counts") or {}).get("output_rows", 0) or 0)
            return {"container": container, "path": path, "name": posixpath.basename(path), "rows": rows,
                    "bytes": info.size, "sha256": info.sha256, "url": info.url,
                    "content_type": "application/octet-stream"}
    raise NotFoundError(f"job {job_id} has no processed output to deliver again (it did not get past its "
                        "transform step); replay it instead")


__all__ = ["direction_of", "job_output", "outbound_routes", "outbound_rule", "passthrough_output", "pick_route",
           "send_file"]
