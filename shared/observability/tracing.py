"""OpenTelemetry API side: spans, attribute helpers, W3C traceparent in and out of messages, job context.

Cheap to import: only the OpenTelemetry *API* is loaded here. The SDK, the exporters and Azure Monitor are
imported by `configure_telemetry()` / `for_tests()` (shared/observability/setup.py), never at import time.

Conventions for spans (one trace per file, from poll to its last destination):

- `span(name, attrs)` around each unit of work; attributes from the helpers below (`server_attrs`,
  `messaging_attrs`, `file_attrs`, `wharf_attrs`), never file content or message bodies
  (`BODY_ATTRIBUTE_KEYS` are dropped, long values truncated to `MAX_ATTRIBUTE_CHARS`: see redaction.py).
- Crossing a hop: the sender puts the trace in the message (`inject_traceparent(msg)`), the blob metadata
  (`blob_metadata(...)`) or the orchestration input (`orchestration_input(...)`); the receiver continues it
  with `span_from(carrier, name)` (or `continued_from(carrier)` + `span`). Fan-in: `link_from(carrier)`.
- Orchestrators replay, so they never open spans: they copy the trace from their input into each activity
  input (`carry_trace(input, activity_input)`), and the activity opens the span.
- Secrets: span attributes and exception events are redacted (shared.observability.redaction), as are log
  records (shared.observability.logs).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Link, Span, SpanContext, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shared.observability.redaction import redact, redact_attributes

TRACER_NAME = "wharf"

# --- attribute names -----------------------------------------------------------------------------------------
# Wharf's own dimensions (custom, namespaced as the semantic conventions ask).
PARTNER = "wharf.partner"
JOB_ID = "wharf.job_id"
TRANSFER_ID = "wharf.transfer_id"
CHANNEL = "wharf.channel"
ROUTE = "wharf.route"
STEP = "wharf.step"
# OpenTelemetry semantic conventions (stable where they exist).
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
FILE_NAME = "file.name"
FILE_SIZE = "file.size"
FILE_PATH = "file.path"
MESSAGING_SYSTEM = "messaging.system"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_OPERATION_NAME = "messaging.operation.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
ERROR_TYPE = "error.type"
# messaging.system values: Service Bus is in the conventions; storage queues are not, so Wharf names them.
MESSAGING_STORAGE_QUEUE = "azure_storage_queue"
MESSAGING_SERVICEBUS = "servicebus"

_W3C = TraceContextTextMapPropagator()
_TRACE_KEYS = ("traceparent", "tracestate")


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


# --- attribute helpers ---------------------------------------------------------------------------------------

def server_attrs(host: str | None, port: int | None = None) -> dict[str, Any]:
    """`server.address` / `server.port` of a partner server, Graph or a storage endpoint."""
    out: dict[str, Any] = {}
    if host:
        out[SERVER_ADDRESS] = host
    if port is not None:
        out[SERVER_PORT] = int(port)
    return out


def messaging_attrs(system: str, destination: str, operation: str, *, message_id: str | None = None,
                    operation_name: str | None = None) -> dict[str, Any]:
    """`messaging.*` for a queue or topic hop. `operation`: send | receive | process | create | settle."""
    out: dict[str, Any] = {MESSAGING_SYSTEM: system, MESSAGING_DESTINATION: destination,
                           MESSAGING_OPERATION_TYPE: operation}
    if operation_name:
        out[MESSAGING_OPERATION_NAME] = operation_name
    if message_id:
        out[MESSAGING_MESSAGE_ID] = message_id
    return out


def file_attrs(name: str | None, size: int | None = None, *, path: str | None = None) -> dict[str, Any]:
    """`file.name` (base name), `file.size` in bytes, optionally `file.path`. Never the content."""
    out: dict[str, Any] = {}
    if name:
        out[FILE_NAME] = name.rsplit("/", 1)[-1]
    if size is not None:
        out[FILE_SIZE] = int(size)
    if path:
        out[FILE_PATH] = path
    return out


def wharf_attrs(*, partner: str | None = None, job_id: str | None = None, transfer_id: str | None = None,
                channel: str | None = None, route: str | None = None, step: str | None = None) -> dict[str, Any]:
    """Wharf's dimensions, skipping the ones not known."""
    pairs = ((PARTNER, partner), (JOB_ID, job_id), (TRANSFER_ID, transfer_id), (CHANNEL, channel),
             (ROUTE, route), (STEP, step))
    return {k: v for k, v in pairs if v}


# --- spans ---------------------------------------------------------------------------------------------------

@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         kind: trace.SpanKind = trace.SpanKind.INTERNAL, links: Sequence[Link] | None = None) -> Iterator[Span]:
    """A span that records an escaping exception (status ERROR, redacted `exception` event) and re-raises it."""
    attrs = redact_attributes({k: v for k, v in (attributes or {}).items() if v is not None})
    with tracer().start_as_current_span(name, kind=kind, attributes=attrs, links=links,
                                        record_exception=False, set_status_on_exception=False) as s:
        try:
            yield s
        except GeneratorExit:  # a consumer closed a generator early: not a failure
            raise
        except BaseException as exc:
            record_error(exc, s)
            raise


def record_error(exc: BaseException, span_: Span | None = None) -> None:
    """Mark a span failed: status ERROR, `error.type`, and an `exception` event with the message redacted.

    For exceptions that are handled (not escaping `span()`), e.g. one failed file in a poll of many.
    """
    s = span_ if span_ is not None else trace.get_current_span()
    if not s.is_recording():
        return
    message = redact(str(exc))
    stack = redact("".join(traceback.format_exception(exc)))
    # The job, partner and step go on the event too: Azure Monitor turns it into an `exceptions` row whose
    # custom dimensions are the event's attributes (not the span's), and an operator filters those by job id.
    s.record_exception(exc, attributes={"exception.message": message, "exception.stacktrace": stack,
                                        **_error_dimensions(s)}, escaped=True)
    s.set_attribute(ERROR_TYPE, _qualified_type(exc))
    description = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    s.set_status(Status(StatusCode.ERROR, description[:256]))


_ERROR_DIMENSIONS = (JOB_ID, PARTNER, TRANSFER_ID, STEP)


def _error_dimensions(s: Span) -> dict[str, Any]:
    """Wharf's dimensions of a failing span: its own attributes, else the enclosing `job_context`."""
    attrs = getattr(s, "attributes", None) or {}
    out = {k: attrs[k] for k in _ERROR_DIMENSIONS if k in attrs}
    job = current_job()
    for key, name in ((JOB_ID, "job_id"), (PARTNER, "partner"), (TRANSFER_ID, "transfer_id")):
        if key not in out and job.get(name):
            out[key] = job[name]
    return out


def _qualified_type(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ in ("builtins", "__main__") else f"{t.__module__}.{t.__qualname__}"


@contextmanager
def span_from(carrier: Mapping[Any, Any] | None, name: str, attributes: Mapping[str, Any] | None = None, *,
              kind: trace.SpanKind = trace.SpanKind.CONSUMER, links: Sequence[Link] | None = None) -> Iterator[Span]:
    """Continue the trace carried in a message/metadata/input with a new span (the receiving side of a hop).

    When something else was current (the Functions host's invocation span, in another trace) it is linked,
    so the portal can go from the function execution to the file's trace.
    """
    previous = trace.get_current_span().get_span_context()
    all_links = list(links or [])
    with continued_from(carrier):
        now = trace.get_current_span().get_span_context()
        if previous.is_valid and now.is_valid and previous.trace_id != now.trace_id:
            all_links.append(Link(previous, {"wharf.link": "invocation"}))
        with span(name, attributes, kind=kind, links=all_links) as s:
            yield s


# --- context propagation -------------------------------------------------------------------------------------

def inject_traceparent(carrier: MutableMapping[Any, Any]) -> MutableMapping[Any, Any]:
    """Add `traceparent` (and `tracestate`) for the current span to a message or metadata dict."""
    inject(carrier)
    return carrier


def trace_carrier() -> dict[str, str]:
    """Just the W3C keys (`traceparent`, `tracestate` when present) of the current span; empty without one."""
    out: dict[str, str] = {}
    _W3C.inject(out)
    return out


def blob_metadata(metadata: Mapping[str, str] | None = None) -> dict[str, str]:
    """Blob metadata with the current `traceparent` added (valid metadata names, ASCII values)."""
    return {**(metadata or {}), **trace_carrier()}


def orchestration_input(data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An orchestration input carrying the current trace (the starter calls this; keep inputs small)."""
    return {**(data or {}), **trace_carrier()}


def carry_trace(source: Mapping[str, Any] | None, target: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`target` plus the trace keys of `source`. Pure and deterministic: orchestrators use it for activity inputs."""
    out = dict(target or {})
    for key in _TRACE_KEYS:
        value = (source or {}).get(key)
        if isinstance(value, str) and value:
            out[key] = value
    return out


def _as_text_carrier(carrier: Mapping[Any, Any]) -> dict[str, str]:
    """str keys (lower-cased) and values; bytes decoded (Service Bus application properties)."""
    out: dict[str, str] = {}
    for key, value in carrier.items():
        k = key.decode("ascii", "ignore") if isinstance(key, bytes) else key
        v = value.decode("ascii", "ignore") if isinstance(value, bytes) else value
        if isinstance(k, str) and isinstance(v, str):
            out[k.lower()] = v
    return out


def context_from(carrier: Mapping[Any, Any] | None) -> SpanContext | None:
    """The remote span context a carrier holds, or None when it holds no valid `traceparent`."""
    if not carrier:
        return None
    text = _as_text_carrier(carrier)
    if "traceparent" not in text:
        return None
    ctx = trace.get_current_span(_W3C.extract(text)).get_span_context()
    return ctx if ctx.is_valid else None


@contextmanager
def continued_from(carrier: Mapping[Any, Any] | None) -> Iterator[None]:
    """Make the trace carried in a message (its `traceparent`) the current context.

    A carrier without a valid `traceparent` leaves the current context alone.
    """
    if context_from(carrier) is None:
        yield
        return
    with attached(extract(_as_text_carrier(carrier or {}))):
        yield


@contextmanager
def attached(context: otel_context.Context) -> Iterator[None]:
    """Run a block in another OpenTelemetry context (e.g. a file's, captured when its upload ran)."""
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def link_from(carrier: Mapping[Any, Any] | None, attributes: Mapping[str, Any] | None = None) -> Link | None:
    """A span Link to the trace in a carrier (fan-in: a batch span linked to every file it handles)."""
    ctx = context_from(carrier)
    return Link(ctx, dict(attributes) if attributes else None) if ctx is not None else None


def links_from(carriers: Iterable[Mapping[Any, Any] | None]) -> list[Link]:
    return [link for link in (link_from(c) for c in carriers) if link is not None]


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def current_span_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.span_id, "016x") if ctx.is_valid else ""


# --- job context (read by the log filter) --------------------------------------------------------------------

_JOB: ContextVar[Mapping[str, str] | None] = ContextVar("wharf_job", default=None)


@contextmanager
def job_context(job_id: str | None = None, *, partner: str | None = None,
                transfer_id: str | None = None) -> Iterator[None]:
    """Set the job (and partner, transfer) for every log record in this unit of work; nests.

    Also tags the current span, so the two never disagree.
    """
    fields = dict(current_job())
    for key, value in (("job_id", job_id), ("partner", partner), ("transfer_id", transfer_id)):
        if value:
            fields[key] = str(value)
    token = _JOB.set(fields)
    current = trace.get_current_span()
    if current.is_recording():
        current.set_attributes(wharf_attrs(partner=partner, job_id=job_id, transfer_id=transfer_id))
    try:
        yield
    finally:
        _JOB.reset(token)


def current_job() -> Mapping[str, str]:
    """`job_id`, `partner`, `transfer_id` set by the enclosing `job_context` (only the known ones)."""
    return _JOB.get() or {}


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def log_fields(job_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """`extra=` for a structured log line: job id and ids of the current trace."""
    ctx = trace.get_current_span().get_span_context()
    out: dict[str, Any] = {"job_id": job_id or current_job().get("job_id", "")}
    if ctx.is_valid:
        out["trace_id"] = format(ctx.trace_id, "032x")
        out["span_id"] = format(ctx.span_id, "016x")
    out.update(fields)
    return out
