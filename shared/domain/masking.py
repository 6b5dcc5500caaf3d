"""Data masking: values of sensitive columns and JSON paths never leave as they came.

`mask_value` turns a value into `****1234` (last4), `sha256:3f2a9c0d1b7e` (hash: the first 12 hex digits of its
SHA-256, so equal values can still be matched in a report; a short unkeyed hash of a low-entropy value such as
a card number can be brute-forced: use redact where that matters) or `[redacted]`. `Sensitivity` says which
report fields (CSV column names, JSON paths such as `$.payer.iban` or `$[*].iban`, XML element and attribute
names such as `IBAN` or `Amt@Ccy`) are sensitive.
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
#: libxml2's schema-validity messages name their subject first: `Element '{ns}IBAN'[, attribute 'Ccy']: ...`
_XSD_SUBJECT = re.compile(r"^Element '(?:\{[^}]*\})?(?P<element>[^']*)'"
                          r"(?:, attribute '(?:\{[^}]*\})?(?P<attr>[^']*)')?: ")
#: The forms in which a libxml2 schema message quotes the offending value (greedy: up to the last fixed tail).
_XSD_VALUE_FORMS = (
    re.compile(r"(?P<pre>The value ')(?P<value>.*)(?P<post>' (?:is not accepted by the pattern|has a length of|"
               r"is not an element of the set|is greater than|is less than|has more digits than|"
               r"has more fractional digits than|is not facet-valid|is not a valid value|is not valid))"),
    re.compile(r"^(?P<pre>)'(?P<value>.*)(?P<post>' is not a valid value of the (?:atomic|union|list) type)"),
    re.compile(r"^(?P<pre>\[facet '[^']*'\] The value ')(?P<value>.*)(?P<post>'.*)"),
)
_XSD_KEY_SEQUENCE = re.compile(r"key-sequence \[(?P<values>.*)\] (?=in (?:unique|key) identity-constraint|of keyref)")
_QUOTED = re.compile(r"'((?:[^']|'(?![,\]]|$))*)'")
_XSD_FACET = re.compile(r"^\[facet '[^']*'\] ")
_XSD_NUMBERS = re.compile(r"'\d+'")
XSD_HIDDEN = "details hidden: the message may quote a sensitive value"


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
    #: XML: sensitive element local names (`IBAN`), attributes of any element (`@Acct`) or of one (`Amt@Acct`)
    elements: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.columns or self.paths or self.elements)

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

    def _xml_covers(self, element: str, attr: str | None) -> bool:
        if attr is None:
            return element in self.elements
        return f"@{attr}" in self.elements or f"{element}@{attr}" in self.elements

    def scrub_xsd(self, message: str) -> str:
        """An XSD (libxml2) validity message safe to keep. The streaming validator gives no path, so its subject
        is read from the message (`Element 'IBAN'`, `..., attribute 'Acct'`): for a sensitive element or attribute
        the quoted value is masked; a message about one whose value cannot be found in a known form keeps only
        its subject. Identity-constraint values (`Duplicate key-sequence ['...']`) come from fields the message
        does not name: with any sensitive element they are all masked."""
        if not self.elements:
            return message
        key = _XSD_KEY_SEQUENCE.search(message)
        if key is not None:
            masked = _QUOTED.sub(lambda m: "'" + self.mask(m.group(1)) + "'", key.group("values"))
            message = message[:key.start("values")] + masked + message[key.end("values"):]
        subject = _XSD_SUBJECT.match(message)
        if subject is None or not self._xml_covers(subject.group("element"), subject.group("attr")):
            return message
        head, rest = message[:subject.end()], message[subject.end():]
        for form in _XSD_VALUE_FORMS:
            found = form.search(rest)
            if found is not None:
                return (head + rest[:found.start("value")] + self.mask(found.group("value"))
                        + rest[found.end("value"):])
        schema_only = _XSD_NUMBERS.sub("", _XSD_FACET.sub("", rest))
        if "'" not in schema_only and '"' not in schema_only:
            return message  # nothing quoted but the facet and numbers ("The value has a length of '22'; ...")
        return head + XSD_HIDDEN
