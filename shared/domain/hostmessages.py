"""Queue messages as a queue-triggered function receives them (the host has base64-decoded them), and the
permanent ways one can be bad: a message that can never be processed is dead-lettered, not retried."""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.domain.errors import WharfError

M = TypeVar("M", bound=BaseModel)

#: pydantic error types that mean "not this message's shape" (rather than "a field's value is refused").
_SHAPE_ERRORS = frozenset({"missing", "model_type", "model_attributes_type", "dict_type", "string_type", "int_type",
                           "int_parsing", "datetime_type", "datetime_parsing", "bool_type", "float_type",
                           "int_from_float"})


class BadMessageReason(StrEnum):
    """Why a message is dead-lettered: a closed set (a metric dimension; the detail says the rest)."""

    UNDECODABLE = "undecodable"  # not UTF-8 JSON
    WRONG_SHAPE = "wrong_shape"  # JSON, but not an object with the message's fields and types
    INVALID_FIELD = "invalid_field"  # a field's value is refused (unsafe path, foreign container, bad id)
    UNKNOWN_PARTNER = "unknown_partner"  # the partner is not in the catalogue (any more)
    NO_SOURCE = "no_source"  # the partner has no source on the channel asked for
    UNKNOWN_JOB = "unknown_job"  # no such job (a file-landed message always follows its job)
    JOB_MISMATCH = "job_mismatch"  # the message names another partner or file than its job records


class BadMessageError(WharfError):
    """A queue message that can never be processed, whatever the number of retries. `job_id` is set when the
    message names a well-formed job id (not trusted: the caller checks the job exists before recording)."""

    def __init__(self, reason: BadMessageReason, detail: str, *, job_id: str = "", partner: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.job_id = job_id
        self.partner = partner


def decode_host_message(body: bytes | str) -> dict[str, Any]:
    """A queue-triggered function's message as a JSON object (the host has already base64-decoded it).

    A body that is itself base64 of a JSON object (put on the queue twice-encoded by another tool) is
    accepted too. Raises BadMessageError (UNDECODABLE, WRONG_SHAPE) for anything else."""
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessageError(BadMessageReason.UNDECODABLE,
                              f"the body is not UTF-8 text (byte {exc.start} of {len(raw)})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        data = _base64_json(text)
        if data is None:
            raise BadMessageError(BadMessageReason.UNDECODABLE,
                                  f"the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise BadMessageError(BadMessageReason.WRONG_SHAPE,
                              f"the body is a JSON {_json_kind(data)}, not an object")
    return data


def _base64_json(text: str) -> Any:
    try:
        inner = base64.b64decode("".join(text.split()), validate=True)
        return json.loads(inner.decode("utf-8"))
    except (binascii.Error, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def parse_message(model: type[M], data: dict[str, Any]) -> M:
    """`model` from a decoded message; BadMessageError naming each refused field (never its value)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        shape = all(e["type"] in _SHAPE_ERRORS for e in errors)
        detail = "; ".join(_problem(e) for e in errors[:10]) + ("; ..." if len(errors) > 10 else "")
        reason = BadMessageReason.WRONG_SHAPE if shape else BadMessageReason.INVALID_FIELD
        raise BadMessageError(reason, f"not a valid {model.__name__} message: {detail}",
                              job_id=_str(data.get("job_id")), partner=_str(data.get("partner"))) from exc


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "message"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return f"{where}: {message}"


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""
