"""The v1 routes: each a small function over the services (shared/services, shared/ports), registered in the
route table with its role and models; `dispatch` authenticates, parses, calls and answers (problems on error)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from shared.api import models as m
from shared.api.auth import OPERATE, READ, UPLOAD, Principal, authenticate, authorize, csrf_token, needs_csrf
from shared.api.config import ApiSettings, api_settings
from shared.api.http import ApiRequest, ApiResponse, BodyIncompleteError, BodyTooLargeError, json_body
from shared.api.problems import PROBLEM_TYPE, Problem, bad_param
from shared.api.router import PREFIX, Route, match, route
from shared.catalog.errors import PartnerNotFoundError
from shared.domain.errors import ConfigurationError, ConflictError, DependencyUnavailableError, NotFoundError
from shared.domain.hostmessages import BadMessageError
from shared.domain.job_index import JobQuery
from shared.domain.jobs import EventType, Job, utcnow
from shared.domain.ledger import BreakerState, LedgerState
from shared.observability.redaction import redact
from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)
_PARTNER_ROUTE_PARAM = "partner"
CHUNK = 4 * 1024 * 1024


# --- helpers ------------------------------------------------------------------------------------------


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _summary(job: Job) -> m.JobSummary:
    return m.JobSummary(job_id=job.job_id, partner=job.partner, type=job.job_type, status=job.status,
                        file_name=job.file_name, bytes=job.bytes, created_at=job.created_at,
                        updated_at=job.updated_at, error=job.error, parent_job_id=job.parent_job_id)


def _token_fingerprint(q: m.JobsQuery) -> str:
    filters = q.model_dump(mode="json", exclude={"limit", "continuation"})
    return hashlib.sha256(json.dumps(filters, sort_keys=True).encode()).hexdigest()[:12]


def encode_continuation(cursor: str, q: m.JobsQuery) -> str:
    raw = json.dumps({"c": cursor, "f": _token_fingerprint(q)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continuation(token: str, q: m.JobsQuery) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        cursor, fingerprint = str(data["c"]), str(data["f"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_param("continuation", "not a continuation token of this API") from None
    if fingerprint != _token_fingerprint(q):
        raise bad_param("continuation", "the token belongs to a list with other filters")
    return cursor


def _partner(services: Services, partner_id: str) -> Any:
    try:
        return services.catalog.get(partner_id)
    except PartnerNotFoundError:
        raise Problem(404, f"partner {partner_id!r} is not in the catalogue", param="partner",
                      code="not-found") from None


def _job(services: Services, job_id: str) -> Job:
    try:
        return services.jobs.get_job(job_id)
    except NotFoundError:
        raise Problem(404, f"job {job_id!r} not found", param="job_id", code="not-found") from None


def _blob_stream(services: Services, ref: str, what: str, cfg: ApiSettings, *, name: str = "",
                 streamed: bool = False) -> ApiResponse:
    container, _, path = ref.partition("/")
    if not container or not path:
        raise Problem(404, f"this job has no {what}", code="not-found")
    try:
        info = services.blobs.get_info(container, path)
    except NotFoundError:
        raise Problem(404, f"the {what} of this job is gone ({ref})", code="not-found") from None
    if not streamed and info.size > cfg.download_max_bytes:
        raise Problem(413, f"the {what} is {info.size} bytes, over WHARF_DOWNLOAD_MAX_BYTES "
                           f"({cfg.download_max_bytes}), and this host joins response bodies whole "
                           f"(WHARF_HTTP_STREAMS is off); read it from storage ({ref})", code="too-large")
    # Streamed GETs, each after the first conditional on its ETag: a block in memory, and a blob replaced while
    # it is sent fails the download instead of mixing two versions.
    chunks: Iterator[bytes] = services.blobs.open_stream(container, path)
    headers = {"Content-Length": str(info.size)}
    if name:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:200] or "file"
        headers["Content-Disposition"] = f'attachment; filename="{safe}"'
    media = "application/json" if what == "report" else "application/octet-stream"
    return ApiResponse(200, chunks, media, headers)


def _stalled(job: Job, now: Any, minutes: float) -> bool:
    from shared.services.stalled import is_stalled

    return is_stalled(job, now, minutes)


# --- jobs ---------------------------------------------------------------------------------------------


@route("GET", "/jobs", role=READ, summary="List jobs, newest first", query=m.JobsQuery, response=m.JobPage)
def list_jobs(services: Services, q: m.JobsQuery, **_: Any) -> Any:
    if q.since and q.until and q.since > q.until:
        raise bad_param("since", "is after 'until'")
    for name, value in (("since", q.since), ("until", q.until)):
        if value is not None and value.tzinfo is None:
            raise bad_param(name, "needs a UTC offset (e.g. 2026-01-31T00:00:00Z)")
    cursor = decode_continuation(q.continuation, q) if q.continuation else None
    query = JobQuery(partner=q.partner, status=q.status.value if q.status else None,
                     job_type=q.type.value if q.type else None, since=q.since, until=q.until,
                     file_prefix=q.file_prefix)
    try:
        page = services.jobs.query_jobs(query, limit=q.limit, cursor=cursor)
    except ValueError:
        raise bad_param("continuation", "not a continuation token of this API") from None
    now, minutes = utcnow(), services.settings.stalled_minutes
    items = [_summary(j).model_copy(update={"stalled": _stalled(j, now, minutes)}) for j in page.jobs]
    token = encode_continuation(page.next_cursor, q) if page.next_cursor else None
    return m.JobPage(items=items, continuation=token)


def _validation_errors(events: list[Any]) -> list[m.ValidationErrorOut]:
    out: list[m.ValidationErrorOut] = []
    for e in events:
        report = e.data.get("report") if isinstance(e.data, Mapping) else None
        for p in (report or {}).get("errors", [])[:200] if isinstance(report, Mapping) else []:
            if isinstance(p, Mapping):
                out.append(m.ValidationErrorOut(row=p.get("row"), line=p.get("line"), column=p.get("column"),
                                                field=p.get("field"), message=str(p.get("message", ""))))
    return out


def _delivery_out(d: Any) -> m.DeliveryOut:
    return m.DeliveryOut(job_id=d.job_id, index=d.index, partner=d.partner, kind=d.kind, target=d.target,
                         route=d.route, state=d.state.value, remote_path=d.remote_path, bytes=d.bytes,
                         attempts=d.attempts, error=d.error, created_at=d.created_at, updated_at=d.updated_at,
                         sent_at=d.sent_at, redelivery_of=d.redelivery_of)


def job_detail(services: Services, job_id: str) -> m.JobDetail:
    job = _job(services, job_id)
    events = services.jobs.events(job_id)
    base = f"{PREFIX}/jobs/{job_id}"
    links = {"self": base, "report": f"{base}/report", "raw": f"{base}/content?which=raw",
             "output": f"{base}/content?which=output", "replay": f"{base}/replay", "resume": f"{base}/resume"}
    return m.JobDetail(
        job=job.model_dump(mode="json"),
        stalled=_stalled(job, utcnow(), services.settings.stalled_minutes),
        events=[m.JobEventOut(seq=e.seq, type=e.type.value, at=e.at, data=e.data) for e in events],
        validation_errors=_validation_errors(events),
        transfers=[m.TransferOut(**t.model_dump(exclude={"job_id"})) for t in services.jobs.transfers(job_id)],
        deliveries=[_delivery_out(d) for d in services.deliveries.for_job(job_id)],
        logs=[m.LogOut(timestamp=entry.timestamp, level=entry.level.value, message=entry.message,
                       trace_id=entry.trace_id) for entry in services.jobs.logs(job_id)],
        links=links)


@route("GET", "/jobs/{job_id}", role=READ, summary="One job: events, validation errors, transfers, deliveries, logs",
       response=m.JobDetail)
def get_job(services: Services, job_id: str, **_: Any) -> Any:
    return job_detail(services, job_id)


def _report_ref(services: Services, job_id: str) -> str:
    found = ""
    for e in services.jobs.events(job_id):
        ref = e.data.get("report_blob") or e.data.get("report_path") if isinstance(e.data, Mapping) else ""
        found = str(ref or found)
    return found


@route("GET", "/jobs/{job_id}/report", role=READ, summary="The job's validation report (streamed)",
       media="application/json")
def get_report(services: Services, job_id: str, cfg: ApiSettings, req: ApiRequest, **_: Any) -> Any:
    _job(services, job_id)
    return _blob_stream(services, _report_ref(services, job_id), "report", cfg, streamed=req.streamed_response)


@route("GET", "/jobs/{job_id}/content", role=OPERATE, summary="The job's raw file or output (streamed)",
       query=m.ContentQuery, media="application/octet-stream")
def get_content(services: Services, job_id: str, q: m.ContentQuery, cfg: ApiSettings, req: ApiRequest,
                **_: Any) -> Any:
    job = _job(services, job_id)
    streamed = req.streamed_response
    if q.which == "raw":
        return _blob_stream(services, job.blob_path, "raw file", cfg, name=job.file_name, streamed=streamed)
    output = ""
    for e in services.jobs.events(job_id):
        if e.type is EventType.STEP_COMPLETED and e.data.get("step") == "transform":
            output = str(e.data.get("output", ""))
    return _blob_stream(services, output, "output", cfg, name=output.rsplit("/", 1)[-1], streamed=streamed)


@route("POST", "/jobs/{job_id}/replay", role=OPERATE, summary="Reprocess the job's raw file as a new job",
       response=m.ReplayAccepted, status=202)
def replay_job(services: Services, job_id: str, principal: Principal, **_: Any) -> Any:
    from shared.services import intake

    _job(services, job_id)
    try:
        result = intake.replay(services, job_id)
    except NotFoundError as exc:
        raise Problem(404, str(exc), code="not-found") from None
    except BadMessageError as exc:
        raise Problem(409, str(exc.detail), code="not-replayable") from None
    services.jobs.log(job_id, "INFO", f"replay requested by {principal.name}")
    return m.ReplayAccepted(**result)


@route("POST", "/jobs/{job_id}/resume", role=OPERATE,
       summary="Restart a stalled job's orchestration from its last completed step", response=m.ResumeAccepted,
       status=202)
def resume_job(services: Services, job_id: str, principal: Principal, **_: Any) -> Any:
    from shared.services.stalled import resume

    _job(services, job_id)
    return m.ResumeAccepted(**resume(services, job_id, by=principal.name))


# --- partners -----------------------------------------------------------------------------------------


def _channels(services: Services, partner: Any) -> list[m.ChannelOut]:
    from shared.catalog import next_run

    out: list[m.ChannelOut] = []
    now = utcnow()
    for channel, source in (("sftp", partner.sftp), ("mail", partner.mailbox)):
        if source is None:
            continue
        rec = services.breakers.get(channel, partner.id)
        try:
            due = next_run(source.schedule, now) if partner.enabled else None
        except (ValueError, KeyError):
            due = None
        out.append(m.ChannelOut(channel=channel, schedule=source.schedule, next_due=due, breaker=m.BreakerOut(
            channel=channel, state=rec.state.value, failures=rec.failures, opened_at=rec.opened_at,
            last_error=rec.last_error), last_poll=_last_poll(services, channel, partner.id)))
    return out


def _last_poll(services: Services, channel: str, partner: str) -> m.LastPollOut | None:
    found = services.last_polls.get(channel, partner)
    if found is None:
        return None
    return m.LastPollOut(channel=channel, status=found.status, started_at=found.started_at,
                         finished_at=found.finished_at, requested_by=found.requested_by, listed=found.listed,
                         landed=found.landed, skipped=found.skipped, failed=found.failed, queued=found.queued,
                         bytes=found.bytes, error=found.error, files=list(found.files))


@route("GET", "/partners", role=READ, summary="Every catalogue partner with its channels and breakers",
       response=m.PartnerList)
def list_partners(services: Services, **_: Any) -> Any:
    return m.PartnerList(items=[m.PartnerSummary(id=p.id, name=p.name, enabled=p.enabled,
                                                 channels=_channels(services, p))
                                for p in services.catalog.partners])


@route("GET", "/partners/{partner}", role=READ,
       summary="One partner: channels, next due, breakers, jobs by status over 24 h, last file",
       response=m.PartnerDetail)
def get_partner(services: Services, partner: str, **_: Any) -> Any:
    p = _partner(services, partner)
    now = utcnow()
    counts: dict[str, int] = {}
    cursor: str | None = None
    last: Job | None = None
    query = JobQuery(partner=partner, since=now - timedelta(hours=24), until=now)
    for _page in range(20):  # at most 20,000 jobs a day counted; beyond that the counts say so
        page = services.jobs.query_jobs(query, limit=1000, cursor=cursor, now=now)
        for j in page.jobs:
            last = last or j
            counts[j.status.value] = counts.get(j.status.value, 0) + 1
        cursor = page.next_cursor
        if cursor is None:
            break
    if last is None:
        older = services.jobs.query_jobs(JobQuery(partner=partner), limit=1, now=now).jobs
        last = older[0] if older else None
    last_file = (m.LastFile(job_id=last.job_id, file_name=last.file_name, status=last.status,
                            created_at=last.created_at) if last else None)
    channels = _channels(services, p)
    polls = [c.last_poll for c in channels if c.last_poll is not None]
    return m.PartnerDetail(id=p.id, name=p.name, enabled=p.enabled, channels=channels, jobs_24h=counts,
                           last_file=last_file, last_poll=max(polls, key=lambda lp: lp.finished_at, default=None))


@route("POST", "/partners/{partner}/poll", role=OPERATE, summary="Queue a poll of the partner now",
       query=m.PollQuery, response=m.PollAccepted, status=202)
def poll_partner(services: Services, partner: str, q: m.PollQuery, principal: Principal, **_: Any) -> Any:
    from shared.services.scheduling import request_poll

    _partner(services, partner)
    try:
        request = request_poll(services, partner, requested_by=f"api:{principal.name}", now=utcnow(),
                               channel=q.channel)
    except ConfigurationError as exc:
        raise Problem(409, str(exc), param="channel", code="no-such-channel") from None
    return m.PollAccepted(status="queued", partner=partner, channel=request.channel)


@route("POST", "/partners/{partner}/breakers/{channel}/reset", role=OPERATE,
       summary="Close the partner's circuit breaker on a channel", response=m.BreakerOut)
def reset_breaker(services: Services, partner: str, channel: str, principal: Principal, **_: Any) -> Any:
    from dataclasses import replace

    from shared.metrics import record_breaker_state

    p = _partner(services, partner)
    if channel not in ("sftp", "mail") or (p.sftp if channel == "sftp" else p.mailbox) is None:
        raise Problem(404, f"partner {partner} has no {channel[:20]!r} channel", param="channel", code="not-found")
    for _attempt in range(8):
        rec = services.breakers.get(channel, partner)
        try:
            saved = services.breakers.save(replace(rec, state=BreakerState.CLOSED, failures=0, opened_at=None,
                                                   probe_at=None, last_error=""))
        except ConflictError:
            continue
        record_breaker_state(partner, channel, saved.state.value)
        log.info("breaker reset", extra=log_fields(partner=partner, channel=channel, by=principal.name))
        return m.BreakerOut(channel=channel, state=saved.state.value, failures=saved.failures,
                            opened_at=saved.opened_at, last_error=saved.last_error)
    raise Problem(409, "the breaker kept changing; try again", code="conflict")


# --- ledger -------------------------------------------------------------------------------------------


def _ledger_out(e: Any) -> m.LedgerEntryOut:
    return m.LedgerEntryOut(key=e.key, channel=e.channel, path=e.path, size=e.size, state=e.state.value,
                            attempts=e.attempts, job_id=e.job_id, error=e.error, claimed_at=e.claimed_at,
                            updated_at=e.updated_at)


@route("GET", "/partners/{partner}/ledger", role=READ, summary="The partner's ledger entries (by state)",
       query=m.LedgerQuery, response=m.LedgerPage)
def list_ledger(services: Services, partner: str, q: m.LedgerQuery, **_: Any) -> Any:
    _partner(services, partner)
    entries = services.ledger.entries(partner, state=q.state)
    entries.sort(key=lambda e: e.updated_at or e.claimed_at, reverse=True)
    return m.LedgerPage(items=[_ledger_out(e) for e in entries[:q.limit]])


@route("POST", "/partners/{partner}/ledger/{entry}/reset", role=OPERATE,
       summary="Take a given-up (FAILED) or SKIPPED file again on the next poll", response=m.LedgerEntryOut)
def reset_ledger(services: Services, partner: str, entry: str, principal: Principal, **_: Any) -> Any:
    from dataclasses import replace

    _partner(services, partner)
    try:
        current = services.ledger.get(partner, entry)
    except NotFoundError:
        raise Problem(404, f"ledger entry {entry[:80]!r} of {partner} not found", param="entry",
                      code="not-found") from None
    if current.state not in (LedgerState.FAILED, LedgerState.SKIPPED):
        raise Problem(409, f"ledger entry is {current.state.value}; only FAILED or SKIPPED entries are reset",
                      param="entry", code="not-resettable")
    note = f"ledger entry reset by {principal.name} (was {current.state.value}, {current.attempts} attempts)"
    try:
        saved = services.ledger.update(replace(current, state=LedgerState.FAILED, attempts=0,
                                               error=note, updated_at=utcnow()))
    except ConflictError:
        raise Problem(409, "the ledger entry changed meanwhile; look again", code="conflict") from None
    if current.job_id:
        try:
            services.jobs.append(current.job_id, EventType.NOTE, {
                "message": note, "action": "ledger.reset", "by": principal.name, "ledger_key": entry})
            services.jobs.log(current.job_id, "INFO", note)
        except NotFoundError:
            pass
    log.info("ledger entry reset", extra=log_fields(current.job_id or None, partner=partner, by=principal.name))
    return _ledger_out(saved)


# --- uploads ------------------------------------------------------------------------------------------


def _limited(first: bytes, rest: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """The body's pieces, refused with 413 as soon as they add up to more than `limit` (the upload then stops:
    its staged blocks are never committed, so nothing appears in drop/)."""
    size = len(first)
    yield first
    for chunk in rest:
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"the body is over {limit} bytes (WHARF_UPLOAD_MAX_BYTES); use uploads:prepare "
                               "for larger files", code="too-large")
        yield chunk


def _upload_name(name: str) -> str:
    from shared.domain.sanitize import sanitize_name

    clean = sanitize_name(name.replace("\\", "/").rsplit("/", 1)[-1])
    if not clean or clean in (".", ".."):
        raise bad_param("name", "is not a usable file name")
    return clean


@route("POST", "/partners/{partner}/uploads", role=UPLOAD,
       summary="Upload a file for intake (body: the file; lands in drop/{partner}/)", query=m.UploadQuery,
       response=m.UploadAccepted, status=201, body="application/octet-stream")
def upload(services: Services, partner: str, q: m.UploadQuery, req: ApiRequest, cfg: ApiSettings,
           principal: Principal, **_: Any) -> Any:
    _partner(services, partner)
    declared = req.header("content-length")
    if declared and declared.isdigit() and int(declared) > cfg.upload_max_bytes:
        raise Problem(413, f"the body is {declared} bytes; uploads take at most {cfg.upload_max_bytes} "
                           "(WHARF_UPLOAD_MAX_BYTES); use uploads:prepare for larger files", code="too-large")
    name = _upload_name(q.name)
    path = f"{partner}/{name}"
    pieces = req.chunks(CHUNK)  # streamed from the client when the host streams: never the whole body in memory
    first = next(pieces, b"")
    if not first:
        raise Problem(400, "the body is empty: send the file's bytes", code="empty-body")
    if len(first) > cfg.upload_max_bytes:
        raise Problem(413, f"the body is over {cfg.upload_max_bytes} bytes (WHARF_UPLOAD_MAX_BYTES); "
                           "use uploads:prepare for larger files", code="too-large")
    try:
        info = services.blobs.upload_stream("drop", path, _limited(first, pieces, cfg.upload_max_bytes),
                                            overwrite=False,
                                            metadata={"uploaded_by": redact(principal.name)[:200]})
    except ConflictError:
        raise Problem(409, f"drop/{path} is already waiting for intake; upload under another name",
                      param="name", code="exists") from None
    log.info("upload received", extra=log_fields(partner=partner, bytes=info.size, by=principal.name))
    return m.UploadAccepted(partner=partner, blob_path=f"drop/{path}", bytes=info.size, sha256=info.sha256)


@route("POST", "/partners/{partner}/uploads:prepare", role=UPLOAD,
       summary="A short-lived URL to PUT a large file into drop/{partner}/", query=m.UploadQuery,
       response=m.PrepareUpload)
def prepare_upload(services: Services, partner: str, q: m.UploadQuery, cfg: ApiSettings, **_: Any) -> Any:
    from shared.api.uploads import upload_url

    _partner(services, partner)
    name = _upload_name(q.name)
    return upload_url(services, f"{partner}/{name}", minutes=cfg.upload_url_minutes)


# --- deliveries ---------------------------------------------------------------------------------------


@route("GET", "/deliveries", role=READ, summary="The most recently updated deliveries", query=m.DeliveriesQuery,
       response=m.DeliveryList)
def list_deliveries(services: Services, q: m.DeliveriesQuery, **_: Any) -> Any:
    return m.DeliveryList(items=[_delivery_out(d) for d in services.deliveries.list_deliveries(
        state=q.state, limit=q.limit)])


@route("GET", "/jobs/{job_id}/deliveries", role=READ, summary="A job's deliveries", response=m.DeliveryList)
def job_deliveries(services: Services, job_id: str, **_: Any) -> Any:
    _job(services, job_id)
    return m.DeliveryList(items=[_delivery_out(d) for d in services.deliveries.for_job(job_id)])


def _destination_index(destination: str) -> int:
    if not destination.isdigit() or len(destination) > 6:
        raise bad_param("destination", "is not a delivery index (0, 1, ... as GET /jobs/{job_id}/deliveries lists)")
    return int(destination)


@route("GET", "/jobs/{job_id}/deliveries/{destination}", role=READ,
       summary="One delivery of a job: where it went, its state, attempts and error", response=m.DeliveryOut)
def get_delivery(services: Services, job_id: str, destination: str, **_: Any) -> Any:
    _job(services, job_id)
    index = _destination_index(destination)
    try:
        return _delivery_out(services.deliveries.get(job_id, index))
    except NotFoundError:
        raise Problem(404, f"job {job_id} has no delivery {index}", param="destination", code="not-found") from None


@route("POST", "/jobs/{job_id}/deliveries/{destination}/redeliver", role=OPERATE,
       summary="Send a delivery again (queued: a new delivery record linked to it)", response=m.DeliveryList,
       status=202)
def redeliver_delivery(services: Services, job_id: str, destination: str, principal: Principal, **_: Any) -> Any:
    from shared.domain.errors import WharfError
    from shared.services.deliveries_view import request_redelivery

    _job(services, job_id)
    index = _destination_index(destination)
    try:
        services.deliveries.get(job_id, index)
    except NotFoundError:
        raise Problem(404, f"job {job_id} has no delivery {index}", param="destination", code="not-found") from None
    try:
        rows = request_redelivery(services, job_id, destination=index, by=f"api:{principal.name}")
    except NotFoundError as exc:
        raise Problem(409, str(exc), param="destination", code="not-redeliverable") from None
    except DependencyUnavailableError:
        raise
    except WharfError as exc:
        raise Problem(409, str(exc), param="destination", code="not-redeliverable") from None
    return m.DeliveryList(items=[_delivery_out(services.deliveries.get(job_id, r["index"])) for r in rows])


# --- the document -------------------------------------------------------------------------------------


@route("GET", "/openapi.json", role="", summary="This API's OpenAPI 3.1 document")
def openapi_json(services: Services, **_: Any) -> Any:
    from shared.api.openapi import document

    return json_body(document())


# --- dispatch -----------------------------------------------------------------------------------------


def _parse(model: type[BaseModel], query: Mapping[str, str]) -> BaseModel:
    values = {k: v for k, v in query.items() if k != "code"}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "query"
        message = "is not a known parameter" if err["type"] == "extra_forbidden" else err["msg"].lower()
        raise bad_param(name, message) from None


def _check_csrf(cfg: ApiSettings, principal: Principal, req: ApiRequest) -> None:
    import hmac
    from urllib.parse import parse_qs

    supplied = req.header("x-wharf-csrf")
    if not supplied and req.header("content-type").startswith("application/x-www-form-urlencoded"):
        supplied = (parse_qs(req.body.decode("utf-8", "replace")).get("csrf") or [""])[0]
    if not hmac.compare_digest(supplied.encode(), csrf_token(cfg, principal).encode()):
        raise Problem(403, "the console's CSRF token is missing or wrong; reload the page", code="csrf")


def _html_problem(cfg: ApiSettings, p: Problem, principal: Principal | None) -> ApiResponse:
    from shared.api.console import render

    if p.status == 401:
        return render("signin.html", cfg, None, 401, title="Sign in", reason=p.detail)
    response = render("problem.html", cfg, principal, p.status, title=f"{p.status}", problem=p.body())
    response.headers.update(p.headers)
    return response


def _problem(p: Problem, instance: str) -> ApiResponse:
    return ApiResponse(p.status, p.to_json(instance), PROBLEM_TYPE, dict(p.headers))


def dispatch(services: Services, req: ApiRequest, *, cfg: ApiSettings | None = None) -> ApiResponse:
    """Answer one request under /api/v1: never a traceback, every refusal a problem."""
    cfg = cfg or api_settings()
    started = time.perf_counter()
    found, params, allowed = match(req.method.upper(), req.path)
    template = found.path if found else "(none)"
    principal: Principal | None = None
    with span("api.request", {"http.request.method": req.method, "http.route": PREFIX + template}) as s:
        try:
            if found is None:
                if allowed:
                    raise Problem(405, f"{req.method} is not allowed here; use {', '.join(sorted(set(allowed)))}",
                                  headers={"Allow": ", ".join(sorted(set(allowed)))})
                raise Problem(404, f"no route {req.path[:200]!r} under {PREFIX}", code="no-route")
            if found.role:
                principal = authenticate(services, cfg, req, partner=params.get(_PARTNER_ROUTE_PARAM, ""))
                authorize(principal, found.role, partner=params.get(_PARTNER_ROUTE_PARAM, ""))
                if req.method.upper() != "GET" and needs_csrf(principal):
                    _check_csrf(cfg, principal, req)
            q = _parse(found.query, req.query) if found.query else None
            result = found.handler(services, q=q, req=req, cfg=cfg, principal=principal, **params)
            response = _answer(found, result)
        except Problem as p:
            response = _html_problem(cfg, p, principal) if found and found.media.startswith("text/html") \
                else _problem(p, PREFIX + req.path[:200])
        except BodyIncompleteError as exc:
            response = _problem(Problem(400, f"the request body ended before it was whole ({exc}); nothing was "
                                             "stored", code="body-incomplete"), PREFIX + req.path[:200])
        except BodyTooLargeError as exc:
            response = _problem(Problem(413, f"the request body is over {exc.limit} bytes; this route reads "
                                             "small bodies only", code="too-large"), PREFIX + req.path[:200])
        except NotFoundError as exc:
            response = _problem(Problem(404, str(exc), code="not-found"), PREFIX + req.path[:200])
        except ConflictError as exc:
            response = _problem(Problem(409, str(exc), code="conflict"), PREFIX + req.path[:200])
        except DependencyUnavailableError as exc:
            response = _problem(Problem(503, str(exc), code="dependency-unavailable",
                                        headers={"Retry-After": "30"}), PREFIX + req.path[:200])
        except Exception:  # the caller gets a problem without internals; the log has the rest
            log.exception("api route failed", extra=log_fields(route=template, method=req.method))
            response = _problem(Problem(500, "internal error; the server log has the details", code="internal"),
                                PREFIX + req.path[:200])
        s.set_attribute("http.response.status_code", response.status)
        if principal is not None:
            s.set_attribute("wharf.principal_kind", principal.kind)
        log.info("api %s %s -> %d", req.method, PREFIX + template, response.status,
                 extra=log_fields(route=PREFIX + template, method=req.method, status=response.status,
                                  principal=principal.kind if principal else "",
                                  ms=round((time.perf_counter() - started) * 1000, 1)))
        return response


def _answer(found: Route, result: Any) -> ApiResponse:
    if isinstance(result, ApiResponse):
        return result
    if isinstance(result, BaseModel):
        return json_body(_dump(result), found.status)
    return json_body(result, found.status)
