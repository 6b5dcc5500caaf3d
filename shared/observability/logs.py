"""Structured logs: every record carries trace id, span id and job id, secrets scrubbed; JSON or human lines.

`configure_logging()` (called by `configure_telemetry()`) puts `TelemetryLogFilter` on every handler of the
root logger (the Functions worker's, Azure Monitor's LoggingHandler, ours) and, when nothing else handles
logs (local runs, devhost, the CLI), adds one stderr handler formatted by WHARF_LOG_FORMAT (json | human).
A handler added later gets the same treatment with `install_log_filter(handler)`.

Filters run at handle time, after `extra=` is applied: an explicit `extra={"job_id": ...}` wins, otherwise the
job id comes from `tracing.job_context(...)`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Literal

from shared.observability.redaction import redact, redact_value
from shared.observability.tracing import current_job, current_span_id, current_trace_id

LogFormat = Literal["json", "human"]

# Attributes every LogRecord has; anything else on a record came from `extra=` (or from this filter).
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message", "asctime", "taskName",
}
_CONTEXT_FIELDS = ("trace_id", "span_id", "job_id", "partner", "transfer_id")
# Noisy at INFO: every HTTP request of the Azure SDK, every export of the Azure Monitor exporter.
_QUIET_LOGGERS = ("azure.core.pipeline.policies.http_logging_policy", "azure.monitor.opentelemetry.exporter",
                  "azure.identity", "urllib3", "msal")


def enrich_record(record: logging.LogRecord) -> logging.LogRecord:
    """Add trace_id, span_id, job_id (+ partner, transfer_id when known) and scrub secrets. Idempotent."""
    if not getattr(record, "trace_id", ""):
        record.trace_id = current_trace_id()
    if not getattr(record, "span_id", ""):
        record.span_id = current_span_id()
    job = current_job()
    if not getattr(record, "job_id", ""):
        record.job_id = job.get("job_id", "")
    for key in ("partner", "transfer_id"):
        if not getattr(record, key, "") and job.get(key):
            setattr(record, key, job[key])
    _scrub(record)
    return record


def _scrub(record: logging.LogRecord) -> None:
    if record.args:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format: leave it for the handler to report
            message = None
        if message is not None:
            record.msg, record.args = redact(message), None
    elif isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if record.exc_info and not record.exc_text:
        # Formatters use exc_text when set: the traceback is rendered once, redacted.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD_ATTRS and key not in _CONTEXT_FIELDS:
            setattr(record, key, redact_value(key, value))


class TelemetryLogFilter(logging.Filter):
    """Handler filter: trace/job context on the record and secrets scrubbed from message, args, extras, traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        enrich_record(record)
        return True


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What `extra=` added to a record (JSON-safe), without the context fields."""
    out: dict[str, Any] = {}
    for key, value in vars(record).items():
        if key in _STANDARD_ATTRS or key in _CONTEXT_FIELDS or key.startswith("_"):
            continue
        out[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, trace_id, span_id, job_id, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        enrich_record(record)
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _CONTEXT_FIELDS:
            value = getattr(record, key, "")
            if value or key in ("trace_id", "span_id", "job_id"):
                doc[key] = value
        doc.update(extra_fields(record))
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """`12:00:01.234 INFO  shared.services.poll [job=… trace=4bf92f35] message key=value`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s %(message)s", datefmt="%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        parts = [f"{label}={getattr(record, key, '')}" for label, key in (("job", "job_id"), ("partner", "partner"))
                 if getattr(record, key, "")]
        trace_id = str(getattr(record, "trace_id", ""))
        if trace_id:
            parts.append(f"trace={trace_id[:8]}")
        context = f"[{' '.join(parts)}] " if parts else ""
        extras = "".join(f" {k}={v}" for k, v in extra_fields(record).items())
        saved = record.message
        record.message = f"{context}{saved}{extras}"
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved

    def format(self, record: logging.LogRecord) -> str:
        enrich_record(record)
        return super().format(record)


class _WharfStreamHandler(logging.StreamHandler[IO[str]]):
    """The one stream handler configure_logging manages (replaced, never duplicated, on a second call)."""


def install_log_filter(handler: logging.Handler) -> logging.Handler:
    """Put the telemetry filter on a handler (once)."""
    if not any(isinstance(f, TelemetryLogFilter) for f in handler.filters):
        handler.addFilter(TelemetryLogFilter())
    return handler


def configure_logging(fmt: LogFormat | str | None = None, level: int | str | None = None, *,
                      stream: IO[str] | None = None, install_handler: bool | None = None,
                      env: Mapping[str, str] | None = None) -> logging.Handler | None:
    """Filter every root handler; add Wharf's stream handler when nothing else handles logs (or when asked).

    fmt: "json" | "human" (default WHARF_LOG_FORMAT, else human). level: WHARF_LOG_LEVEL, else INFO; applied to
    the root logger only when Wharf installs its handler (in Azure the worker owns levels, from host.json).
    Returns Wharf's handler, or None when the existing handlers are kept as they are.
    """
    environ = os.environ if env is None else env
    fmt = (fmt or environ.get("WHARF_LOG_FORMAT") or "human").lower()
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _WharfStreamHandler)]
    others = [h for h in root.handlers if not isinstance(h, _WharfStreamHandler)]
    for handler in others:
        install_log_filter(handler)
    for name in _QUIET_LOGGERS:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    wanted = install_handler if install_handler is not None else (stream is not None or not others)
    for handler in ours:
        root.removeHandler(handler)
    if not wanted:
        return None
    handler = _WharfStreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    install_log_filter(handler)
    root.addHandler(handler)
    lvl = level if level is not None else environ.get("WHARF_LOG_LEVEL", "INFO")
    root.setLevel(lvl.upper() if isinstance(lvl, str) else lvl)
    return handler
