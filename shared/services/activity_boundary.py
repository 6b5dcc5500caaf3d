"""What an activity hands to the Durable history (its result, or its failure's message and stack), redacted."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar

from shared.domain.errors import PermanentError
from shared.observability.redaction import redact, redact_data, redact_exception
from shared.observability.tracing import job_context, log_fields, span
from shared.workflows import PERMANENT

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _job_id(args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    """The job id of an activity's reference (its first argument), for logs; "" when it names none."""
    ref = args[0] if args else next(iter(kwargs.values()), None)
    return str(ref.get("job_id", "")) if isinstance(ref, Mapping) else ""


def _partner(args: tuple[object, ...], kwargs: Mapping[str, object]) -> str:
    ref = args[0] if args else next(iter(kwargs.values()), None)
    return str(ref.get("partner", "")) if isinstance(ref, Mapping) else ""


def redacted_activity(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Wrap an activity body `fn(ref)`: the result goes through `redact_data`, and an exception whose message
    (or a cause's) holds a secret is replaced by a RedactedError saying what it was, redacted. The Durable
    extension stores both in the orchestration history (and the orchestrator copies failure messages into
    its output and into job events). The original failure is logged (logs are redacted) with the job id."""

    @functools.wraps(fn)
    def activity(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            # The job for every log record and recorded exception inside (Application Insights filters on it).
            with job_context(_job_id(args, kwargs) or None, partner=_partner(args, kwargs) or None):
                result: _R = redact_data(fn(*args, **kwargs))
        except Exception as exc:
            clean = redact_exception(exc)
            if clean is exc:
                raise
            job_id = _job_id(args, kwargs)
            with span("activity.redacted_failure", {"wharf.job_id": job_id, "wharf.activity": fn.__name__,
                                                    "error.type": type(exc).__name__}):
                log.warning("activity %s failed; its error quoted a secret and is handed on redacted",
                            fn.__name__, exc_info=exc, extra=log_fields(job_id, activity=fn.__name__))
            raise clean from None
        return result

    return activity


def fails_fast(fn: Callable[_P, _R]) -> Callable[_P, _R | dict[str, str]]:
    """Wrap a processing step's activity so that a PermanentError (a catalogue or configuration problem, a
    destination that refuses on purpose) is not retried: the Durable retry policy cannot tell errors apart,
    so the activity returns `{PERMANENT: reason}` and the orchestrator fails the step at once
    (`shared.workflows.raise_permanent`). Everything else still raises and gets the step's retries."""

    @functools.wraps(fn)
    def activity(*args: _P.args, **kwargs: _P.kwargs) -> _R | dict[str, str]:
        try:
            return fn(*args, **kwargs)
        except PermanentError as exc:
            job_id = _job_id(args, kwargs)
            reason = redact(str(exc)).strip() or type(exc).__name__
            log.warning("activity %s failed for good (not retried): %s", fn.__name__, reason,
                        extra=log_fields(job_id, activity=fn.__name__, error_type=type(exc).__name__))
            return {PERMANENT: f"{type(exc).__name__}: {reason}"}

    return activity
