"""The OpenTelemetry SDK side: pipelines, redaction processors, span printer, test capture.

Imported by shared.observability.setup (`configure_telemetry()`, `flush()`, `for_tests()`), which callers
import lazily, never by function_app's import chain: the SDK costs ~70 ms, the OTLP exporters ~140 ms and Azure
Monitor ~420 ms of import time.

One process-wide pipeline. OpenTelemetry's global providers can be set only once per process, so Wharf sets its
own SDK providers once and puts *slots* behind them: "export" (what configure_telemetry installs) and "capture"
(the in-memory exporters of `for_tests()`). A slot can be swapped at any time; the providers never change.
Azure Monitor is the exception: `configure_azure_monitor()` sets its own providers, so it must be the first
telemetry set-up in a process (it is, in the Functions worker); Wharf's redaction processors are handed to it.

Redaction of spans happens in three places (defence in depth):
1. at set time: `tracing.span()` redacts the attributes it is given and the exception it records;
2. `RedactingSpanProcessor`, first in every pipeline (Azure Monitor's too): `on_end` replaces the ended span's
   attributes, events, status and name with redacted copies *on the ReadableSpan instance* that the following
   processors (batch exporters included) receive; this covers spans of other libraries (Azure SDK, httpx) and
   attributes set with `get_current_span().set_attribute(...)`. A ReadableSpan has no setters, so this writes
   its private fields; tests/unit/test_redaction.py pins the behaviour against the SDK version in use;
3. `RedactingSpanExporter` around the exporters Wharf builds (OTLP, console), public API only.
Logs: `TelemetryLogFilter` on the handlers (message, args, extras, traceback) and `RedactingLogProcessor` first
in the log pipeline (body and attributes, exception.* included) before any log exporter.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Generic, Literal, TypeVar

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider, set_logger_provider
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Status, StatusCode

from shared.observability.logs import configure_logging, install_log_filter
from shared.observability.redaction import redact, redact_attributes
from shared.observability.tracing import (
    CHANNEL,
    ERROR_TYPE,
    FILE_NAME,
    FILE_SIZE,
    JOB_ID,
    MESSAGING_DESTINATION,
    MESSAGING_OPERATION_TYPE,
    PARTNER,
    ROUTE,
    SERVER_ADDRESS,
    SERVER_PORT,
    STEP,
    TRANSFER_ID,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "wharf"

Mode = Literal["azure_monitor", "otlp", "console", "none"]

_TRUE = ("1", "true", "yes", "on")


# --- configuration -------------------------------------------------------------------------------------------

def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("wharf")
    except Exception:  # noqa: BLE001 - not installed as a package (a zip deploy): the version is unknown
        return "0.0.0+unknown"


@dataclass(frozen=True)
class TelemetryConfig:
    """What configure_telemetry acts on. Built from Settings (connection string, endpoint) and the environment."""

    appinsights_connection: str | None = None
    otlp_endpoint: str | None = None
    print_spans: bool = False
    log_format: str = "human"
    log_level: str = "INFO"
    service_name: str = SERVICE_NAME
    service_version: str = "0.0.0+unknown"
    sdk_disabled: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def mode(self) -> Mode:
        if self.sdk_disabled:
            return "none"
        if self.appinsights_connection:
            return "azure_monitor"
        if self.otlp_endpoint:
            return "otlp"
        if self.print_spans:
            return "console"
        return "none"

    @classmethod
    def from_settings(cls, settings: Any = None, env: Mapping[str, str] | None = None) -> TelemetryConfig:
        environ: Mapping[str, str] = dict(os.environ if env is None else env)

        def pick(attr: str, name: str) -> str | None:
            if settings is not None and hasattr(settings, attr):
                value = getattr(settings, attr)
                return str(value) if value not in (None, "") else None
            return environ.get(name) or None

        print_spans = pick("print_spans", "WHARF_PRINT_SPANS")
        return cls(
            appinsights_connection=pick("appinsights_connection", "APPLICATIONINSIGHTS_CONNECTION_STRING"),
            otlp_endpoint=pick("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
            print_spans=(print_spans or "").strip().lower() in _TRUE,
            log_format=(pick("log_format", "WHARF_LOG_FORMAT") or "human").lower(),
            log_level=(pick("log_level", "WHARF_LOG_LEVEL") or "INFO").upper(),
            # In Azure, the function app's name (WEBSITE_SITE_NAME): Application Insights shows Wharf's telemetry
            # under the same cloud_RoleName as the Functions host's, one node in the application map.
            service_name=environ.get("OTEL_SERVICE_NAME") or environ.get("WEBSITE_SITE_NAME") or SERVICE_NAME,
            service_version=environ.get("WHARF_VERSION") or _package_version(),
            sdk_disabled=environ.get("OTEL_SDK_DISABLED", "").strip().lower() in _TRUE,
            env=environ,
        )

    def resource(self) -> Resource:
        return Resource.create({"service.name": self.service_name, "service.version": self.service_version})

    def otlp_signal_endpoint(self, signal: str) -> str:
        """OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT if set, else <endpoint>/v1/<signal> (the OTLP/HTTP convention)."""
        specific = self.env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        return specific or f"{(self.otlp_endpoint or '').rstrip('/')}/v1/{signal}"


# --- redaction -----------------------------------------------------------------------------------------------

@dataclass
class _Redacted:
    name: str
    attributes: dict[str, Any] | None
    events: list[Event] | None
    status: Status | None

    @property
    def changed(self) -> bool:
        return self.attributes is not None or self.events is not None or self.status is not None


def _redacted_parts(span: ReadableSpan) -> _Redacted:
    """What has to change in a span for it to be safe to export (None: unchanged)."""
    name = redact(span.name)
    attrs = dict(span.attributes or {})
    clean = redact_attributes(attrs)
    events: list[Event] = []
    events_changed = False
    for event in span.events:
        event_attrs = dict(event.attributes or {})
        event_clean = redact_attributes(event_attrs)
        if event_clean != event_attrs:
            events_changed = True
            events.append(Event(event.name, BoundedAttributes(attributes=event_clean), event.timestamp))
        else:
            events.append(event)
    status = None
    description = span.status.description
    if description and redact(description) != description:
        status = Status(span.status.status_code, redact(description))
    return _Redacted(name, clean if clean != attrs else None, events if events_changed else None, status)


class RedactingSpanProcessor(SpanProcessor):
    """First processor of every pipeline: scrubs start attributes, and the whole span at end, in place."""

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        attrs = dict(span.attributes or {})
        clean = redact_attributes(attrs)
        if clean != attrs:
            span.set_attributes({k: clean.get(k, "") for k in attrs})

    def on_end(self, span: ReadableSpan) -> None:
        parts = _redacted_parts(span)
        if parts.name != span.name:
            span._name = parts.name
        if not parts.changed:
            return
        # The same ReadableSpan instance goes to every later processor: replace its (private) fields.
        if parts.attributes is not None:
            span._attributes = BoundedAttributes(attributes=parts.attributes)
        if parts.events is not None:
            old = span._events
            events = BoundedList.from_seq(getattr(old, "maxlen", None), parts.events)
            events.dropped = getattr(old, "dropped", 0)
            span._events = events
        if parts.status is not None:
            span._status = parts.status

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class RedactingSpanExporter(SpanExporter):
    """Wraps an exporter: hands it redacted copies of spans (built with the public ReadableSpan constructor)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = []
        for s in spans:
            parts = _redacted_parts(s)
            if not parts.changed and parts.name == s.name:
                out.append(s)
                continue
            out.append(ReadableSpan(
                name=parts.name, context=s.context, parent=s.parent, resource=s.resource,
                attributes=parts.attributes if parts.attributes is not None else s.attributes,
                events=parts.events if parts.events is not None else s.events, links=s.links, kind=s.kind,
                status=parts.status or s.status, start_time=s.start_time, end_time=s.end_time,
                instrumentation_scope=s.instrumentation_scope,
            ))
        return self.inner.export(out)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class RedactingLogProcessor(LogRecordProcessor):
    """First log processor: body and attributes (exception.message/stacktrace too) redacted before export."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        if isinstance(record.body, str):
            record.body = redact(record.body)
        attrs = record.attributes
        if attrs:
            current = dict(attrs)
            clean = redact_attributes(current)
            if clean != current:
                record.attributes = BoundedAttributes(attributes=clean, immutable=False, extended_attributes=True)

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --- span printer (devhost --print-spans) --------------------------------------------------------------------

PRINTED_ATTRIBUTES = (PARTNER, JOB_ID, TRANSFER_ID, CHANNEL, STEP, ROUTE, SERVER_ADDRESS, SERVER_PORT,
                      MESSAGING_DESTINATION, MESSAGING_OPERATION_TYPE, FILE_NAME, FILE_SIZE, ERROR_TYPE)


def format_span(s: ReadableSpan) -> str:
    """`[span] 4bf92f35 poll.sftp 12.3ms OK wharf.partner=acme file.name=a.csv (00f067aa<53995c3f)`."""
    ctx = s.context
    trace_id = format(ctx.trace_id, "032x")[:8] if ctx else "--------"
    span_id = format(ctx.span_id, "016x")[:8] if ctx else "-"
    parent = format(s.parent.span_id, "016x")[:8] if s.parent else "root"
    seconds = ((s.end_time or 0) - (s.start_time or 0)) / 1e9
    duration = f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"
    if s.status.status_code is StatusCode.ERROR:
        status = f"ERROR({s.status.description})" if s.status.description else "ERROR"
    else:
        status = "OK"
    attrs = s.attributes or {}
    shown = " ".join(f"{k}={attrs[k]}" for k in PRINTED_ATTRIBUTES if k in attrs)
    links = f" links={len(s.links)}" if s.links else ""
    return f"[span] {trace_id} {s.name} {duration} {status}{' ' + shown if shown else ''}{links} ({span_id}<{parent})"


class SpanPrinter(SpanExporter):
    """One compact line per finished span, to stderr (resolved at write time, so test capture works)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        stream = self._stream or sys.stderr
        with self._lock:
            for s in spans:
                stream.write(format_span(s) + "\n")
            stream.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def span_printer_processor(stream: IO[str] | None = None) -> SpanProcessor:
    return SimpleSpanProcessor(RedactingSpanExporter(SpanPrinter(stream)))


# --- slots ---------------------------------------------------------------------------------------------------

P = TypeVar("P", SpanProcessor, LogRecordProcessor)


class _Slots(Generic[P]):
    """Named, swappable groups of processors behind one registered processor (span or log)."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[P, ...]] = {}
        self._all: tuple[P, ...] = ()
        self._lock = threading.Lock()

    @property
    def empty(self) -> bool:
        return not self._all

    def set(self, slot: str, processors: Sequence[P]) -> None:
        with self._lock:
            old = self._slots.get(slot, ())
            self._slots[slot] = tuple(processors)
            self._all = tuple(p for group in self._slots.values() for p in group)
        for p in old:
            if p not in processors:
                p.shutdown()

    def shutdown(self) -> None:
        for p in self._all:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self._all)


class _SpanSlots(_Slots[SpanProcessor], SpanProcessor):
    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        for p in self._all:
            p.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: SdkSpan) -> None:
        for p in self._all:
            p._on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self._all:
            p.on_end(span)


class _LogSlots(_Slots[LogRecordProcessor], LogRecordProcessor):
    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        for p in self._all:
            p.on_emit(log_record)


def _is_unset(provider: object) -> bool:
    """The API hands out a Proxy*Provider until a real provider is set."""
    return type(provider).__name__.lstrip("_").startswith("Proxy")


def _otel_logging_handler(provider: LoggerProvider) -> logging.Handler:
    try:
        from opentelemetry.instrumentation.logging.handler import LoggingHandler

        return LoggingHandler(logger_provider=provider)
    except ImportError:  # the SDK's own handler (deprecated in favour of the one above)
        import warnings

        from opentelemetry.sdk._logs import LoggingHandler as SdkLoggingHandler

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return SdkLoggingHandler(logger_provider=provider)


class Pipeline:
    """Wharf's SDK providers (set globally once) and the slots behind them."""

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.spans = _SpanSlots()
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(RedactingSpanProcessor())
        self.tracer_provider.add_span_processor(self.spans)
        trace.set_tracer_provider(self.tracer_provider)
        self.meter_provider: MeterProvider | None = None
        self._readers: dict[str, list[MetricReader]] = {}
        self.logs = _LogSlots()
        self.logger_provider: LoggerProvider | None = None
        self.log_handler: logging.Handler | None = None
        self._lock = threading.Lock()

    def set_span_processors(self, slot: str, processors: Sequence[SpanProcessor]) -> None:
        self.spans.set(slot, processors)

    def set_metric_readers(self, slot: str, readers: Sequence[MetricReader]) -> None:
        with self._lock:
            if readers and self.meter_provider is None:
                current = metrics.get_meter_provider()
                if not _is_unset(current):
                    raise RuntimeError(f"a meter provider is already set ({type(current).__name__})")
                self.meter_provider = MeterProvider(resource=self.resource)
                metrics.set_meter_provider(self.meter_provider)
                # A MeterProvider flushes and shuts down only the readers it was built with, not the ones added
                # later (SDK 1.44): the pipeline does it for its slots.
                atexit.register(self.shutdown_readers)
            previous = self._readers.pop(slot, [])
            if self.meter_provider is not None:
                for reader in previous:
                    if reader not in readers:
                        self.meter_provider.remove_metric_reader(reader)
                for reader in readers:
                    if reader not in previous:
                        self.meter_provider.add_metric_reader(reader)
            self._readers[slot] = list(readers)

    def readers(self) -> list[MetricReader]:
        return [r for group in self._readers.values() for r in group]

    def flush_readers(self, timeout_millis: float = 5000) -> None:
        for reader in self.readers():
            reader.force_flush(timeout_millis=timeout_millis)

    def shutdown_readers(self) -> None:
        for reader in self.readers():
            reader.shutdown()

    def set_log_processors(self, slot: str, processors: Sequence[LogRecordProcessor]) -> None:
        with self._lock:
            if processors and self.logger_provider is None:
                current = get_logger_provider()
                if not _is_unset(current):
                    raise RuntimeError(f"a logger provider is already set ({type(current).__name__})")
                self.logger_provider = LoggerProvider(resource=self.resource)
                self.logger_provider.add_log_record_processor(RedactingLogProcessor())
                self.logger_provider.add_log_record_processor(self.logs)
                set_logger_provider(self.logger_provider)
            self.logs.set(slot, processors)
            root = logging.getLogger()
            if not self.logs.empty and self.logger_provider is not None and self.log_handler is None:
                self.log_handler = install_log_filter(_otel_logging_handler(self.logger_provider))
                root.addHandler(self.log_handler)
            elif self.logs.empty and self.log_handler is not None:
                root.removeHandler(self.log_handler)
                self.log_handler = None

    def is_global(self) -> bool:
        return trace.get_tracer_provider() is self.tracer_provider


_pipeline: Pipeline | None = None
_pipeline_lock = threading.Lock()


def pipeline(cfg: TelemetryConfig | None = None) -> Pipeline:
    """Wharf's process-wide pipeline, created (and set as the global provider) on first use."""
    global _pipeline
    with _pipeline_lock:
        if _pipeline is None:
            current = trace.get_tracer_provider()
            if not _is_unset(current):
                raise RuntimeError(f"another tracer provider is already set ({type(current).__name__})")
            _pipeline = Pipeline((cfg or TelemetryConfig()).resource())
        return _pipeline


# --- installers (the seam tests replace) ---------------------------------------------------------------------

def _printers(cfg: TelemetryConfig) -> list[SpanProcessor]:
    return [span_printer_processor()] if cfg.print_spans else []


def install_local(cfg: TelemetryConfig) -> None:
    """none / console: Wharf's SDK provider (valid trace ids to propagate), spans printed if asked, no export."""
    p = pipeline(cfg)
    p.set_span_processors("export", _printers(cfg))
    p.set_metric_readers("export", [])
    p.set_log_processors("export", [])


def install_otlp(cfg: TelemetryConfig) -> None:
    """OTLP/HTTP exporters for traces, metrics and logs (OTEL_EXPORTER_OTLP_HEADERS etc. honoured)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    p = pipeline(cfg)
    spans = BatchSpanProcessor(RedactingSpanExporter(OTLPSpanExporter(endpoint=cfg.otlp_signal_endpoint("traces"))))
    p.set_span_processors("export", [spans, *_printers(cfg)])
    p.set_metric_readers("export", [PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=cfg.otlp_signal_endpoint("metrics")))])
    p.set_log_processors("export", [BatchLogRecordProcessor(
        OTLPLogExporter(endpoint=cfg.otlp_signal_endpoint("logs")))])
    _enable_azure_sdk_tracing()


def _enable_azure_sdk_tracing() -> None:
    """Spans for Azure SDK calls (storage, Key Vault, Service Bus), as Azure Monitor's distro does."""
    try:
        from azure.core.settings import settings
        from azure.core.tracing.ext.opentelemetry_span import OpenTelemetrySpan

        settings.tracing_implementation = OpenTelemetrySpan
    except ImportError:
        log.debug("azure-core-tracing-opentelemetry not installed: no Azure SDK spans")


def install_azure_monitor(cfg: TelemetryConfig) -> None:
    """azure-monitor-opentelemetry's `configure_azure_monitor`, with Wharf's redaction and resource."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if _pipeline is not None and current is _pipeline.tracer_provider:
            raise RuntimeError("Azure Monitor must be the first telemetry set-up in a process "
                               "(Wharf's pipeline is already installed here)")
        # The Functions worker configured Azure Monitor itself (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY):
        # adopt its providers instead of exporting everything twice.
        _adopt(current, cfg)
        return
    from azure.monitor.opentelemetry import configure_azure_monitor

    kwargs: dict[str, Any] = {
        "connection_string": cfg.appinsights_connection,
        "resource": cfg.resource(),
        "span_processors": [RedactingSpanProcessor(), *_printers(cfg)],
        "log_record_processors": [RedactingLogProcessor()],
        # Only what Wharf uses: the others cost start-up time to probe.
        "instrumentation_options": {name: {"enabled": False} for name in ("django", "fastapi", "flask", "psycopg2")},
    }
    if "OTEL_TRACES_SAMPLER" not in cfg.env:
        # The distro's default is rate-limited sampling (5 traces/s). Operators debug one file at a time, and the
        # volume is a few spans per file: keep every trace unless OTEL_TRACES_SAMPLER says otherwise.
        kwargs["sampling_ratio"] = 1.0
    configure_azure_monitor(**kwargs)


def _adopt(provider: TracerProvider, cfg: TelemetryConfig) -> None:
    _prepend(getattr(provider, "_active_span_processor", None), "_span_processors", RedactingSpanProcessor(),
             fallback=provider.add_span_processor)
    for printer in _printers(cfg):
        provider.add_span_processor(printer)
    logger_provider = get_logger_provider()
    if isinstance(logger_provider, LoggerProvider):
        _prepend(getattr(logger_provider, "_multi_log_record_processor", None), "_log_record_processors",
                 RedactingLogProcessor(), fallback=logger_provider.add_log_record_processor)


def _prepend(multi: object, attr: str, processor: Any, *, fallback: Callable[[Any], None]) -> None:
    """Put a processor first in an SDK multi-processor (order matters: redact before the exporters see it)."""
    current = getattr(multi, attr, None)
    lock = getattr(multi, "_lock", None)
    if isinstance(current, tuple) and lock is not None:
        with lock:
            setattr(multi, attr, (processor, *getattr(multi, attr)))
        return
    fallback(processor)


INSTALLERS: dict[str, Callable[[TelemetryConfig], None]] = {
    "azure_monitor": install_azure_monitor,
    "otlp": install_otlp,
    "console": install_local,
    "none": install_local,
}


def install(cfg: TelemetryConfig) -> Mode:
    """Install the pipeline for cfg.mode and configure logging; returns the mode in effect."""
    mode: Mode = cfg.mode
    try:
        if not cfg.sdk_disabled:
            INSTALLERS[mode](cfg)
    except Exception as exc:  # noqa: BLE001 - telemetry must never stop the app from starting
        log.warning("telemetry: %s set-up failed, nothing will be exported: %s: %s",
                    mode, type(exc).__name__, redact(str(exc)))
        mode = "none"
        try:
            INSTALLERS["none"](cfg)
        except Exception as again:  # noqa: BLE001 - e.g. a foreign provider: spans still go through it
            log.warning("telemetry: local pipeline unavailable: %s", redact(str(again)))
    configure_logging(cfg.log_format, cfg.log_level, env=cfg.env)
    return mode


def flush(timeout_millis: int = 5000) -> None:
    if _pipeline is not None:
        _pipeline.flush_readers(timeout_millis)
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if callable(force_flush):
            force_flush(timeout_millis)


# --- tests ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricPoint:
    name: str
    attributes: dict[str, Any]
    value: float | None = None  # counters, up-down counters, gauges
    count: int | None = None  # histograms
    sum: float | None = None  # histograms


class TelemetryCapture:
    """In-memory spans, logs and metrics (delta temporality: each collection holds only what is new)."""

    def __init__(self, spans: InMemorySpanExporter, logs: InMemoryLogRecordExporter,
                 reader: InMemoryMetricReader) -> None:
        self.spans = spans
        self.logs = logs
        self.metric_reader = reader
        self._points: list[MetricPoint] = []
        self._metrics_json: list[str] = []

    def clear(self) -> None:
        self.spans.clear()
        self.logs.clear()
        self.metric_reader.get_metrics_data()
        self._points.clear()
        self._metrics_json.clear()

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished_spans() if s.name == name]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span with this name (AssertionError when there are none or several)."""
        found = self.spans_named(name)
        assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in self.finished_spans()]}"
        return found[0]

    def trace_ids(self) -> set[str]:
        return {format(s.context.trace_id, "032x") for s in self.finished_spans() if s.context}

    def spans_where(self, key: str, value: Any) -> list[ReadableSpan]:
        """Finished spans with attribute `key` == `value` (e.g. `telemetry.JOB_ID`, a job id)."""
        return [s for s in self.finished_spans() if (s.attributes or {}).get(key) == value]

    def trace_spans(self, trace_id: str | int) -> list[ReadableSpan]:
        """Every finished span of one trace (id as 32 hex chars or an int)."""
        wanted = int(trace_id, 16) if isinstance(trace_id, str) else trace_id
        return [s for s in self.finished_spans() if s.context and s.context.trace_id == wanted]

    def roots(self, trace_id: str | int) -> list[ReadableSpan]:
        return [s for s in self.trace_spans(trace_id) if s.parent is None]

    def orphans(self, trace_id: str | int) -> list[ReadableSpan]:
        """Spans whose parent is not among the captured spans: where a hop lost (or never had) the context.

        One connected trace: `len(capture.roots(t)) == 1 and capture.orphans(t) == []`.
        """
        spans = self.trace_spans(trace_id)
        ids = {s.context.span_id for s in spans if s.context}
        return [s for s in spans if s.parent is not None and s.parent.span_id not in ids]

    def log_records(self) -> list[ReadableLogRecord]:
        return list(self.logs.get_finished_logs())

    def collect_metrics(self) -> list[MetricPoint]:
        data = self.metric_reader.get_metrics_data()
        if data is None:
            return list(self._points)
        self._metrics_json.append(data.to_json())
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for dp in metric.data.data_points:
                        attrs = dict(dp.attributes or {})
                        if isinstance(dp, NumberDataPoint):
                            self._points.append(MetricPoint(metric.name, attrs, value=dp.value))
                        elif isinstance(dp, HistogramDataPoint):
                            self._points.append(MetricPoint(metric.name, attrs, count=dp.count, sum=dp.sum))
        return list(self._points)

    def metric_points(self, name: str) -> list[MetricPoint]:
        return [p for p in self.collect_metrics() if p.name == name]

    def exported_text(self) -> str:
        """Everything exported so far, as JSON text: what 'appears nowhere' assertions search."""
        self.collect_metrics()
        parts = [s.to_json(indent=None) for s in self.finished_spans()]
        parts += [r.to_json(indent=None) for r in self.log_records()]
        parts += self._metrics_json
        return "\n".join(parts)


_capture: TelemetryCapture | None = None


def capture() -> TelemetryCapture:
    """The process's TelemetryCapture (installed in the "capture" slot on first call), cleared."""
    global _capture
    with _pipeline_lock:
        existing = _capture
    if existing is None:
        from opentelemetry.sdk.metrics import (
            Counter,
            Histogram,
            ObservableCounter,
            ObservableUpDownCounter,
            UpDownCounter,
        )

        p = pipeline(TelemetryConfig())
        spans = InMemorySpanExporter()
        logs = InMemoryLogRecordExporter()
        delta = AggregationTemporality.DELTA
        reader = InMemoryMetricReader(preferred_temporality={
            Counter: delta, UpDownCounter: delta, Histogram: delta, ObservableCounter: delta,
            ObservableUpDownCounter: delta,
        })
        p.set_span_processors("capture", [SimpleSpanProcessor(spans)])
        p.set_log_processors("capture", [SimpleLogRecordProcessor(logs)])
        p.set_metric_readers("capture", [reader])
        existing = TelemetryCapture(spans, logs, reader)
        with _pipeline_lock:
            _capture = existing
    existing.clear()
    return existing
