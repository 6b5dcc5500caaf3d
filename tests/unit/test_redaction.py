"""Secrets never reach exported spans, metrics or logs: registered values and well-known patterns are scrubbed."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from shared import metrics
from shared.observability import setup, tracing
from shared.observability.logs import JsonFormatter, TelemetryLogFilter, enrich_record
from shared.observability.redaction import REDACTED, redact, redact_attributes, register_secret
from shared.observability.sdk import (
    RedactingSpanExporter,
    RedactingSpanProcessor,
    TelemetryCapture,
    TelemetryConfig,
    _adopt,
)


def _b64(n: int) -> str:
    return base64.b64encode(os.urandom(n)).decode()


def _pem() -> str:
    body = _b64(600)
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END OPENSSH PRIVATE KEY-----\n"


@dataclass(frozen=True)
class Planted:
    password: str
    pem: str
    client_secret: str
    account_key: str

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=https;AccountName=wharfprod;AccountKey={self.account_key};"
                "EndpointSuffix=core.windows.net")

    def needles(self) -> list[str]:
        """Every value, and the fragments of the key a partial leak would show."""
        pem_lines = [line for line in self.pem.splitlines() if line and not line.startswith("-----")]
        return [self.password, self.client_secret, self.account_key, *pem_lines]


@pytest.fixture
def otel() -> TelemetryCapture:
    return setup.for_tests()


@pytest.fixture
def planted() -> Planted:
    secret = Planted(password=f"pw-{uuid.uuid4().hex[:12]}!", pem=_pem(), client_secret=f"cs~{uuid.uuid4().hex}",
                     account_key=_b64(64))
    # What the secrets adapter does for every value it returns (the connection string's key is *not*
    # registered: the AccountKey= pattern must catch it on its own).
    for value in (secret.password, secret.pem, secret.client_secret):
        register_secret(value)
    return secret


@pytest.fixture
def json_stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TelemetryLogFilter())
    logger = logging.getLogger(f"test.redaction.{uuid.uuid4().hex[:8]}")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


# --- patterns ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "leak"), [
    ("sftp login password=Tr0ub4dor&3 failed", "Tr0ub4dor"),
    ('{"user": "svc", "password": "correct horse battery"}', "correct horse"),
    ("AccountName=a;AccountKey=QmFzZTY0S2V5PT0=;EndpointSuffix=core.windows.net", "QmFzZTY0S2V5PT0"),
    ("Endpoint=sb://ns/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0a2V5MTIz=", "c2VjcmV0a2V5MTIz"),
    ("SharedAccessSignature sr=ns%2Ftopic&sig=abcDEF123%2B%3D&se=1700000000&skn=send", "abcDEF123"),
    ("BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig=Zm9vYmFy%3D", "Zm9vYmFy"),
    ("GET https://a.blob.core.windows.net/c/b.csv?sv=2022-11-02&sp=r&sig=S1gnatureValue%3D&se=2030", "S1gnature"),
    ("token request with client_secret=Qx8~abcdefghijklmnop", "Qx8~abcdef"),
    ("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl", "eyJzdWIi"),
    ("header Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("connecting to sftp://ingest:s3cr3tpass@sftp.example.com:22/out", "s3cr3tpass"),
    ("key: -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc\n-----END RSA PRIVATE KEY----- done", "MIIEow"),
    ("truncated -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq", "MIIEvQ"),
    ("-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBGT\n-----END PGP PRIVATE KEY BLOCK-----", "lQOYBGT"),
    ("--passphrase 'x' passphrase: hunter22", "hunter22"),
])
def test_well_known_patterns_are_redacted(text: str, leak: str) -> None:
    out = redact(text)
    assert leak not in out
    assert REDACTED in out or "[REDACTED PRIVATE KEY]" in out


def test_ordinary_text_is_left_alone() -> None:
    for text in ("polled 3 files from acme in 1.2s", "secret 'demo-sftp-key' not found (looked in env)",
                 "inbound/acme/2024/05/01/t1/a.csv", "signature check ok", "tokens: many"):
        assert redact(text) == text


def test_registered_secrets_are_redacted_anywhere_in_text() -> None:
    value = f"S3cret-{uuid.uuid4().hex[:8]}/+="
    register_secret(value)
    register_secret("abc")  # too short to register: would shred every log line
    assert redact(f"using {value} now") == f"using {REDACTED} now"
    assert value not in redact(f"url-encoded: {value.replace('/', '%2F').replace('+', '%2B').replace('=', '%3D')}")
    assert redact("abc") == "abc"
    register_secret(None)
    register_secret(b"")


def test_register_secret_returns_its_argument_for_one_line_adapters() -> None:
    value = f"kv-{uuid.uuid4().hex}"
    assert register_secret(value) is value
    assert register_secret(None) is None
    assert redact(value) == REDACTED


def test_secret_settings_are_registered_at_start_up() -> None:
    from shared.observability.redaction import register_settings_secrets
    from shared.settings import Settings

    sb_key = _b64(32)
    settings = Settings.model_validate({
        "SERVICEBUS_CONNECTION_STRING": f"Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey={sb_key}",
        "KEY_VAULT_URL": "https://wharf-kv.vault.azure.net/"})
    register_settings_secrets(settings)
    assert sb_key not in redact(f"sb key is {sb_key}")
    assert redact("vault https://wharf-kv.vault.azure.net/") == "vault https://wharf-kv.vault.azure.net/"


def test_each_line_of_a_registered_key_is_a_secret_on_its_own() -> None:
    pem = _pem()
    register_secret(pem)
    line = pem.splitlines()[3]
    assert line not in redact(f"partial dump: {line}")


def test_attributes_sensitive_keys_bodies_and_lengths() -> None:
    out = redact_attributes({
        "sftp.password": "anything-at-all", "http.request.header.authorization": "x", "db.connection_string": "y",
        "messaging.message.body": '{"rows": []}', "file.content": "a,b,c", "wharf.partner": "acme",
        "file.size": 10, "note": "x" * 5000, "tags": ["ok", "password=zzz9"],
    })
    assert out["sftp.password"] == REDACTED
    assert out["http.request.header.authorization"] == REDACTED
    assert out["db.connection_string"] == REDACTED
    assert "messaging.message.body" not in out and "file.content" not in out
    assert out["wharf.partner"] == "acme" and out["file.size"] == 10
    assert len(out["note"]) < 2100 and out["note"].endswith("[truncated]")
    assert out["tags"] == ["ok", f"password={REDACTED}"]


# --- the planted secrets, end to end -------------------------------------------------------------------------

def test_planted_secrets_appear_nowhere_in_exported_spans_metrics_or_logs(
        otel: TelemetryCapture, planted: Planted, json_stream: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_stream
    raw = trace.get_tracer("some.library")  # not Wharf's helper: only the pipeline can save it

    # Attributes through the helper, and behind its back.
    with tracing.span("sftp.connect", {"sftp.password": planted.password, "note": f"key {planted.pem}",
                                         "wharf.partner": "acme"}):
        trace.get_current_span().set_attribute("auth.detail", f"client_secret={planted.client_secret}")
        trace.get_current_span().set_attribute("storage", planted.connection_string)
        trace.get_current_span().add_event("login", {"using": planted.password})
    with raw.start_as_current_span("library.call", attributes={"url.full": planted.connection_string}):
        trace.get_current_span().set_attribute("secret.echo", planted.client_secret)

    # Exception messages: through span(), and through the SDK's own recording (status description too).
    with pytest.raises(PermissionError), tracing.span("graph.token"):
        raise PermissionError(f"AADSTS7000215: invalid client secret {planted.client_secret}")
    with pytest.raises(ConnectionError), raw.start_as_current_span("library.fail"):
        raise ConnectionError(f"login failed password={planted.password} key={planted.pem}")

    # Logs: message args, extras, tracebacks (to the JSON stream and to the OTel log pipeline).
    with tracing.span("poll"), tracing.job_context("job-s", partner="acme"):
        logger.info("connecting with %s and %s", planted.password, planted.connection_string)
        logger.info("token", extra={"client_secret": planted.client_secret, "detail": planted.pem})
        try:
            raise RuntimeError(f"bad key {planted.pem} for {planted.connection_string}")
        except RuntimeError:
            logger.exception("delivery failed")

    # Metrics: dimensions are names, but even a secret misused as one must not get out.
    metrics.record_failure(planted.password, "sftp", f"auth {planted.client_secret}")
    metrics.record_ingest(planted.client_secret, "sftp", 10, 0.1)

    exported = otel.exported_text()
    logged = stream.getvalue()
    assert otel.finished_spans() and otel.log_records() and otel.metric_points(metrics.FAILURES)
    assert "delivery failed" in logged and "RuntimeError" in logged  # the log lines are there, scrubbed
    for needle in planted.needles():
        assert needle not in exported, f"leaked into exported telemetry: {needle[:12]}..."
        assert needle not in logged, f"leaked into the log stream: {needle[:12]}..."

    fail = otel.span("library.fail")
    assert fail.status.status_code is StatusCode.ERROR and "ConnectionError" in (fail.status.description or "")
    assert (otel.span("sftp.connect").attributes or {})["wharf.partner"] == "acme"  # the rest is kept


def test_the_processor_scrubs_spans_in_place_before_later_exporters(planted: Planted) -> None:
    """Pins the in-place scrub Azure Monitor's pipeline relies on, against the SDK version in use."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactingSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(f"call {planted.password}") as s:
        s.set_attribute("late", planted.client_secret)
        s.add_event("e", {"value": planted.password})
        s.set_status(Status(StatusCode.ERROR, f"password={planted.password}"))
    (span,) = exporter.get_finished_spans()
    text = span.to_json()
    assert planted.password not in text and planted.client_secret not in text
    assert (span.attributes or {})["late"] == REDACTED


def test_the_exporter_wrapper_redacts_with_public_api_only(planted: Planted) -> None:
    inner = InMemorySpanExporter()
    span = ReadableSpan(name="x", attributes={"password": "p", "msg": f"using {planted.password}"},
                        events=[Event("exception", {"exception.message": planted.client_secret})],
                        status=Status(StatusCode.ERROR, planted.client_secret))
    RedactingSpanExporter(inner).export([span])
    (out,) = inner.get_finished_spans()
    assert planted.password not in out.to_json() and planted.client_secret not in out.to_json()
    clean = ReadableSpan(name="y", attributes={"a": 1})
    RedactingSpanExporter(inner).export([clean])
    assert inner.get_finished_spans()[-1] is clean  # nothing to redact: passed through as is


def test_a_provider_configured_before_us_gets_redaction_first(planted: Planted) -> None:
    """The Functions worker may configure Azure Monitor itself: Wharf adopts its provider, redacting first."""
    exporter = InMemorySpanExporter()
    foreign = TracerProvider()
    foreign.add_span_processor(SimpleSpanProcessor(exporter))
    _adopt(foreign, TelemetryConfig())
    with foreign.get_tracer("t").start_as_current_span("s") as s:
        s.set_attribute("note", planted.password)
    assert planted.password not in exporter.get_finished_spans()[0].to_json()


def test_log_filter_scrubs_message_args_extras_and_traceback(planted: Planted) -> None:
    try:
        raise ValueError(f"boom {planted.password}")
    except ValueError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "login %s with %s", (planted.password, "ok"),
                                   (type(exc), exc, exc.__traceback__))
    record.__dict__.update(client_secret=planted.client_secret, conn=planted.connection_string)
    enrich_record(record)
    assert record.getMessage() == f"login {REDACTED} with ok"
    assert planted.password not in (record.exc_text or "") and "ValueError" in (record.exc_text or "")
    assert record.__dict__["client_secret"] == REDACTED
    assert planted.account_key not in record.__dict__["conn"]
    formatted = json.loads(JsonFormatter().format(record))
    assert planted.password not in json.dumps(formatted)
