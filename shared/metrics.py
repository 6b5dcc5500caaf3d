"""Metrics an operator watches: files and bytes ingested, failures, durations, queue age, breaker state.

Instruments are created lazily from the global meter provider (the API's proxy hands them over to the real
provider once `configure_telemetry()` sets it), so importing this module costs nothing and recording before
start-up is a no-op. Attribute values are low-cardinality on purpose: `reason` is a closed set
(`FailureReason`, anything else becomes "other"), `channel` and `status` are normalised the same way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, StrEnum
from functools import cache
from typing import Any

from opentelemetry import metrics

from shared.observability.redaction import redact

METER_NAME = "wharf"

FILES_INGESTED = "wharf.files.ingested"
BYTES_INGESTED = "wharf.bytes.ingested"
FAILURES = "wharf.failures"
TRANSFER_DURATION = "wharf.transfer.duration"
JOB_DURATION = "wharf.job.duration"
QUEUE_MESSAGE_AGE = "wharf.queue.message_age"
BREAKER_STATE = "wharf.breaker.state"
MESSAGES_DEAD_LETTERED = "wharf.messages.dead_lettered"
DELIVERY_STATUS = "wharf.deliveries.status"
POISON_DEPTH = "wharf.queue.poison_depth"
SLA_MISSED = "wharf.sla.missed"
SLA_RECOVERED = "wharf.sla.recovered"
SECRET_EXPIRES_IN_DAYS = "wharf.secret.expires_in_days"  # noqa: S105  (a metric name, not a secret)


class FailureReason(StrEnum):
    """Why something failed, as a metric dimension. Map to one of these; never put a message here."""

    AUTH = "auth"
    HOST_KEY = "host_key"
    CONNECTION = "connection"
    TIMEOUT = "timeout"
    NOT_FOUND = "not_found"
    PERMISSION = "permission"
    THROTTLED = "throttled"
    CIRCUIT_OPEN = "circuit_open"
    INTEGRITY = "integrity"
    VALIDATION = "validation"
    TRANSFORM = "transform"
    ROUTING = "routing"
    DELIVERY = "delivery"
    TOO_LARGE = "too_large"
    CONFLICT = "conflict"
    CONFIGURATION = "configuration"
    OTHER = "other"


class BreakerState(int, Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


CHANNELS = frozenset({"sftp", "mail", "email", "graph", "upload", "drop", "blob", "servicebus", "queue", "http",
                      "process"})
JOB_STATUSES = frozenset({"completed", "failed", "cancelled", "running", "pending", "skipped"})

# Exception class names (anywhere in the MRO) -> reason; names, so neither paramiko nor the SDKs are imported.
_REASON_BY_EXCEPTION = {
    "AuthenticationException": FailureReason.AUTH,
    "ClientAuthenticationError": FailureReason.AUTH,
    "BadHostKeyException": FailureReason.HOST_KEY,
    "HostKeyMismatchError": FailureReason.HOST_KEY,
    "TimeoutError": FailureReason.TIMEOUT,
    "ServiceResponseTimeoutError": FailureReason.TIMEOUT,
    "NotFoundError": FailureReason.NOT_FOUND,
    "FileNotFoundError": FailureReason.NOT_FOUND,
    "ResourceNotFoundError": FailureReason.NOT_FOUND,
    "PermissionError": FailureReason.PERMISSION,
    "ConflictError": FailureReason.CONFLICT,
    "ResourceExistsError": FailureReason.CONFLICT,
    "ConfigurationError": FailureReason.CONFIGURATION,
    "ValidationError": FailureReason.VALIDATION,
    "CircuitOpenError": FailureReason.CIRCUIT_OPEN,
    "DependencyUnavailableError": FailureReason.CONNECTION,
    "SSHException": FailureReason.CONNECTION,
    "ServiceRequestError": FailureReason.CONNECTION,
    "ConnectionError": FailureReason.CONNECTION,
}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def failure_reason(value: FailureReason | str | BaseException | None) -> FailureReason:
    """A closed-set reason from an enum, a string ("timeout", "Timeout") or an exception; unknown -> OTHER."""
    if isinstance(value, FailureReason):
        return value
    if isinstance(value, BaseException):
        for cls in type(value).__mro__:
            if cls.__name__ in _REASON_BY_EXCEPTION:
                return _REASON_BY_EXCEPTION[cls.__name__]
        return FailureReason.OTHER
    if isinstance(value, str):
        try:
            return FailureReason(value.strip().lower().replace("-", "_").replace(" ", "_"))
        except ValueError:
            return FailureReason.OTHER
    return FailureReason.OTHER


def _label(value: Any, allowed: frozenset[str]) -> str:
    text = str(value.value if isinstance(value, Enum) else value or "").strip().lower()
    return text if text in allowed else "other"


def _name(value: str | None) -> str:
    """A partner or queue name as a dimension: case kept, odd characters replaced, never a secret."""
    return _SAFE_NAME.sub("_", redact(str(value or "").strip()))[:64] or "unknown"


def channel_label(value: str | Enum | None) -> str:
    return _label(value, CHANNELS)


@dataclass(frozen=True)
class _Instruments:
    files: Any
    bytes: Any
    failures: Any
    transfer_duration: Any
    job_duration: Any
    queue_age: Any
    breaker: Any
    dead_lettered: Any
    poison_depth: Any
    sla_missed: Any
    sla_recovered: Any
    secret_expiry: Any
    delivery_status: Any


# Durations in seconds: boundaries an operator reads (the SDK's defaults are made for milliseconds).
_TRANSFER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_JOB_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
_AGE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)


@cache
def instruments() -> _Instruments:
    meter = metrics.get_meter(METER_NAME)
    return _Instruments(
        files=meter.create_counter(FILES_INGESTED, unit="{file}", description="Files ingested"),
        bytes=meter.create_counter(BYTES_INGESTED, unit="By", description="Bytes ingested"),
        failures=meter.create_counter(FAILURES, unit="{failure}", description="Failures by partner and reason"),
        transfer_duration=meter.create_histogram(
            TRANSFER_DURATION, unit="s", description="Duration of one file transfer",
            explicit_bucket_boundaries_advisory=_TRANSFER_BUCKETS),
        job_duration=meter.create_histogram(
            JOB_DURATION, unit="s", description="Duration of a job, from creation to a final status",
            explicit_bucket_boundaries_advisory=_JOB_BUCKETS),
        queue_age=meter.create_histogram(
            QUEUE_MESSAGE_AGE, unit="s", description="Age of a queue message when a worker picks it up",
            explicit_bucket_boundaries_advisory=_AGE_BUCKETS),
        breaker=meter.create_gauge(
            BREAKER_STATE, unit="1", description="Breaker per partner and channel: 0 closed, 1 half-open, 2 open"),
        dead_lettered=meter.create_counter(
            MESSAGES_DEAD_LETTERED, unit="{message}",
            description="Queue messages Wharf moved to <queue>-poison at once (never retried), by queue and reason"),
        poison_depth=meter.create_gauge(
            POISON_DEPTH, unit="{message}",
            description="Messages waiting in a <queue>-poison queue (read by the jobs sweep, health details, CLI)"),
        sla_missed=meter.create_counter(
            SLA_MISSED, unit="{window}",
            description="Expected-file windows that closed with too few matching files, by partner and expectation"),
        sla_recovered=meter.create_counter(
            SLA_RECOVERED, unit="{window}",
            description="Missed windows whose files arrived late (before the next window), by partner and expectation"),
        secret_expiry=meter.create_gauge(
            SECRET_EXPIRES_IN_DAYS, unit="d", description="Days until a secret the catalogue references expires"),
        delivery_status=meter.create_counter(
            DELIVERY_STATUS, unit="{report}",
            description="Delivery status reports matched to sent email, by partner and status"),
    )


def record_ingest(partner: str, channel: str | Enum, bytes: int, duration: float) -> None:
    """One file ingested: files +1, bytes +n, transfer duration (seconds)."""
    attrs = {"partner": _name(partner), "channel": channel_label(channel)}
    inst = instruments()
    inst.files.add(1, attrs)
    inst.bytes.add(max(int(bytes), 0), attrs)
    inst.transfer_duration.record(max(float(duration), 0.0), attrs)


def record_transfer(partner: str, channel: str | Enum, duration: float) -> None:
    """A transfer that is not an ingestion (a delivery to a route): its duration only."""
    instruments().transfer_duration.record(max(float(duration), 0.0),
                                           {"partner": _name(partner), "channel": channel_label(channel)})


def record_failure(partner: str, channel: str | Enum, reason: FailureReason | str | BaseException | None) -> None:
    """A failure, by partner, channel and a closed-set reason (an exception is mapped by its type)."""
    instruments().failures.add(1, {"partner": _name(partner), "channel": channel_label(channel),
                                   "reason": failure_reason(reason).value})


DELIVERY_STATUSES = frozenset({"delivered", "bounced", "delayed"})


def record_delivery_status(partner: str, status: str) -> None:
    """A delivery status notification matched to a sent email (delivered, bounced, delayed)."""
    instruments().delivery_status.add(1, {"partner": _name(partner), "status": _label(status, DELIVERY_STATUSES)})


def record_job_done(partner: str, status: str | Enum, duration: float) -> None:
    """A job reached a final status; duration in seconds from creation."""
    instruments().job_duration.record(max(float(duration), 0.0),
                                      {"partner": _name(partner), "status": _label(status, JOB_STATUSES)})


def record_queue_age(queue: str, inserted_at: datetime | float | None, *, now: datetime | None = None) -> None:
    """How long a message waited: `inserted_at` is the message's insertion time (datetime, or epoch seconds)."""
    if inserted_at is None:
        return
    current = now or datetime.now(UTC)
    if isinstance(inserted_at, datetime):
        start = inserted_at if inserted_at.tzinfo else inserted_at.replace(tzinfo=UTC)
        age = (current - start).total_seconds()
    else:
        age = current.timestamp() - float(inserted_at)
    instruments().queue_age.record(max(age, 0.0), {"queue": _name(queue)})


#: `reason` values of wharf.messages.dead_lettered (shared/domain/hostmessages.py BadMessageReason).
DEAD_LETTER_REASONS = frozenset({"undecodable", "wrong_shape", "invalid_field", "unknown_partner", "no_source",
                                 "unknown_job", "job_mismatch"})


def record_dead_lettered(queue: str, reason: str | Enum) -> None:
    """A message moved to `<queue>-poison` by Wharf itself, with a closed-set reason."""
    instruments().dead_lettered.add(1, {"queue": _name(queue), "reason": _label(reason, DEAD_LETTER_REASONS)})


def record_poison_depth(queue: str, depth: int) -> None:
    """How many messages a poison queue holds now (`queue` is the poison queue's name)."""
    instruments().poison_depth.set(max(int(depth), 0), {"queue": _name(queue)})


_EXPECTATION = re.compile(r"[^A-Za-z0-9_.*?-]")


def _expectation(value: str) -> str:
    """An expectation key (an id or a name pattern such as `orders_*.csv`) as a dimension, globs kept."""
    return _EXPECTATION.sub("_", redact(str(value or "").strip()))[:64] or "unknown"


def record_sla_missed(partner: str, expectation: str) -> None:
    """A window closed with fewer matching files than expected (once per window, across instances)."""
    instruments().sla_missed.add(1, {"partner": _name(partner), "expectation": _expectation(expectation)})


def record_sla_recovered(partner: str, expectation: str) -> None:
    """A missed window's files arrived late, before the next window opened."""
    instruments().sla_recovered.add(1, {"partner": _name(partner), "expectation": _expectation(expectation)})


def breaker_value(state: BreakerState | int | str | Enum) -> int:
    if isinstance(state, BreakerState):
        return state.value
    if isinstance(state, int) and not isinstance(state, bool):
        return BreakerState(state).value
    text = str(state.value if isinstance(state, Enum) else state).strip().lower().replace("-", "_")
    return BreakerState[text.upper()].value


def record_breaker_state(partner: str, channel: str | Enum, state: BreakerState | int | str | Enum) -> None:
    """Current breaker state (0 closed, 1 half-open, 2 open); "closed"/"half_open"/"open" accepted too."""
    instruments().breaker.set(breaker_value(state), {"partner": _name(partner), "channel": channel_label(channel)})


class Stopwatch:
    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._end: float | None = None

    @property
    def seconds(self) -> float:
        return (self._end if self._end is not None else time.perf_counter()) - self._start

    def stop(self) -> float:
        self._end = time.perf_counter()
        return self.seconds


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """`with stopwatch() as sw: ...` then `sw.seconds` (monotonic)."""
    sw = Stopwatch()
    try:
        yield sw
    finally:
        sw.stop()


def record_secret_expiry(secret: str, days: float) -> None:
    """Days until a secret the catalogue references expires (the daily secrets_expiry timer; never the value)."""
    instruments().secret_expiry.set(round(days, 2), {"secret": secret})
