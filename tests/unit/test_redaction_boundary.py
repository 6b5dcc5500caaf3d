"""The redaction boundary of what Wharf stores and publishes: exact, cheap, and applied by every writer
(job store payloads, breaker, poll summaries, publishers, activity results and failures, blob URLs)."""

from __future__ import annotations

import inspect
import json
import logging
import random
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from shared.adapters.blobs import public_url
from shared.adapters.publishers import QueuePublisher, ServiceBusPublisher, envelope
from shared.adapters.tables import event_payload, log_message, transfer_row
from shared.domain.jobs import FileTransfer
from shared.domain.ledger import BreakerRecord, BreakerState
from shared.observability import redaction
from shared.observability.redaction import (
    REDACTED,
    RedactedError,
    redact,
    redact_data,
    redact_exception,
    redacted_json,
    register_secret,
)
from shared.services.activity_boundary import redacted_activity
from shared.services.breaker import CircuitBreaker
from shared.services.polls import PollOptions, PollTally, guarded_poll
from shared.workflows import failure_reason
from tests.fakes import FakeBreakers


@pytest.fixture
def secret() -> str:
    """A fresh registered secret, as the secrets adapter registers every value it hands out."""
    return register_secret(f"Planted-{uuid.uuid4().hex}")


def _reference(text: str) -> str:
    """redact() as it was before the screens: every pattern run on every text."""
    pattern = redaction._secret_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in redaction._PATTERNS:
        text = regex.sub(replacement, text)
    return text


_PIECES = ["pass", "word", "Password", "=", ":", " ", "sig", "SIG", "\u212a", "to", "\u212aen", "ken", "token",
           "s\u0131g", "\u0130", "\u017f", "secret", "Bearer ", "basic ", "eyJ", "hbGciOi", ".", "abcdefgh12",
           "://", "user", "@", "host", "-----BEGIN ", "RSA PRIVATE KEY-----", "\n", "SharedAccessSignature ",
           "sr=x&sig=y", '"', "'", "credential", "api_key", "\u00e9", "&", ";"]


@pytest.mark.parametrize("seed", range(5))
def test_the_screens_never_skip_a_pattern_that_would_match(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 12)))
        assert redact(text) == _reference(text), repr(text)


def test_redact_data_scrubs_every_string_and_sensitive_fields(secret: str) -> None:
    data = {"reason": f"login with {secret} refused", "password": "hunter22", "tokens": 3,
            "nested": [{"url": "https://h/c/b?sv=1&sig=abcdef123"}, (f"x{secret}", 1)], "ok": None}
    out = redact_data(data)
    assert out == {"reason": f"login with {REDACTED} refused", "password": REDACTED, "tokens": 3,
                   "nested": [{"url": f"https://h/c/b?sv=1&sig={REDACTED}"}, (f"x{REDACTED}", 1)], "ok": None}
    assert data["password"] == "hunter22"  # a copy: the caller's data is left as it was


@pytest.mark.parametrize("value", [
    {"partner": "acme", "file_name": "invoices.csv", "bytes": 10, "sha256": "ab" * 32},
    {"source": "sftp://127.0.0.1:2222/out/a.csv", "blob_path": "inbound/acme/a.csv"},
    {"file_name": "Überweisung.csv", "note": 'quote " and back\\slash'},
    {"reason": "PLANTED", "nested": {"deeper": ["PLANTED", 1, 2.5, True]}},
    {"secret_name": "demo-sftp-key", "connection": "AccountKey=abc123;x=y"},
    {"when": datetime(2026, 1, 2, tzinfo=UTC), "error": ValueError("with PLANTED inside")},
])
def test_redacted_json_is_the_dump_of_redacted_data(value: dict[str, Any], secret: str) -> None:
    value = json.loads(json.dumps(value, default=str).replace("PLANTED", secret)) if "PLANTED" in str(value) \
        else value
    expected = json.dumps(redact_data(value), default=lambda o: redact(str(o)), sort_keys=True)
    assert redacted_json(value, sort_keys=True) == expected
    assert secret not in expected


def test_redacted_json_catches_secrets_the_dump_escapes() -> None:
    odd = register_secret(f'pä"ss\\{uuid.uuid4().hex[:8]}')  # JSON escapes quotes, backslashes, non-ASCII
    text = redacted_json({"reason": f"refused {odd}"})
    assert odd not in json.loads(text)["reason"] and REDACTED in text


def test_a_clean_exception_is_kept_as_it_is() -> None:
    exc = ValueError("file a.csv: column 3 is not a number")
    assert redact_exception(exc) is exc


def test_an_exception_quoting_a_secret_becomes_a_redacted_error_naming_its_causes(secret: str) -> None:
    try:
        try:
            raise OSError(f"connect with {secret} failed")
        except OSError as inner:
            raise RuntimeError("could not publish") from inner
    except RuntimeError as exc:
        clean = redact_exception(exc)
    assert isinstance(clean, RedactedError)
    assert str(clean) == f"RuntimeError: could not publish; caused by OSError: connect with {REDACTED} failed"


def test_an_activity_result_and_failure_are_handed_on_redacted(secret: str,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    @redacted_activity
    def deliver(ref: dict[str, Any]) -> dict[str, Any]:
        if ref.get("fail") == "secret":
            raise ConnectionError(f"broker refused {secret}")
        if ref.get("fail") == "plain":
            raise ConnectionError("broker unreachable")
        return {"kind": "blob", "note": f"used {secret}"}

    assert deliver.__name__ == "deliver" and list(inspect.signature(deliver).parameters) == ["ref"]
    assert deliver({"job_id": "job-1"}) == {"kind": "blob", "note": f"used {REDACTED}"}
    with pytest.raises(ConnectionError, match="broker unreachable"):
        deliver({"job_id": "job-1", "fail": "plain"})
    with caplog.at_level(logging.WARNING, logger="shared.services.activity_boundary"), \
            pytest.raises(RedactedError) as raised:
        deliver({"job_id": "job-1", "fail": "secret"})
    assert str(raised.value) == f"ConnectionError: broker refused {REDACTED}"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    (record,) = caplog.records
    assert getattr(record, "job_id", "") == "job-1" and record.exc_info is not None  # the original failure, logged


def test_failure_reasons_are_redacted(secret: str) -> None:
    assert failure_reason(ConnectionError(f"refused {secret}\nmore")) == f"refused {REDACTED}"


def test_the_breaker_stores_its_last_error_redacted(secret: str) -> None:
    store = FakeBreakers()
    CircuitBreaker(store, "sftp", threshold=1).record_failure("acme", f"login with {secret} refused")
    assert store.get("sftp", "acme").last_error == f"login with {REDACTED} refused"


def _poll(store: FakeBreakers, run: Any) -> Any:
    services: Any = SimpleNamespace(breakers=store)
    return guarded_poll(services, SimpleNamespace(id="acme", enabled=True), channel="sftp",
                        opts=PollOptions(), requested_by="test", progress=None, attrs={}, run=run,
                        poll_failures=(ConnectionError,))


def test_poll_summaries_carry_their_errors_redacted(secret: str) -> None:
    store = FakeBreakers()

    def refused(tally: PollTally) -> None:
        raise ConnectionError(f"login with {secret} refused")

    summary = _poll(store, refused)
    assert (summary.status, summary.error) == ("failed", f"login with {REDACTED} refused")
    assert store.get("sftp", "acme").last_error == f"login with {REDACTED} refused"

    def one_file_fails(tally: PollTally) -> None:
        tally.failed("/out/a.csv", 3, "read_error", message=f"handle of {secret} closed")

    summary = _poll(FakeBreakers(), one_file_fails)
    assert [f.reason for f in summary.failed_files] == [f"read_error: handle of {REDACTED} closed"]


def test_a_circuit_open_summary_redacts_a_last_error_stored_before(secret: str) -> None:
    store = FakeBreakers()
    store.save(BreakerRecord(channel="sftp", partner="acme", state=BreakerState.OPEN, failures=5,
                             opened_at=datetime.now(UTC), last_error=f"old error with {secret}"))
    summary = _poll(store, lambda tally: None)
    assert summary.status == "circuit_open" and secret not in summary.error and REDACTED in summary.error


def test_published_events_are_redacted(secret: str) -> None:
    env = envelope("job.failed", {"job_id": "job-1", "reason": f"route failed: {secret}"}, f"acme/{secret}")
    assert env["data"]["reason"] == f"route failed: {REDACTED}" and env["subject"] == f"acme/{REDACTED}"

    sent: list[dict[str, Any]] = []
    queues: Any = SimpleNamespace(send=lambda queue, message, visibility_timeout=None: sent.append(dict(message)))
    QueuePublisher(queues, "events").publish("job.failed", {"job_id": "job-1", "reason": secret})
    assert sent[0]["data"]["reason"] == REDACTED
    message = ServiceBusPublisher.build_message("job.failed", {"job_id": "job-1", "reason": secret})
    assert secret not in b"".join(message.body).decode()


def test_job_store_rows_are_redacted_before_they_are_written(secret: str) -> None:
    payload = event_payload("job-1", {"reason": f"failed: {secret}", "step": "route"})
    assert json.loads(payload) == {"reason": f"failed: {REDACTED}", "step": "route"}
    assert log_message(f"{'x' * 29_990} {secret}") == f"{'x' * 29_990} {REDACTED}"[:30_000]
    row = transfer_row(FileTransfer(job_id="job-1", transfer_id="tr-1", file_name="a.csv",
                                    source=f"sftp://ingest:{secret}@h/out/a.csv", destination="inbound/acme/a.csv",
                                    status="LANDED", transfer_date=datetime.now(UTC)))
    assert secret not in row.source and row.destination == "inbound/acme/a.csv"


def test_blob_urls_lose_their_query_string() -> None:
    url = "http://127.0.0.1:10000/devstoreaccount1/processed/acme/a.jsonl?se=2026&sp=rw&sv=2026&sig=abc%3D"
    assert public_url(url) == "http://127.0.0.1:10000/devstoreaccount1/processed/acme/a.jsonl"
    assert public_url("https://a.blob.core.windows.net/c/b.csv") == "https://a.blob.core.windows.net/c/b.csv"


def test_build_services_registers_the_storage_sas_for_redaction() -> None:
    from shared.bootstrap import build_services
    from shared.settings import Settings

    sas = f"se=2026-12-02&sp=rw&sv=2026-10-06&ss=bqt&srt=sco&sig={uuid.uuid4().hex}%3D"
    build_services(Settings(AzureWebJobsStorage=f"BlobEndpoint=http://127.0.0.1:10000/a;SharedAccessSignature={sas}"))
    assert sas not in redact(f"GET /c/b?{sas}")


def test_http_error_bodies_are_redacted(secret: str) -> None:
    from functions.http_util import error_response

    body = json.loads(error_response(503, f"queue unavailable: {secret}").get_body())
    assert body == {"error": f"queue unavailable: {REDACTED}"}
