"""OpenTelemetry helpers: spans, structured logs with job ids, W3C traceparent in and out of messages."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, Status, StatusCode

TRACER_NAME = "wharf"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


@contextmanager
def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         kind: trace.SpanKind = trace.SpanKind.INTERNAL) -> Iterator[Span]:
    """A span that records an escaping exception with status ERROR and re-raises it."""
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer().start_as_current_span(name, kind=kind, attributes=attrs,
                                        record_exception=False, set_status_on_exception=False) as s:
        try:
            yield s
        except BaseException as exc:
            s.record_exception(exc)
            s.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def inject_traceparent(carrier: MutableMapping[Any, Any]) -> MutableMapping[Any, Any]:
    """Add `traceparent` (and `tracestate`) for the current span to a message or metadata dict."""
    inject(carrier)
    return carrier


@contextmanager
def continued_from(carrier: Mapping[str, Any] | None) -> Iterator[None]:
    """Make the trace carried in a message (its `traceparent`) the current context."""
    if not carrier or "traceparent" not in carrier:
        yield
        return
    token = otel_context.attach(extract({k: str(v) for k, v in carrier.items() if isinstance(v, str)}))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def log_fields(job_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """`extra=` for a structured log line: job id and ids of the current trace."""
    ctx = trace.get_current_span().get_span_context()
    out: dict[str, Any] = {"job_id": job_id or ""}
    if ctx.is_valid:
        out["trace_id"] = format(ctx.trace_id, "032x")
        out["span_id"] = format(ctx.span_id, "016x")
    out.update(fields)
    return out
