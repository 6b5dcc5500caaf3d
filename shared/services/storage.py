"""Which storage errors mean "storage is not there now": a poll stops at the first one instead of going on
file by file (each try would wait out the retries again; README "When storage goes away")."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError


def storage_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what it was raised from, `raise ... from`) says storage could not be reached, did
    not answer in time, or answered a server error (5xx) once the client's retries were spent."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        if isinstance(current, (ServiceRequestError, ServiceResponseError)):
            return True
        if isinstance(current, HttpResponseError):
            status = current.status_code or getattr(current.response, "status_code", None) or 0
            if int(status) >= 500:
                return True
        current = current.__cause__
    return False


def one_line(exc: BaseException) -> str:
    """The first line of an error's text (the SDK's messages go on for lines: error codes, request ids)."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


__all__ = ["one_line", "storage_unavailable"]
