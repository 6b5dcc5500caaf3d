"""Data masking: values of sensitive columns and JSON paths never leave as they came.

`mask_value` turns a value into `****1234` (last4), `sha256:3f2a9c0d1b7e` (hash: the first 12 hex digits of its
SHA-256, so equal values can still be matched in a report; a short unkeyed hash of a low-entropy value such as
a card number can be brute-forced: use redact where that matters) or `[redacted]`. `Sensitivity` says which
report fields (CSV column names, JSON paths such as `$.payer.iban` or `$[*].iban`) are sensitive.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Literal

MaskStyle = Literal["last4", "hash", "redact"]
MASK_STYLES: tuple[str, ...] = ("last4", "hash", "redact")
REDACTED = "[redacted]"
_INDEX = re.compile(r"\[\d+\]")


def mask_value(value: str, style: str = "last4") -> str:
    """`value` masked in `style` (an empty value stays empty: there is nothing to hide)."""
    if value == "":
        return ""
    if style == "hash":
        return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    if style == "redact":
        return REDACTED
    tail = value[-4:] if len(value) > 8 else ""  # short values: not even their end
    return "****" + tail


def normalise_path(path: str) -> str:
    """`$.items[3].iban` -> `$.items[*].iban` (indexes do not matter to a rule)."""
    return _INDEX.sub("[*]", path)


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + ".") or path.startswith(parent + "[")


@dataclass(frozen=True)
class Sensitivity:
    """Sensitive CSV columns (by name) and JSON paths of one rule, and how their values are shown."""

    columns: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()
    style: str = "last4"

    def __bool__(self) -> bool:
        return bool(self.columns or self.paths)

    def covers(self, field: str | None) -> Literal["value", "contains", ""]:
        """"value": the field is sensitive (or inside a sensitive path); "contains": a sensitive path lies
        inside it (its value holds one); "": neither."""
        if not field or not self:
            return ""
        if field in self.columns:
            return "value"
        if not field.startswith("$"):
            return ""
        path = normalise_path(field)
        if any(_under(path, normalise_path(p)) for p in self.paths):
            return "value"
        if any(_under(normalise_path(p), path) for p in self.paths):
            return "contains"
        return ""

    def mask(self, value: str) -> str:
        return mask_value(value, self.style)

    def scrub(self, field: str | None, message: str, value: str | None) -> tuple[str, str | None]:
        """(message, value) safe to keep for an issue at `field`: the value masked and every form of it the
        message quotes (raw, repr, JSON) replaced; an issue whose value contains a sensitive path keeps neither."""
        cover = self.covers(field)
        if not cover:
            return message, value
        if cover == "contains":
            return "details hidden: the value holds a sensitive field", None if value is None else REDACTED
        if value is None:
            return message, None
        raw = value
        try:
            decoded = json.loads(value)
            if isinstance(decoded, str):
                raw = decoded
        except ValueError:
            pass
        masked = self.mask(raw)
        for form in sorted({raw, value, repr(raw), json.dumps(raw)}, key=len, reverse=True):
            if form:
                message = message.replace(form, masked)
        return message, masked
