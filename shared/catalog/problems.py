"""Turning pydantic errors into one plain line per problem, with the place written as the user would."""

from __future__ import annotations

import difflib
import json
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from shared.catalog.common import _INLINE_MESSAGE, _INLINE_SECRET_KEYS
from shared.catalog.errors import CatalogError, Loc, Problem, _Invalid
from shared.catalog.mailbox import Mailbox, MailboxAuth
from shared.catalog.model import Catalog, Partner
from shared.catalog.processing import ColumnSpec, CsvSpec, FileRule, Processing, Transform
from shared.catalog.routes import (
    _DESTINATION_KINDS,
    BlobDestination,
    EmailDestination,
    EventDestination,
    Route,
    RouteMatch,
    SftpDestination,
)
from shared.catalog.sftp import SftpAuth, SftpSource

_MODELS: dict[str, type[BaseModel]] = {
    cls.__name__: cls
    for cls in (
        SftpAuth, SftpSource, MailboxAuth, Mailbox, ColumnSpec, CsvSpec, Transform, FileRule, Processing,
        RouteMatch, BlobDestination, SftpDestination, EmailDestination, EventDestination, Route, Partner, Catalog,
    )
}

_MISSING_HINTS = {
    "host_keys": "is required: pin the server's host key as a known_hosts line or a SHA256 fingerprint "
    "(ssh-keyscan -p PORT HOST prints the line)",
    "auth": "is required",
}
_EMPTY_HINTS = {
    "host_keys": "must list at least one pinned host key",
    "remote_dirs": "must list at least one folder to poll",
    "destinations": "must list at least one destination",
}
_SIMPLE_MESSAGES = {
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(root: type[BaseModel], loc: Loc) -> tuple[Loc, type[BaseModel] | None]:
    """Drop pydantic's union tags and labels from a location; also return the model holding its last part."""
    out: list[str | int] = []
    tp: Any = root
    parent: type[BaseModel] | None = root
    for part in loc:
        tp = _unwrap(tp)
        parent = tp if _is_model(tp) else None
        if part == "[key]":
            continue
        if _is_model(tp):
            fields = tp.model_fields
            tp = fields[part].annotation if isinstance(part, str) and part in fields else Any
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict and isinstance(part, str):
            tp = get_args(tp)[1]
        elif get_origin(tp) in (Union, types.UnionType) and isinstance(part, str):
            members = [m for m in map(_unwrap, get_args(tp)) if _is_model(m) and m.model_fields.get("kind")]
            chosen = [m for m in members if m.model_fields["kind"].default == part
                      or getattr(m, "union_tag", None) == part]
            if chosen:
                tp = chosen[0]
                continue  # a discriminator tag, not a key the user wrote
            tp = Any
        else:
            tp = Any
        out.append(part)
    return tuple(out), parent


def _convert(exc: ValidationError, root: type[BaseModel], prefix: Loc = ()) -> list[tuple[Loc, str, Loc]]:
    """(location, message, scope) per error; scope is where the check ran (a model, for cross-field checks)."""
    problems: list[tuple[Loc, str, Loc]] = []
    for err in exc.errors(include_url=False):
        raw_loc: Loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        cause = ctx.get("error")
        loc, parent = _walk(root, raw_loc)
        if isinstance(cause, _Invalid):
            for sub, message in cause.items:
                problems.append((prefix + _walk(root, raw_loc + sub)[0], message, prefix + loc))
            continue
        kind = err["type"]
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        if kind in ("value_error", "assertion_error") and cause is not None:
            message = str(cause)
        elif kind == "missing":
            message = _MISSING_HINTS.get(field, "is required")
        elif kind == "extra_forbidden":
            message = _unknown_key_message(str(loc[-1]), parent)
        elif kind in _SIMPLE_MESSAGES:
            message = _SIMPLE_MESSAGES[kind]
        elif kind == "literal_error":
            message = f"must be one of {ctx['expected']}"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc += ("kind",)
            kinds = ", ".join(_DESTINATION_KINDS)
            message = f"must be one of {kinds}" if kind == "union_tag_invalid" else f"is required: one of {kinds}"
        elif kind in ("too_short", "string_too_short"):
            minimum = ctx.get("min_length", 1)
            message = _EMPTY_HINTS.get(field, "must not be empty") if minimum == 1 else f"needs {minimum} or more"
        elif kind in ("too_long", "string_too_long"):
            message = f"must have at most {ctx.get('max_length')} items"
        else:
            message = err["msg"][:1].lower() + err["msg"][1:]
        problems.append((prefix + loc, message, prefix + loc))
    return problems


def _unknown_key_message(key: str, model: type[BaseModel] | None) -> str:
    fields = list(model.model_fields) if model else []
    if key.lower() in _INLINE_SECRET_KEYS:
        replacement = f"{key}_secret"
        if replacement in fields:
            return (
                "inline secrets are not allowed; put the value in Key Vault and use "
                f"{replacement}: <secret name> instead"
            )
        return _INLINE_MESSAGE
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if not close and len(key) >= 3:
        close = [f for f in fields if key.lower() in f][:3]
    if close:
        return f"unknown key; did you mean {' or '.join(close)}?"
    return f"unknown key; expected one of {', '.join(fields)}" if fields else "unknown key"


def format_problems(error: CatalogError | ValidationError) -> list[str]:
    """One plain line per problem, for a CatalogError or a ValidationError from building these models directly."""
    if isinstance(error, CatalogError):
        return list(error.problems)
    root = _MODELS.get(error.title, Partner)
    return [f"{_format_loc(loc, None)}: {message}" if loc else message for loc, message, _ in _convert(error, root)]


def _problem(loc: Loc, message: str, data: Any, positions: Mapping[Loc, int]) -> Problem:
    line = next((positions[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in positions), None)
    return Problem(_format_loc(loc, data), message, line)


def _format_loc(loc: Loc, data: Any) -> str:
    text = ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            label: str | int = part
            if position == 1 and loc[0] == "partners":
                label = _partner_label(data, part)
            text += f"[{label}]"
        elif not isinstance(part, str):  # a key that is not text (given in code, or before it was refused)
            text += f"[{part!r}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _partner_label(data: Any, index: int) -> str | int:
    """A partner's id when it has a usable one, else its index in the list."""
    try:
        partner_id = data["partners"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return index
    if isinstance(partner_id, str) and 0 < len(partner_id.strip()) <= 60 and not re.search(r"[\[\]\n]", partner_id):
        return partner_id.strip()
    return index
