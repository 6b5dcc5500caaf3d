"""Telemetry: spans, traceparent across hops, structured logs, metrics, start-up modes, import cost."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from shared import metrics
from shared.observability import setup, tracing
from shared.observability.logs import JsonFormatter, TelemetryLogFilter, configure_logging
from shared.observability.sdk import TelemetryCapture, TelemetryConfig, format_span
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def otel() -> TelemetryCapture:
    return setup.for_tests()


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own with a JSON handler (the same filter and formatter configure_logging installs)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TelemetryLogFilter())
    logger = logging.getLogger(f"test.telemetry.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


# --- spans ---------------------------------------------------------------------------------------------------

def test_span_records_error_status_and_exception_event(otel: TelemetryCapture) -> None:
    with pytest.raises(ValueError, match="bad header"), tracing.span("validate", tracing.file_attrs("a.csv", 12)):
        raise ValueError("bad header")

    s = otel.span("validate")
    assert s.status.status_code is StatusCode.ERROR
    assert s.status.description == "ValueError: bad header"
    assert s.attributes is not None
    assert s.attributes["error.type"] == "ValueError"
    assert s.attributes["file.name"] == "a.csv"
    assert s.attributes["file.size"] == 12
    (event,) = s.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad header"
    assert "Traceback" in str(event.attributes["exception.stacktrace"])


def test_span_ok_drops_none_attributes_and_closing_a_generator_is_not_an_error(otel: TelemetryCapture) -> None:
    def chunks() -> Generator[bytes, None, None]:
        with tracing.span("blob.read", {"wharf.partner": "acme", "file.size": None}):
            yield b"a"
            yield b"b"

    gen = chunks()
    next(gen)
    gen.close()
    s = otel.span("blob.read")
    assert s.status.status_code is StatusCode.UNSET
    assert dict(s.attributes or {}) == {"wharf.partner": "acme"}
    assert not s.events


def test_record_error_marks_the_current_span_for_a_handled_failure(otel: TelemetryCapture) -> None:
    with tracing.span("poll"):
        try:
            raise TimeoutError("listing took too long")
        except TimeoutError as exc:
            tracing.record_error(exc)
    s = otel.span("poll")
    assert s.status.status_code is StatusCode.ERROR
    assert (s.attributes or {})["error.type"] == "TimeoutError"


def test_attribute_helpers_follow_semantic_conventions() -> None:
    assert tracing.server_attrs("sftp.example.com", 2222) == {"server.address": "sftp.example.com",
                                                                 "server.port": 2222}
    assert tracing.messaging_attrs("azure_storage_queue", "file-landed", "send") == {
        "messaging.system": "azure_storage_queue", "messaging.destination.name": "file-landed",
        "messaging.operation.type": "send"}
    assert tracing.file_attrs("/out/2024/a.csv", 10) == {"file.name": "a.csv", "file.size": 10}
    assert tracing.wharf_attrs(partner="acme", job_id="j1", transfer_id=None) == {
        tracing.PARTNER: "acme", tracing.JOB_ID: "j1"}


# --- propagation ---------------------------------------------------------------------------------------------

def test_traceparent_round_trip_through_a_queue_message_continues_the_trace(otel: TelemetryCapture) -> None:
    with tracing.span("poll.sftp", {"wharf.partner": "acme"}):
        with tracing.span("queue.send", kind=SpanKind.PRODUCER) as producer:
            message = tracing.inject_traceparent({"job_id": "j-1", "blob_path": "inbound/acme/a.csv"})
        wire = json.dumps(message)  # what goes on the queue
    assert trace.get_current_span().get_span_context().is_valid is False  # the hop: nothing is current

    received = json.loads(wire)
    with tracing.span_from(received, "file_landed.process", tracing.messaging_attrs(
            "azure_storage_queue", "file-landed", "process")) as consumer:
        assert tracing.current_trace_id() == _hex(producer.get_span_context().trace_id, 32)

    sent = otel.span("queue.send")
    got = otel.span("file_landed.process")
    assert got.context is not None and sent.context is not None and got.parent is not None
    assert got.context.trace_id == sent.context.trace_id
    assert got.parent.span_id == sent.context.span_id
    assert got.parent.is_remote
    assert got.kind is SpanKind.CONSUMER
    assert consumer.get_span_context().trace_id == sent.context.trace_id
    assert len(otel.trace_ids()) == 1


def test_capture_tells_one_connected_trace_from_a_broken_one(otel: TelemetryCapture) -> None:
    with tracing.span("poll", {tracing.JOB_ID: "j-c"}) as poll:
        message = tracing.inject_traceparent({})
        lost = {"traceparent": f"00-{_hex(poll.get_span_context().trace_id, 32)}-{'1' * 16}-01"}
    with tracing.span_from(message, "process", {tracing.JOB_ID: "j-c"}):
        pass
    trace_id = _hex(poll.get_span_context().trace_id, 32)
    assert [s.name for s in otel.roots(trace_id)] == ["poll"] and otel.orphans(trace_id) == []
    assert {s.name for s in otel.spans_where(tracing.JOB_ID, "j-c")} == {"poll", "process"}
    with tracing.span_from(lost, "deliver"):  # a parent nobody exported: the trace has a gap
        pass
    assert [s.name for s in otel.orphans(trace_id)] == ["deliver"]


def test_traceparent_round_trip_through_blob_metadata(otel: TelemetryCapture) -> None:
    with tracing.span("blob.upload") as parent:
        metadata = tracing.blob_metadata({"partner": "acme"})
    assert metadata["partner"] == "acme"
    assert set(metadata) <= {"partner", "traceparent", "tracestate"}
    assert metadata["traceparent"].split("-")[1] == _hex(parent.get_span_context().trace_id, 32)

    # Metadata read back from storage: str values; some tools upper-case the names.
    with tracing.continued_from({"Traceparent": metadata["traceparent"]}), tracing.span("route.deliver"):
        pass
    child = otel.span("route.deliver")
    assert child.context is not None and child.parent is not None
    assert child.context.trace_id == parent.get_span_context().trace_id
    assert child.parent.span_id == parent.get_span_context().span_id


def test_orchestration_input_carries_the_trace_to_every_activity(otel: TelemetryCapture) -> None:
    with tracing.span("orchestration.start") as starter:
        orchestration = tracing.orchestration_input({"job_id": "j-2", "blob_path": "inbound/x"})
    # The orchestrator is deterministic: it only copies keys from its input into activity inputs.
    activity_inputs = [tracing.carry_trace(orchestration, {"job_id": "j-2", "step": step})
                       for step in ("validate", "transform", "route")]
    assert tracing.carry_trace(orchestration, {"a": 1}) == tracing.carry_trace(orchestration, {"a": 1})
    for data in activity_inputs:
        with tracing.span_from(data, f"activity.{data['step']}", kind=SpanKind.INTERNAL):
            pass

    ids = {s.name: s for s in otel.finished_spans()}
    for step in ("validate", "transform", "route"):
        s = ids[f"activity.{step}"]
        assert s.context is not None and s.parent is not None
        assert s.context.trace_id == starter.get_span_context().trace_id
        assert s.parent.span_id == starter.get_span_context().span_id


def test_span_from_links_the_invocation_it_replaces(otel: TelemetryCapture) -> None:
    with tracing.span("poll") as poll:
        message = tracing.inject_traceparent({})
    with tracing.span("host.invocation") as invocation, tracing.span_from(message, "process"):
        pass
    s = otel.span("process")
    assert s.context is not None
    assert s.context.trace_id == poll.get_span_context().trace_id
    assert [link.context.span_id for link in s.links] == [invocation.get_span_context().span_id]


def test_continued_from_without_a_valid_traceparent_keeps_the_current_context(otel: TelemetryCapture) -> None:
    with tracing.span("outer") as outer:
        for carrier in (None, {}, {"job_id": "x"}, {"traceparent": "garbage"}):
            with tracing.continued_from(carrier):
                assert trace.get_current_span() is outer
    assert tracing.trace_carrier() == {}


def test_continued_from_accepts_service_bus_style_bytes_properties(otel: TelemetryCapture) -> None:
    with tracing.span("publish") as parent:
        props: dict[Any, Any] = {}
        tracing.inject_traceparent(props)
    wire = {k.encode(): v.encode() for k, v in props.items()}
    with tracing.continued_from(wire):
        assert tracing.current_trace_id() == _hex(parent.get_span_context().trace_id, 32)


def test_link_from_builds_fan_in_links(otel: TelemetryCapture) -> None:
    carriers = []
    for name in ("file-a", "file-b"):
        with tracing.span(name):
            carriers.append(tracing.inject_traceparent({}))
    assert tracing.link_from({}) is None
    with tracing.span("batch.archive", links=tracing.links_from([*carriers, None])):
        pass
    batch = otel.span("batch.archive")
    assert batch.context is not None
    linked = {link.context.trace_id for link in batch.links}
    sources = {s.context.trace_id for s in otel.finished_spans() if s.name.startswith("file-") and s.context}
    assert linked == sources and len(sources) == 2
    assert batch.context.trace_id not in sources


# --- logs ----------------------------------------------------------------------------------------------------

def test_log_records_carry_trace_span_and_job_id_from_job_context(
        otel: TelemetryCapture, json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    with tracing.span("process") as s, tracing.job_context("job-42", partner="acme"):
        logger.info("validated %d rows", 3)
    logger.info("outside")

    inside, outside = _lines(stream)
    ctx = s.get_span_context()
    assert inside["message"] == "validated 3 rows"
    assert inside["trace_id"] == _hex(ctx.trace_id, 32)
    assert inside["span_id"] == _hex(ctx.span_id, 16)
    assert inside["job_id"] == "job-42"
    assert inside["partner"] == "acme"
    assert inside["level"] == "INFO" and inside["logger"] == logger.name
    assert outside["trace_id"] == "" and outside["job_id"] == ""
    # The span is tagged by job_context too.
    assert (otel.span("process").attributes or {})[tracing.JOB_ID] == "job-42"


def test_explicit_extra_wins_over_job_context(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    with tracing.job_context("outer-job"):
        logger.info("a", extra=tracing.log_fields("explicit-job", rows=5))
        logger.info("b", extra=tracing.log_fields())
    first, second = _lines(stream)
    assert first["job_id"] == "explicit-job" and first["rows"] == 5
    assert second["job_id"] == "outer-job"


def test_otel_log_records_are_exported_with_trace_context_and_job_id(otel: TelemetryCapture) -> None:
    logger = logging.getLogger(f"test.telemetry.otel.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.INFO)
    with tracing.span("deliver") as s, tracing.job_context("job-7", partner="globex"):
        logger.warning("route %s slow", "sftp-out")
    (record,) = [r for r in otel.log_records() if r.log_record.body == "route sftp-out slow"]
    attrs = record.log_record.attributes or {}
    assert attrs["job_id"] == "job-7" and attrs["partner"] == "globex"
    assert record.log_record.trace_id == s.get_span_context().trace_id
    assert record.log_record.span_id == s.get_span_context().span_id


def test_configure_logging_installs_one_handler_json_or_human() -> None:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    try:
        handler = configure_logging("json", "INFO", stream=stream)
        again = configure_logging("human", "INFO", stream=stream)
        assert handler is not None and again is not None
        assert [h for h in root.handlers if h is handler] == []  # replaced, not duplicated
        with tracing.job_context("job-h"):
            logging.getLogger("test.human").info("hello")
        assert "job=job-h" in stream.getvalue() and "hello" in stream.getvalue()
    finally:
        for h in list(root.handlers):
            if type(h).__name__ == "_WharfStreamHandler":
                root.removeHandler(h)
        root.setLevel(level)


# --- metrics -------------------------------------------------------------------------------------------------

def test_metrics_are_recorded_with_the_right_attributes(otel: TelemetryCapture) -> None:
    partner = f"p{uuid.uuid4().hex[:6]}"
    metrics.record_ingest(partner, "sftp", 1024, 0.5)
    metrics.record_ingest(partner, "sftp", 2048, 1.5)
    metrics.record_failure(partner, "sftp", "Timeout")
    metrics.record_failure(partner, "mail", "disk on fire at 03:00")  # free text is not a dimension
    metrics.record_failure(partner, "sftp", PermissionError("denied"))
    metrics.record_job_done(partner, "COMPLETED", 12.0)
    metrics.record_queue_age("file-landed", datetime.now(UTC) - timedelta(seconds=30))
    metrics.record_breaker_state(partner, "sftp", "open")
    metrics.record_breaker_state(partner, "mail", metrics.BreakerState.HALF_OPEN)

    (files,) = otel.metric_points(metrics.FILES_INGESTED)
    assert files.attributes == {"partner": partner, "channel": "sftp"} and files.value == 2
    (size,) = otel.metric_points(metrics.BYTES_INGESTED)
    assert size.value == 3072
    (duration,) = otel.metric_points(metrics.TRANSFER_DURATION)
    assert duration.count == 2 and duration.sum == pytest.approx(2.0)
    failures = {(p.attributes["channel"], p.attributes["reason"]): p.value
                for p in otel.metric_points(metrics.FAILURES)}
    assert failures == {("sftp", "timeout"): 1, ("mail", "other"): 1, ("sftp", "permission"): 1}
    (job,) = otel.metric_points(metrics.JOB_DURATION)
    assert job.attributes == {"partner": partner, "status": "completed"} and job.sum == 12.0
    (age,) = otel.metric_points(metrics.QUEUE_MESSAGE_AGE)
    assert age.attributes == {"queue": "file-landed"} and 29 <= (age.sum or 0) <= 60
    breakers = {p.attributes["channel"]: p.value for p in otel.metric_points(metrics.BREAKER_STATE)}
    assert breakers == {"sftp": 2, "mail": 1}


def test_failure_reasons_are_a_closed_set() -> None:
    class AuthenticationException(Exception):  # paramiko's name, without importing paramiko
        pass

    assert metrics.failure_reason(AuthenticationException()) is metrics.FailureReason.AUTH
    assert metrics.failure_reason(FileNotFoundError()) is metrics.FailureReason.NOT_FOUND
    assert metrics.failure_reason("host-key") is metrics.FailureReason.HOST_KEY
    assert metrics.failure_reason(RuntimeError("x")) is metrics.FailureReason.OTHER
    assert metrics.failure_reason(None) is metrics.FailureReason.OTHER
    assert metrics.channel_label("FTP over pigeons") == "other"
    assert metrics.breaker_value("half-open") == 1


# --- start-up ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "env", "mode"), [
    ({}, {}, "none"),
    ({}, {"WHARF_PRINT_SPANS": "1"}, "console"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, {"WHARF_PRINT_SPANS": "1"}, "otlp"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
      "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, {}, "azure_monitor"),
    ({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}, {"OTEL_SDK_DISABLED": "true"}, "none"),
])
def test_mode_is_decided_from_settings_and_env(settings: dict[str, str], env: dict[str, str], mode: str) -> None:
    cfg = TelemetryConfig.from_settings(Settings.model_validate(settings), env)
    assert cfg.mode == mode


def test_config_reads_service_name_and_signal_endpoints_from_env() -> None:
    cfg = TelemetryConfig.from_settings(None, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/", "OTEL_SERVICE_NAME": "wharf-dev",
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:4318/v1/logs", "WHARF_VERSION": "1.2.3",
        "WHARF_LOG_FORMAT": "JSON"})
    assert cfg.mode == "otlp" and cfg.log_format == "json"
    assert cfg.otlp_signal_endpoint("traces") == "http://collector:4318/v1/traces"
    assert cfg.otlp_signal_endpoint("logs") == "http://logs:4318/v1/logs"
    attrs = cfg.resource().attributes
    assert attrs["service.name"] == "wharf-dev" and attrs["service.version"] == "1.2.3"
    assert TelemetryConfig.from_settings(None, {}).resource().attributes["service.name"] == "wharf"


def test_configure_telemetry_selects_azure_monitor_through_the_seam(
        otel: TelemetryCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.observability import sdk

    calls: list[TelemetryConfig] = []
    monkeypatch.setitem(sdk.INSTALLERS, "azure_monitor", calls.append)
    monkeypatch.setattr(setup, "_configured_mode", None)
    monkeypatch.setattr(sdk, "configure_logging", lambda *a, **k: None)
    settings = Settings.model_validate({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=0000-0000"})

    assert setup.configure_telemetry(settings, env={}) == "azure_monitor"
    assert setup.configure_telemetry(settings, env={}) == "azure_monitor"  # idempotent: installed once
    assert len(calls) == 1 and calls[0].appinsights_connection is not None
    assert "azure.monitor.opentelemetry" not in sys.modules  # the seam, not the real (heavy, networked) SDK


def test_azure_monitor_gets_wharf_redaction_resource_and_full_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from shared.observability import sdk

    received: dict[str, Any] = {}
    fake = types.ModuleType("azure.monitor.opentelemetry")
    fake.configure_azure_monitor = lambda **kwargs: received.update(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", fake)
    # As in a fresh worker process: no provider set yet.
    monkeypatch.setattr(sdk.trace, "get_tracer_provider", trace.ProxyTracerProvider)
    cfg = TelemetryConfig.from_settings(None, {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=k",
                                               "WHARF_PRINT_SPANS": "1"})
    sdk.install_azure_monitor(cfg)

    assert received["connection_string"] == "InstrumentationKey=k"
    assert isinstance(received["span_processors"][0], sdk.RedactingSpanProcessor)
    assert len(received["span_processors"]) == 2  # + the span printer
    assert isinstance(received["log_record_processors"][0], sdk.RedactingLogProcessor)
    assert received["resource"].attributes["service.name"] == "wharf"
    assert received["sampling_ratio"] == 1.0
    with_sampler = TelemetryConfig.from_settings(None, {"APPLICATIONINSIGHTS_CONNECTION_STRING": "k",
                                                        "OTEL_TRACES_SAMPLER": "microsoft.rate_limited"})
    received.clear()
    sdk.install_azure_monitor(with_sampler)
    assert "sampling_ratio" not in received  # the operator's sampler wins


def test_configure_telemetry_degrades_to_none_when_an_exporter_fails(
        otel: TelemetryCapture, monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.observability import sdk

    def broken(cfg: TelemetryConfig) -> None:
        raise RuntimeError("collector config broken: password=letmein99")

    monkeypatch.setitem(sdk.INSTALLERS, "otlp", broken)
    monkeypatch.setattr(setup, "_configured_mode", None)
    monkeypatch.setattr(sdk, "configure_logging", lambda *a, **k: None)
    mode = setup.configure_telemetry(None, force=True, env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"})
    assert mode == "none"
    with tracing.span("still-traced"):
        assert tracing.current_trace_id() != ""  # the SDK provider is still there: ids still propagate
    assert otel.spans_named("still-traced")


def test_span_printer_line() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from shared.observability.sdk import span_printer_processor

    stream = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(span_printer_processor(stream))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("poll.sftp", attributes={"wharf.partner": "acme", "file.size": 3,
                                                               "password": "swordfish99"}):
        pass
    line = stream.getvalue().strip()
    assert line.startswith("[span] ") and " poll.sftp " in line and " OK " in line
    assert "wharf.partner=acme" in line and "file.size=3" in line and "swordfish99" not in line
    assert "<root)" in line


def test_format_span_shows_errors(otel: TelemetryCapture) -> None:
    with pytest.raises(KeyError), tracing.span("route"):
        raise KeyError("missing")
    assert "ERROR(KeyError" in format_span(otel.span("route"))


# --- processes -----------------------------------------------------------------------------------------------

def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)


def test_importing_function_app_loads_no_telemetry_sdk_or_exporter() -> None:
    result = _run("""
        import json, sys
        import function_app
        heavy = ("azure.monitor.opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter")
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))
    """, {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_console_mode_prints_one_line_per_span_to_stderr() -> None:
    result = _run("""
        from shared.observability import setup, tracing
        print(setup.configure_telemetry())
        with tracing.span("poll.sftp", {"wharf.partner": "acme"}):
            with tracing.span("sftp.list", tracing.server_attrs("sftp.example.com", 22)):
                pass
    """, {"WHARF_PRINT_SPANS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "console"
    lines = [line for line in result.stderr.splitlines() if line.startswith("[span]")]
    assert [line.split()[2] for line in lines] == ["sftp.list", "poll.sftp"]
    assert "server.address=sftp.example.com server.port=22" in lines[0]
    assert lines[0].split()[1] == lines[1].split()[1]  # same trace


def test_otlp_mode_exports_traces_metrics_and_logs_without_secrets() -> None:
    """Real OTLP/HTTP exporters against a collector stub on loopback, in a child process."""
    result = _run("""
        import http.server, json, logging, threading
        received = {}
        class Collector(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.setdefault(self.path, []).append(body)
                self.send_response(200); self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()
            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"

        from shared import metrics
        from shared.observability import redaction, setup, tracing
        secret = "otlp-Planted-Secret-9f1"
        redaction.register_secret(secret)
        mode = setup.configure_telemetry(env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        log = logging.getLogger("child")
        with tracing.span("poll.sftp", {"wharf.partner": "acme", "note": secret}):
            log.warning("connecting with %s", secret)
            metrics.record_ingest("acme", "sftp", 10, 0.1)
        setup.flush()
        paths = sorted(received)
        leaked = any(secret.encode() in body for bodies in received.values() for body in bodies)
        spans = b"".join(received.get("/v1/traces", []))
        print(json.dumps({"mode": mode, "paths": paths, "leaked": leaked, "span": b"poll.sftp" in spans}))
    """)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"mode": "otlp", "paths": ["/v1/logs", "/v1/metrics", "/v1/traces"], "leaked": False,
                   "span": True}


# --- what Application Insights files telemetry under (tests/e2e/test_appinsights_envelopes.py end to end) -------

def test_the_service_name_is_the_function_apps_in_azure() -> None:
    assert TelemetryConfig.from_settings(env={}).service_name == "wharf"
    assert TelemetryConfig.from_settings(env={"WEBSITE_SITE_NAME": "func-wharf-x"}).service_name == "func-wharf-x"
    explicit = {"WEBSITE_SITE_NAME": "func-wharf-x", "OTEL_SERVICE_NAME": "wharf-eu"}
    assert TelemetryConfig.from_settings(env=explicit).service_name == "wharf-eu"


def test_a_recorded_exception_carries_the_job_on_its_event(otel: TelemetryCapture) -> None:
    from shared.services.activity_boundary import redacted_activity

    @redacted_activity
    def activity(ref: dict[str, str]) -> None:
        with tracing.span("blob.upload"):  # an inner span that knows no job
            raise ValueError("broken row")

    with pytest.raises(ValueError, match="broken row"):
        activity({"job_id": "job-1", "partner": "acme"})
    (event,) = otel.span("blob.upload").events
    assert event.name == "exception"
    assert (event.attributes or {}).get("wharf.job_id") == "job-1"
    assert (event.attributes or {}).get("wharf.partner") == "acme"
    with tracing.span("poll", {"wharf.partner": "globex"}) as s:
        tracing.record_error(RuntimeError("x"), s)
    (poll_event,) = otel.span("poll").events
    assert (poll_event.attributes or {}).get("wharf.partner") == "globex" and "wharf.job_id" not in (
        poll_event.attributes or {})
