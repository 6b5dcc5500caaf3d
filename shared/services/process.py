"""Processing activities: each is idempotent, raises on failure, and passes references, not bytes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.bootstrap import Services
from shared.domain.errors import ConfigurationError, ConflictError, NotFoundError, PermanentError
from shared.domain.globs import glob_match
from shared.domain.jobs import EventType, Job, JobStatus
from shared.domain.naming import UNIQUE_LIMIT, numbered
from shared.domain.routing import DEFAULT_BLOB_PATH, DEFAULT_ON_EXISTS, ON_EXISTS, RoutePlan, plan_route, render_path
from shared.metrics import record_failure, record_job_done
from shared.observability.tracing import continued_from, log_fields, span
from shared.ports import BlobInfo
from shared.services.destinations import DeliveryNotConfiguredError as DeliveryNotConfiguredError  # re-exported
from shared.services.destinations import deliver_one
from shared.services.outbound import direction_of, outbound_routes, outbound_rule, passthrough_output, pick_route

log = logging.getLogger(__name__)

STAGING = "staging"
REPORTS = "reports"
# Errors kept in the job event (a table property holds at most 64 KiB); the full report is a blob.
EVENT_ERRORS = 20


# The failed step as a metric reason (a closed set; see shared.metrics.FailureReason).
_STEP_REASON = {"validate": "validation", "route": "routing", "archive": "other", "start": "other"}


class BlobExistsError(ConflictError, PermanentError):
    """A blob destination's path holds another job's blob, and `on_exists` says not to replace it."""


def _attrs(ref: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"wharf.job_id": ref["job_id"], "wharf.partner": ref["partner"], **extra}


def _job(services: Services, ref: Mapping[str, Any]) -> Job:
    return services.jobs.get_job(ref["job_id"])


def _landed_at(job: Job) -> datetime:
    return job.created_at.astimezone(UTC)


def find_rule(services: Services, partner_id: str, file_name: str) -> Any | None:
    """The partner's first processing rule whose glob matches the file name, or None."""
    partner = services.catalog.get(partner_id)
    processing = getattr(partner, "processing", None)
    for rule in getattr(processing, "rules", None) or []:
        if glob_match(file_name, getattr(rule, "match", "*") or "*"):
            return rule
    return None


def start_job(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    with continued_from(ref), span("activity.start_job", _attrs(ref)):
        job = _job(services, ref)
        if job.status is JobStatus.PENDING:
            services.jobs.append(job.job_id, EventType.STARTED, {"instance_id": ref["job_id"]})
            services.jobs.log(job.job_id, "INFO", f"processing started for {job.file_name}")
        log.info("job started", extra=log_fields(job.job_id, partner=job.partner))
        return {"status": "RUNNING"}


def validate_and_transform(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the landed file against its rule and run its transform in one streaming pass.

    The output goes to a staging blob at a deterministic path (a retry overwrites it) and is committed
    only when the whole file was valid; the full report goes to a blob beside the job either way. A rule with
    `pgp` decrypts the file first (shared/services/pgp.py); a message that fails its checks fails the job."""
    with continued_from(ref), span("activity.validate_and_transform", _attrs(ref)) as s:
        job = _job(services, ref)
        outbound = direction_of(services.jobs.events(job.job_id))[0] == "outbound"
        s.set_attribute("wharf.direction", "outbound" if outbound else "inbound")
        if outbound:
            rule = outbound_rule(services, job.partner, ref["file_name"])
            if rule is None:
                return _unprocessed(services, job, ref)
        else:
            rule = find_rule(services, job.partner, ref["file_name"])
        pgp = getattr(rule, "pgp", None)
        if pgp is not None and pgp.decrypt:  # trust (#18): decrypt first; the plaintext is a temporary file
            from shared.adapters.pgp import PgpError
            from shared.services.pgp import decrypted, pgp_failure_reason, record_decrypt

            try:
                with decrypted(services, job, ref, pgp) as plain:
                    record_decrypt(services, job, plain)
                    return _validate_pass(services, s, job, rule, plain.chunks(), plain.size, plain.name)
            except PgpError as exc:
                reason = pgp_failure_reason(exc)
                s.set_attribute("wharf.pgp.failure", exc.kind)
                log.warning("pgp check failed", extra=log_fields(job.job_id, partner=job.partner, kind=exc.kind))
                return {"valid": False, "reason": reason[:1000]}
        refused = _plugin_validators(services, job, ref, rule)
        if refused is not None:
            return refused
        info = services.blobs.get_info(ref["container"], ref["blob_path"])
        return _validate_pass(services, s, job, rule, services.blobs.open_read(ref["container"], ref["blob_path"]),
                              info.size, ref["file_name"])


def _validate_pass(services: Services, s: Any, job: Job, rule: Any, chunks: Any, size: int,
                   file_name: str) -> dict[str, Any]:
    """One streaming validate+transform pass over `chunks` (the landed blob, or its decrypted plaintext)."""
    from shared.services.transforms import validate_and_transform as run_pass
    from shared.services.validate import ValidationFailedError

    run = run_pass(chunks, rule, file_name=file_name, size=size,
                   base_dir=services.settings.catalog_path.parent)
    out_name = run.transform.output_name(file_name)
    out_path = f"{job.partner}/{job.job_id}/{out_name}"
    try:
        out = services.blobs.upload_stream(STAGING, out_path, run.chunks, content_type=run.content_type,
                                           metadata={"job_id": job.job_id, "transform": run.transform.name})
        report = run.report
    except ValidationFailedError as exc:
        report, out = exc.report, None
    report_path = f"{job.partner}/{job.job_id}/validation.json"
    services.blobs.upload_stream(REPORTS, report_path, [report.to_json().encode()],
                                 metadata={"job_id": job.job_id})
    s.set_attribute("wharf.valid", report.valid)
    s.set_attribute("wharf.rows", report.rows)
    s.set_attribute("wharf.transform", run.transform.name)
    if out is None or not report.valid:
        reason = f"validation failed: {report.summary()}"
        return {"valid": False, "reason": reason[:1000], "report_path": f"{REPORTS}/{report_path}"}
    rows = int(run.rows if run.rows is not None else report.rows)
    if "validate" not in job.steps_completed:
        services.jobs.append(job.job_id, EventType.STEP_COMPLETED, {
            "step": "validate", "valid": True, "file_type": report.file_type, "encoding": report.encoding,
            "report_path": f"{REPORTS}/{report_path}", "warnings": report.warnings[:10],
            "counts": {"rows": report.rows, "errors": report.error_count}})
        services.jobs.log(job.job_id, "INFO", f"validated: {report.summary()}")
    if "transform" not in job.steps_completed:
        services.jobs.append(job.job_id, EventType.STEP_COMPLETED, {
            "step": "transform", "transform": run.transform.name, "output": f"{STAGING}/{out_path}",
            "counts": {"output_rows": rows, "output_bytes": out.size}})
    s.set_attribute("file.size", out.size)
    return {"valid": True, "file_type": report.file_type,
            "output": {"container": STAGING, "path": out_path, "name": out_name, "rows": rows,
                       "bytes": out.size, "sha256": out.sha256, "url": out.url,
                       "content_type": run.content_type}}


def _plugin_validators(services: Services, job: Job, ref: Mapping[str, Any], rule: Any) -> dict[str, Any] | None:
    """The rule's plugin validators (`validators:`), each a streaming pass over the landed file; the invalid
    result naming every problem, or None when they all pass (or there are none)."""
    from shared.services.validators import VALIDATORS

    problems: list[str] = []
    for item in getattr(rule, "validators", None) or []:
        validator = VALIDATORS.get(item.name)()
        with span("validate.plugin", {"wharf.job_id": job.job_id, "wharf.validator": item.name}) as s:
            found = validator.check(services.blobs.open_read(ref["container"], ref["blob_path"]),
                                    validator.parse_options(item.options), file_name=ref["file_name"])
            s.set_attribute("wharf.problems", len(found))
        problems += [f"{item.name}: {p}" for p in found[:20]]
    if not problems:
        return None
    reason = f"validation failed: {'; '.join(problems)}"[:1000]
    services.jobs.log(job.job_id, "ERROR", reason)
    log.warning("plugin validator refused the file", extra=log_fields(job.job_id, partner=job.partner))
    return {"valid": False, "reason": reason, "report_path": ""}


def _unprocessed(services: Services, job: Job, ref: Mapping[str, Any]) -> dict[str, Any]:
    """An outbound job whose file no outbound.processing rule matches: the handed-over file is the output."""
    output = passthrough_output(services, job.job_id, ref)
    if "transform" not in job.steps_completed:
        services.jobs.append(job.job_id, EventType.STEP_COMPLETED, {
            "step": "transform", "transform": "none", "output": f"{output['container']}/{output['path']}",
            "note": "outbound: no outbound.processing rule matches; delivered as handed over",
            "counts": {"output_bytes": output["bytes"]}})
        services.jobs.log(job.job_id, "INFO", "outbound file: no processing rule matches; delivered unchanged")
    log.info("outbound job not processed (no rule)", extra=log_fields(job.job_id, partner=job.partner))
    return {"valid": True, "file_type": "", "output": output}


def plan_routes(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    """The route the job's file takes: the partner's routes, or for an outbound job its outbound.routes (the
    route named when it was handed over, else the first match, else the default)."""
    with continued_from(ref), span("activity.plan_routes", _attrs(ref)) as s:
        partner = services.catalog.get(ref["partner"])
        job = _job(services, ref)
        events = services.jobs.events(job.job_id)
        file_type = ""
        for event in events:
            if event.type is EventType.STEP_COMPLETED and event.data.get("step") == "validate":
                file_type = str(event.data.get("file_type", ""))
        direction, named = direction_of(events)
        s.set_attribute("wharf.direction", direction)
        if direction == "outbound":
            routes = outbound_routes(services, job.partner)
            if named:
                try:
                    chosen = pick_route(routes, named)
                except NotFoundError as exc:  # the route was removed since the file was handed over
                    raise ConfigurationError(f"partner {job.partner}: {exc}") from exc
                plan = RoutePlan(chosen.name, [d.model_dump(mode="json") for d in chosen.destinations])
            else:
                plan = plan_route(routes, file_name=ref["file_name"], file_type=file_type)
        else:
            plan = plan_route(list(getattr(partner, "routes", []) or []), file_name=ref["file_name"],
                              file_type=file_type)
        s.set_attribute("wharf.route", plan.route)
        return {"route": plan.route, "destinations": plan.destinations, "reason": plan.reason}


def route_file(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    """Deliver the processed output to one destination through its kind (shared.services.destinations).
    Idempotent: same job + index -> same result; a destination already SENT is not sent again."""
    dest = dict(ref["destination"])
    kind = dest.get("kind", "")
    output = dict(ref["output"])
    with continued_from(ref), span("activity.route_file", _attrs(ref, **{"wharf.destination": kind})) as s:
        job = _job(services, ref)
        result = deliver_one(services, job, ref, output, dest)
        s.set_attribute("wharf.destination.target", result.get("target", ""))
        already = any(e.type is EventType.ROUTED and e.data.get("index") == ref.get("index")
                      for e in services.jobs.events(job.job_id))
        if not already:
            routed = {k: v for k, v in result.items() if k != "already_sent"}
            services.jobs.append(job.job_id, EventType.ROUTED, {"route": ref.get("route", ""),
                                                                "index": ref.get("index"), **routed})
            services.jobs.log(job.job_id, "INFO", f"routed to {kind}: {result.get('target', '')}")
        log.info("routed", extra=log_fields(job.job_id, partner=job.partner, kind=kind, index=ref.get("index"),
                                            target=str(result.get("target", ""))))
        return result


def _deliver_blob(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                  dest: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the staged output to the destination's path without replacing another job's blob in silence.

    A blob already at the path that this job wrote (its `job_id` metadata) is this delivery retried: reused.
    Another job's blob: `on_exists` fail raises BlobExistsError naming the blob and that job; unique tries
    `name.2.ext`, `name.3.ext`, ... (each create-if-absent); overwrite first records `file.superseded` on that
    job. So every ROUTED sha256 is what is at its path, or the earlier job says by which job it was replaced."""
    pgp_info: dict[str, Any] = {}
    if dest.get("pgp"):  # trust (#18): encrypt (and sign) first; the ciphertext (name + suffix) is what is placed
        from shared.services.pgp import encrypted_output

        output = encrypted_output(services, job, ref, output, dest["pgp"])
        pgp_info = {"pgp": output["pgp"]}
    container = str(dest.get("container") or "processed")
    template = str(dest.get("path") or DEFAULT_BLOB_PATH)
    on_exists = str(dest.get("on_exists") or DEFAULT_ON_EXISTS)
    if on_exists not in ON_EXISTS:
        raise ConfigurationError(f"route '{ref.get('route')}': on_exists '{on_exists}' is not one of "
                                 f"{', '.join(ON_EXISTS)}")
    path = render_path(template, partner=job.partner, name=str(output["name"]), job_id=job.job_id,
                       when=_landed_at(job))
    meta = {"job_id": job.job_id, "partner": job.partner, "source_sha256": job.sha256}
    if ref.get("traceparent"):
        meta["traceparent"] = str(ref["traceparent"])
    candidates = numbered(path, UNIQUE_LIMIT) if on_exists == "unique" else iter([path])
    with span("route.blob", {"wharf.job_id": job.job_id, "wharf.partner": job.partner, "wharf.container": container,
                             "wharf.on_exists": on_exists}) as s:
        for candidate in candidates:
            placed = _place(services, job, container, candidate, output, meta, on_exists)
            if placed is None:
                continue  # unique: another job's blob; try the next name
            info, extra = placed
            s.set_attribute("wharf.blob_path", candidate)
            s.set_attribute("wharf.renamed", candidate != path)
            return {"kind": "blob", "target": f"{container}/{candidate}", "url": info.url, "sha256": info.sha256,
                    "bytes": info.size, **extra, **pgp_info}
    raise BlobExistsError(f"blob {container}/{path} and its numbered names up to {UNIQUE_LIMIT} are taken by "
                          "other jobs (on_exists: unique); put {job_id} in the destination's path")


def _place(services: Services, job: Job, container: str, path: str, output: Mapping[str, Any],
           meta: dict[str, str], on_exists: str) -> tuple[BlobInfo, dict[str, Any]] | None:
    """Deliver to exactly `path`: the blob and what the ROUTED event adds, or None when `path` holds another
    job's blob and on_exists is unique."""
    target = f"{container}/{path}"
    for _ in range(3):  # the blob seen at the path vanished before it could be read: look again
        existing = _blob_or_none(services, container, path)
        if existing is None:
            try:
                return _put(services, container, path, output, meta, overwrite=False), {}
            except ConflictError:
                continue  # another writer committed first (create-if-absent): see whose it is
        owner = existing.metadata.get("job_id", "")
        if owner == job.job_id:  # this delivery, retried after it had committed
            extra = _supersedes(existing.metadata)
            if existing.sha256 and existing.sha256 == output.get("sha256"):
                return existing, extra
            return _put(services, container, path, output, {**meta, **_supersedes_meta(extra)}, overwrite=True), extra
        if on_exists == "unique":
            return None
        if on_exists == "fail":
            log.warning("blob destination taken", extra=log_fields(job.job_id, partner=job.partner, target=target,
                                                                   owner=owner))
            raise BlobExistsError(
                f"blob {target} already exists, delivered by job {owner or '(none recorded)'}; on_exists is fail: "
                "nothing was overwritten. Put {job_id} in the destination's path, or set on_exists to unique or "
                "overwrite")
        extra = {"supersedes": {"job_id": owner, "sha256": existing.sha256}}
        _record_superseded(services, job, target, existing)
        return _put(services, container, path, output, {**meta, **_supersedes_meta(extra)}, overwrite=True), extra
    raise ConflictError(f"blob {target} keeps appearing and vanishing; not delivered")


def _blob_or_none(services: Services, container: str, path: str) -> BlobInfo | None:
    try:
        return services.blobs.get_info(container, path)
    except NotFoundError:
        return None


def _put(services: Services, container: str, path: str, output: Mapping[str, Any], meta: Mapping[str, str], *,
         overwrite: bool) -> BlobInfo:
    return services.blobs.upload_stream(container, path, services.blobs.open_read(output["container"],
                                                                                  output["path"]),
                                        metadata=meta, overwrite=overwrite)


def _supersedes(metadata: Mapping[str, str]) -> dict[str, Any]:
    """What a blob's metadata says it replaced (kept there so a retried delivery reports it again)."""
    owner = metadata.get("supersedes_job_id", "")
    return {"supersedes": {"job_id": owner, "sha256": metadata.get("supersedes_sha256", "")}} if owner else {}


def _supersedes_meta(extra: Mapping[str, Any]) -> dict[str, str]:
    replaced = extra.get("supersedes")
    if not replaced or not replaced.get("job_id"):
        return {}
    return {"supersedes_job_id": str(replaced["job_id"]), "supersedes_sha256": str(replaced.get("sha256", ""))}


def _record_superseded(services: Services, job: Job, target: str, existing: BlobInfo) -> None:
    """Before another job's blob is overwritten: `file.superseded` on that job (once), naming who replaced it."""
    owner = existing.metadata.get("job_id", "")
    fields = log_fields(job.job_id, partner=job.partner, target=target, superseded_job_id=owner)
    if not owner:
        log.warning("overwriting a blob that names no job (on_exists: overwrite)", extra=fields)
        return
    events = services.jobs.events(owner)
    if not events:
        log.warning("overwriting a blob whose job is not recorded (on_exists: overwrite)", extra=fields)
        return
    if any(e.type is EventType.SUPERSEDED and e.data.get("target") == target
           and e.data.get("by_job_id") == job.job_id for e in events):
        return  # recorded by an earlier attempt of this delivery
    services.jobs.append(owner, EventType.SUPERSEDED, {"target": target, "sha256": existing.sha256,
                                                       "by_job_id": job.job_id})
    services.jobs.log(owner, "WARNING", f"{target} was overwritten by job {job.job_id} (on_exists: overwrite); "
                                        "the blob this job delivered there is gone")
    log.warning("superseding another job's blob (on_exists: overwrite)", extra=fields)


def _deliver_event(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                   dest: Mapping[str, Any]) -> dict[str, Any]:
    delivered = [d for d in ref.get("delivered", []) if d.get("kind") == "blob"]
    event_type = str(dest.get("type") or "file.processed")
    # The first blob delivered is the one named: its exact path (a unique name included) and what is there.
    data = {"job_id": job.job_id, "partner": job.partner, "file_name": job.file_name,
            "blob": delivered[0]["target"] if delivered else f"{output.get('container')}/{output.get('path')}",
            "blob_url": delivered[0]["url"] if delivered else output.get("url", ""),
            "sha256": delivered[0]["sha256"] if delivered else output.get("sha256", ""),
            "rows": int(output.get("rows", 0)), "source_sha256": job.sha256}
    services.publisher.publish(event_type, data, subject=f"{job.partner}/{job.job_id}")
    return {"kind": "event", "target": event_type}


def archive_file(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    with continued_from(ref), span("activity.archive_file", _attrs(ref)):
        job = _job(services, ref)
        when = _landed_at(job)
        path = f"{job.partner}/{when:%Y/%m/%d}/{job.job_id}/{ref['file_name']}"
        services.blobs.upload_stream("archive", path, services.blobs.open_read(ref["container"], ref["blob_path"]),
                                     metadata={"job_id": job.job_id, "sha256_source": job.sha256})
        if "archive" not in job.steps_completed:
            services.jobs.append(job.job_id, EventType.STEP_COMPLETED, {"step": "archive",
                                                                        "archive": f"archive/{path}"})
        return {"archive": f"archive/{path}"}


def _recorded_by(ref: Mapping[str, Any]) -> dict[str, Any]:
    """Who recorded a terminal event when it was not the orchestration (the sweep), and why."""
    return {k: ref[k] for k in ("recorded_by", "note") if ref.get(k)}


def complete_job(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    """COMPLETED (idempotent). Also called by the sweep for a job whose orchestration delivered everything
    but could not record its completion (`recorded_by`, `note`)."""
    with continued_from(ref), span("activity.complete_job", _attrs(ref)):
        job = _job(services, ref)
        if job.status is not JobStatus.COMPLETED:
            event = services.jobs.append(job.job_id, EventType.COMPLETED, {"routes": ref.get("routes", 0),
                                                                           "rows": ref.get("rows", 0),
                                                                           **_recorded_by(ref)})
            services.jobs.log(job.job_id, "INFO", f"completed: {ref.get('routes', 0)} destination(s)")
            record_job_done(job.partner, JobStatus.COMPLETED, (event.at - job.created_at).total_seconds())
        log.info("job completed", extra=log_fields(job.job_id, partner=job.partner))
        return {"status": "COMPLETED"}


def quarantine_file(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    """Copy the raw file to quarantine/{partner}/{yyyy}/{MM}/{dd}/{job_id}/ with its validation report."""
    with continued_from(ref), span("activity.quarantine_file", _attrs(ref)):
        job = _job(services, ref)
        base = f"{job.partner}/{_landed_at(job):%Y/%m/%d}/{job.job_id}"
        target = f"{base}/{ref['file_name']}"
        try:
            services.blobs.upload_stream("quarantine", target,
                                         services.blobs.open_read(ref["container"], ref["blob_path"]),
                                         metadata={"job_id": job.job_id, "reason": _ascii(ref["reason"])[:1024]})
        except NotFoundError:
            target = ""  # nothing landed to quarantine (e.g. the source blob is gone): the reason still stands
        report_target = ""
        if ref.get("report_path"):
            container, _, path = str(ref["report_path"]).partition("/")
            report_target = f"{base}/{ref['file_name']}.validation.json"
            services.blobs.upload_stream("quarantine", report_target, services.blobs.open_read(container, path),
                                         metadata={"job_id": job.job_id})
        step_failed = [e for e in services.jobs.events(job.job_id) if e.type is EventType.STEP_FAILED]
        if not step_failed:
            data: dict[str, Any] = {"step": ref.get("step", ""), "reason": ref["reason"],
                                    "quarantine": f"quarantine/{target}" if target else ""}
            if report_target:
                data["report_blob"] = f"quarantine/{report_target}"
            if ref.get("report_path"):
                data.update(_report_excerpt(services, str(ref["report_path"])))
            services.jobs.append(job.job_id, EventType.STEP_FAILED, data)
            services.jobs.log(job.job_id, "ERROR", f"{ref.get('step', '')} failed: {ref['reason']}")
        return {"quarantine": f"quarantine/{target}" if target else ""}


def fail_job(services: Services, ref: Mapping[str, Any]) -> dict[str, Any]:
    """FAILED with the reason (every reason, `; `-joined), `job.failed` published. Idempotent; a COMPLETED
    job is never turned FAILED (its deliveries happened). Also called by the sweep (`recorded_by`, `note`)."""
    with continued_from(ref), span("activity.fail_job", _attrs(ref)):
        job = _job(services, ref)
        if job.status is JobStatus.COMPLETED:
            log.warning("job already completed; not failed",
                        extra=log_fields(job.job_id, partner=job.partner, reason=ref["reason"]))
            return {"status": "COMPLETED"}
        if job.status is not JobStatus.FAILED:
            event = services.jobs.append(job.job_id, EventType.FAILED, {"reason": ref["reason"],
                                                                        "step": ref.get("step"),
                                                                        **_recorded_by(ref)})
            record_job_done(job.partner, JobStatus.FAILED, (event.at - job.created_at).total_seconds())
            record_failure(job.partner, "process", _STEP_REASON.get(str(ref.get("step")), "other"))
            services.publisher.publish("job.failed", {"job_id": job.job_id, "partner": job.partner,
                                                      "file_name": job.file_name, "step": ref.get("step"),
                                                      "reason": ref["reason"]},
                                       subject=f"{job.partner}/{job.job_id}")
        log.warning("job failed", extra=log_fields(job.job_id, partner=job.partner, step=ref.get("step")))
        return {"status": "FAILED"}


def _report_excerpt(services: Services, report_path: str) -> dict[str, Any]:
    """The first errors of a stored validation report, small enough for a job event."""
    container, _, path = report_path.partition("/")
    report = json.loads(b"".join(services.blobs.open_read(container, path)))
    errors = list(report.get("errors", []))
    return {"report": {"errors": errors[:EVENT_ERRORS], "truncated": bool(report.get("truncated"))
                       or len(errors) > EVENT_ERRORS},
            "counts": {"rows": int(report.get("rows", 0)), "errors": int(report.get("error_count", len(errors)))}}


def _ascii(text: str) -> str:
    return json.dumps(text)[1:-1].encode("ascii", "backslashreplace").decode()
