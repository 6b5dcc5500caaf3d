"""Validation rules and the validation report: pure, compiled once per file into fast column checks."""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate, compress
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.domain.masking import Sensitivity

VALUE_LIMIT = 100
"""An offending value is kept in a report truncated to this many characters."""

SUMMARY_LIMIT = 1024
"""`ValidationReport.summary()` is at most this many UTF-8 bytes (table properties, job events)."""

DEFAULT_MAX_ERRORS = 100
CACHE_LIMIT = 65_536
"""Per column: how many distinct valid values (dates, codes) are remembered to skip re-checking them."""

MAX_NESTING_DEPTH = 128
"""JSON arrays/objects, or XML elements, nested deeper than this make a file invalid (code "nesting").

Deeper documents exhaust the recursion of `json.loads` and of the JSON Schema validator (which spends several
Python frames per level; 128 levels leave room under Python's limit of 1000), and make the streaming JSON parser
quadratic in the depth. Partner files nest a handful of levels; serde_json's default limit is 128 too."""

ColumnType = Literal["integer", "decimal", "date", "string", "enum", "regex"]

INTEGER_RE = re.compile(r"[+-]?\d+", re.ASCII)
DECIMAL_RE = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)", re.ASCII)
_DIGITS_TO_9 = str.maketrans("0123456789", "9999999999")


# ---------------------------------------------------------------------------------------------------------
# Report


def truncate(value: str | None, limit: int = VALUE_LIMIT) -> str | None:
    """`value` cut to at most `limit` characters (the last one an ellipsis when cut)."""
    if value is None or len(value) <= limit:
        return value
    return value[:limit - 1] + "\u2026"


class ValidationIssue(BaseModel):
    """One problem found in a file. `row` is the 1-based data record (header excluded; 0 = header),
    `line` the 1-based physical line where it starts, `column` the 1-based field (CSV) or character (XML/JSON)."""

    code: str
    message: str
    row: int | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None
    value: str | None = Field(default=None, max_length=VALUE_LIMIT)

    def where(self) -> str:
        parts = [f"{name} {value}" for name, value in
                 (("row", self.row), ("line", self.line), ("col", self.column)) if value is not None]
        if self.field:
            parts.append(self.field)
        return " ".join(parts)


class ValidationReport(BaseModel):
    """The outcome of validating one file: stored whole as JSON beside the file, summarised in tables/events."""

    valid: bool
    file_name: str = ""
    file_type: str
    declared_type: str = "auto"
    encoding: str = ""
    bytes: int = 0
    rows: int = 0
    error_count: int = 0
    errors: list[ValidationIssue] = Field(default_factory=list)
    truncated: bool = False
    warnings: list[str] = Field(default_factory=list)
    delimiter: str | None = None

    def summary(self) -> str:
        """Short text (at most SUMMARY_LIMIT UTF-8 bytes): verdict, shape, counts and the first errors."""
        head = (f"{'VALID' if self.valid else 'INVALID'} {self.file_type} {self.encoding or '?'} "
                f"{self.bytes} bytes, {self.rows} rows, {self.error_count} errors")
        if self.truncated:
            head += f" (first {len(self.errors)} kept)"
        if self.warnings:
            head += f", {len(self.warnings)} warnings"
        parts = [head]
        for issue in self.errors[:5]:
            text = f"{issue.where()}: {issue.message}"
            if issue.value is not None:
                text += f" {truncate(issue.value, 40)!r}"
            parts.append(text)
        if not self.errors and self.warnings:
            parts.append(self.warnings[0])
        return _cut_bytes("; ".join(parts), SUMMARY_LIMIT)

    def to_json(self) -> str:
        """The full report as JSON (to store as a blob beside the file)."""
        return self.model_dump_json()


def _cut_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode("utf-8", "ignore") + "..."


class ReportBuilder:
    """Collects issues while a file streams: counts all of them, keeps the first `max_errors`."""

    def __init__(self, *, file_name: str = "", declared_type: str = "auto", max_errors: int = DEFAULT_MAX_ERRORS,
                 max_warnings: int = 50, sensitivity: Sensitivity | None = None) -> None:
        self.file_name = file_name
        self.sensitivity = sensitivity or Sensitivity()
        self.declared_type = declared_type
        self.max_errors = max(1, max_errors)
        self.max_warnings = max_warnings
        self.error_count = 0
        self.errors: list[ValidationIssue] = []
        self.warnings: list[str] = []
        self.rows = 0
        self.file_type = "unknown"
        self.encoding = ""
        self.bytes = 0
        self.delimiter: str | None = None
        self.stopped = False  # a fatal problem (wrong type, too big): content checks did not run to the end

    @property
    def full(self) -> bool:
        """True once `max_errors` issues are kept: later issues are counted, not described."""
        return len(self.errors) >= self.max_errors

    def error(self, code: str, message: str, *, row: int | None = None, line: int | None = None,
              column: int | None = None, field: str | None = None, value: Any = None) -> None:
        self.error_count += 1
        if self.full:
            return
        text = None if value is None else (value if isinstance(value, str) else repr(value))
        if self.sensitivity:  # masked before anything is kept: reports, events, logs and spans see the mask
            message, text = self.sensitivity.scrub(field, message, text)
        text = truncate(text)
        self.errors.append(ValidationIssue(code=code, message=truncate(message, 500) or "", row=row, line=line,
                                           column=column, field=field, value=text))

    def xsd_error(self, message: str, *, line: int | None = None) -> None:
        """An XSD validity issue; its message is scrubbed of sensitive elements' values first (scrub_xsd)."""
        self.error("xsd", self.sensitivity.scrub_xsd(message), line=line)

    def count(self, n: int) -> None:
        """Count `n` more errors that are not described (the cap was reached)."""
        self.error_count += n

    def warn(self, message: str) -> None:
        if len(self.warnings) < self.max_warnings and message not in self.warnings:
            self.warnings.append(truncate(message, 500) or "")

    def build(self) -> ValidationReport:
        # Checks run column by column over a batch: put the kept issues back in file order.
        errors = sorted(self.errors, key=lambda e: (e.row if e.row is not None else -1, e.line or 0, e.column or 0))
        return ValidationReport(
            valid=self.error_count == 0, file_name=self.file_name, file_type=self.file_type,
            declared_type=self.declared_type, encoding=self.encoding, bytes=self.bytes, rows=self.rows,
            error_count=self.error_count, errors=errors, truncated=self.error_count > len(self.errors),
            warnings=list(self.warnings), delimiter=self.delimiter,
        )


# ---------------------------------------------------------------------------------------------------------
# Nesting depth of a JSON byte stream, checked before any parser sees the bytes


class NestingTooDeepError(ValueError):
    """A document nests deeper than `limit`. `offset` is the 0-based byte offset of the bracket that opened one
    level too many; `line` and `column` (1-based, in characters) locate it."""

    def __init__(self, limit: int, offset: int, line: int, column: int) -> None:
        super().__init__(f"{nesting_message(limit)} at line {line}, column {column}")
        self.limit = limit
        self.offset = offset
        self.line = line
        self.column = column


def nesting_message(limit: int = MAX_NESTING_DEPTH) -> str:
    return f"nesting deeper than {limit} levels"


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING = re.compile(rb'"[^"]*"')
_KEEP = b'[]{}"'
_DROP = bytes(b for b in range(256) if b not in _KEEP)
_DROP_KEEP_LF = bytes(b for b in range(256) if b not in _KEEP + b"\n")
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # as signed bytes: +1 per opening, -1 per closing bracket
_CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8 continuation bytes: deleting them leaves one byte per character


def _characters(data: bytes) -> int:
    return len(data) if data.isascii() else len(data.translate(None, _CONTINUATION))


def _peak(brackets: bytes, depth: int, limit: int) -> int:
    """The deepest point of a run of brackets starting at `depth`, exact whenever it is above `limit`."""
    # Cutting out the innermost empty pairs first leaves a short run to sum; one replace() lowers the peak by at
    # most one level, so the peak of what is left plus the cuts bounds the real one.
    shorter, cuts = brackets, 0
    while cuts < 16 and len(shorter) > 64:
        cut = shorter.replace(b"[]", b"").replace(b"{}", b"")
        if len(cut) == len(shorter):
            break
        shorter, cuts = cut, cuts + 2
    peak = max(accumulate(array("b", shorter.translate(_STEPS)), initial=depth))
    if peak + cuts <= limit:
        return peak
    return max(accumulate(array("b", brackets.translate(_STEPS)), initial=depth))


class JsonNesting:
    """The bracket depth of a UTF-8 JSON stream fed chunk by chunk; raises NestingTooDeepError past `limit`.

    The work per chunk is a handful of C-speed passes (escapes and everything but brackets and quotes removed,
    strings cut out, a running sum of the brackets left), so it can sit in front of any parser. A backslash
    escapes the next byte and line breaks end every value in JSON Lines (`lines=True`); on input that is not
    JSON the depth may be off, but the parser behind reports that input anyway.
    """

    def __init__(self, limit: int = MAX_NESTING_DEPTH, *, lines: bool = False) -> None:
        self.limit = limit
        self.lines = lines
        self.depth = 0
        self.in_string = False
        self._escaped = False  # the first byte of the next chunk is escaped by a backslash ending this one
        self._offset = 0  # bytes fed so far
        self._line = 1  # the line the next chunk starts on
        self._column = 0  # characters of that line before the next chunk

    def check(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Every chunk, each after it was checked."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def feed(self, chunk: bytes) -> None:
        start_state = (self.depth, self.in_string, self._escaped)
        body = chunk[1:] if self._escaped and chunk else chunk
        if chunk:
            self._escaped = False
        run = len(body) - len(body.rstrip(b"\\"))
        if run % 2:
            body = body[:-1]
            self._escaped = True
        if b"\\" in body:
            body = _ESCAPE.sub(b"", body)
        if not self._advance(body):
            self.depth, self.in_string, self._escaped = start_state
            self._fail(chunk)
        self._move(chunk)

    def _advance(self, body: bytes) -> bool:
        """Move the depth over `body` (escapes removed); False if it went past the limit somewhere."""
        if not self.lines:
            return self._segment(body.translate(None, _DROP))
        reduced = body.translate(None, _DROP_KEEP_LF)
        if self.depth + reduced.count(b"[") + reduced.count(b"{") <= self.limit:
            cut = reduced.rfind(b"\n")
            if cut >= 0:
                self.depth, self.in_string = 0, False
            return self._segment(reduced[cut + 1:])
        lines = reduced.split(b"\n")
        if not self._segment(lines[0]):
            return False
        # A line that starts afresh needs more brackets than the limit to go past it: only those are summed.
        for line in compress(lines[1:-1], map(self.limit.__lt__, map(len, lines[1:-1]))):
            self.depth, self.in_string = 0, False
            if not self._segment(line):
                return False
        if len(lines) > 1:
            self.depth, self.in_string = 0, False
            return self._segment(lines[-1])
        return True

    def _segment(self, reduced: bytes) -> bool:
        """Move the depth over brackets and quotes of one line (or of a whole chunk outside JSON Lines)."""
        if self.in_string:
            close = reduced.find(b'"')
            if close < 0:
                return True
            reduced = reduced[close + 1:]
            self.in_string = False
        if b'"' in reduced:
            reduced = reduced.replace(b'""', b"")  # an empty string, or the end of one and the start of the next
            if reduced.count(b'"') % 2:
                reduced = reduced[:reduced.rfind(b'"')]  # a string that goes on in the next chunk
                self.in_string = True
            reduced = _STRING.sub(b"", reduced)
        opens = reduced.count(b"[") + reduced.count(b"{")
        depth = self.depth
        if depth + opens > self.limit and _peak(reduced, depth, self.limit) > self.limit:
            return False
        self.depth = depth + 2 * opens - len(reduced)
        return True

    def _fail(self, chunk: bytes) -> None:
        """Find, byte by byte (only ever once), where `chunk` goes too deep, and raise."""
        index = self._first_too_deep(chunk)
        head = chunk[:index]
        newlines = head.count(b"\n")
        if newlines:
            line, column = self._line + newlines, _characters(head[head.rfind(b"\n") + 1:]) + 1
        else:
            line, column = self._line, self._column + _characters(head) + 1
        raise NestingTooDeepError(self.limit, self._offset + index, line, column)

    def _first_too_deep(self, chunk: bytes) -> int:
        depth, in_string, escaped = self.depth, self.in_string, self._escaped
        for index, byte in enumerate(chunk):
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif self.lines and byte == 0x0A:
                depth, in_string = 0, False
            elif in_string:
                in_string = byte != 0x22
            elif byte == 0x22:
                in_string = True
            elif byte in b"[{":
                depth += 1
                if depth > self.limit:
                    return index
            elif byte in b"]}":
                depth -= 1
        return len(chunk)  # not reached: the fast pass and this one read the bytes alike

    def _move(self, chunk: bytes) -> None:
        self._offset += len(chunk)
        newlines = chunk.count(b"\n")
        if newlines:
            self._line += newlines
            self._column = _characters(chunk[chunk.rfind(b"\n") + 1:])
        else:
            self._column += _characters(chunk)


# ---------------------------------------------------------------------------------------------------------
# Rules: a plain view of a catalogue FileRule (or a mapping), so services never depend on catalogue internals


@dataclass(frozen=True)
class ColumnRule:
    name: str
    type: str = "string"
    format: str | None = None
    values: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    required: bool = False
    sensitive: bool = False

    @property
    def date_format(self) -> str:
        return self.format or "%Y-%m-%d"


@dataclass(frozen=True)
class CsvRules:
    delimiter: str | None = None  # None: sniffed from the content (falls back to ",")
    quotechar: str = '"'
    header: bool = True
    required_columns: tuple[str, ...] = ()
    columns: tuple[ColumnRule, ...] = ()


@dataclass(frozen=True)
class RuleSpec:
    match: str = "*"
    type: str = "auto"
    min_bytes: int | None = None
    max_bytes: int | None = None
    encoding: str = "auto"
    csv: CsvRules = field(default_factory=CsvRules)
    max_errors: int = DEFAULT_MAX_ERRORS
    json_schema: str | Mapping[str, Any] | None = None
    xsd: str | None = None
    transform_name: str = "passthrough"
    transform_options: Mapping[str, Any] = field(default_factory=dict)
    sensitive_paths: tuple[str, ...] = ()
    mask_style: str = "last4"
    sensitive_elements: tuple[str, ...] = ()

    @property
    def sensitivity(self) -> Sensitivity:
        """Which report fields are sensitive (columns marked `sensitive`, `sensitive_paths`,
        `sensitive_elements`) and their mask."""
        return Sensitivity(frozenset(c.name for c in self.csv.columns if c.sensitive), self.sensitive_paths,
                           self.mask_style, frozenset(self.sensitive_elements))


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    value = obj.get(name, default) if isinstance(obj, Mapping) else getattr(obj, name, default)
    if value is None:
        return default
    return getattr(value, "value", value)  # enums -> their value


def _explicit(obj: Any, name: str) -> bool:
    if isinstance(obj, Mapping):
        return name in obj
    fields_set = getattr(obj, "model_fields_set", None)
    return name in fields_set if fields_set is not None else getattr(obj, name, None) is not None


def rule_spec(rule: Any) -> RuleSpec:
    """A RuleSpec from a catalogue FileRule (pydantic), any object with the same attributes, a mapping, or None.

    A CSV delimiter the catalogue only defaulted (not written in the YAML) is sniffed from the content.
    """
    if isinstance(rule, RuleSpec):
        return rule
    csv_obj = _get(rule, "csv")
    columns: list[ColumnRule] = []
    for name, col in (_get(csv_obj, "columns", {}) or {}).items():
        values = _get(col, "values")
        max_length = _get(col, "max_length")
        columns.append(ColumnRule(
            name=str(name), type=str(_get(col, "type", "string")), format=_get(col, "format"),
            values=tuple(str(v) for v in values) if values is not None else None, pattern=_get(col, "pattern"),
            max_length=int(max_length) if max_length is not None else None,
            required=bool(_get(col, "required", False)), sensitive=bool(_get(col, "sensitive", False)),
        ))
    csv_rules = CsvRules(
        delimiter=_get(csv_obj, "delimiter") if _explicit(csv_obj, "delimiter") else None,
        quotechar=_get(csv_obj, "quotechar", '"'), header=bool(_get(csv_obj, "header", True)),
        required_columns=tuple(_get(csv_obj, "required_columns", ()) or ()), columns=tuple(columns),
    )
    transform = _get(rule, "transform")
    max_errors = _get(rule, "max_errors") or _get(csv_obj, "max_errors") or DEFAULT_MAX_ERRORS
    return RuleSpec(
        match=_get(rule, "match", "*"), type=str(_get(rule, "type", "auto")), min_bytes=_get(rule, "min_bytes"),
        max_bytes=_get(rule, "max_bytes"), encoding=str(_get(rule, "encoding", "auto")), csv=csv_rules,
        max_errors=int(max_errors), json_schema=_get(rule, "json_schema"), xsd=_get(rule, "xsd"),
        transform_name=str(_get(transform, "name", "passthrough")),
        transform_options=dict(_get(transform, "options", {}) or {}),
        sensitive_paths=tuple(str(p) for p in _get(rule, "sensitive_paths", ()) or ()),
        mask_style=str(_get(rule, "mask_style", "last4") or "last4"),
        sensitive_elements=tuple(str(e) for e in _get(rule, "sensitive_elements", ()) or ()),
    )


# ---------------------------------------------------------------------------------------------------------
# Dates: common strftime formats compiled to a regex + calendar check (strptime only for the rest)

_DIRECTIVES = {
    "Y": r"(?P<Y>\d{4})", "y": r"(?P<y>\d{2})", "m": r"(?P<m>1[0-2]|0[1-9]|[1-9])",
    "d": r"(?P<d>3[01]|[12]\d|0[1-9]|[1-9])", "H": r"(?P<H>2[0-3]|[01]\d|\d)", "M": r"(?P<M>[0-5]\d|\d)",
    "S": r"(?P<S>6[01]|[0-5]\d|\d)", "f": r"(?P<f>\d{1,6})",
}


class DateFormat:
    """Parse and check dates in one strftime format; `iso(value)` is the ISO 8601 text or None when invalid."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.has_time = any(f"%{d}" in fmt for d in "HMSfIpzZ")
        self._regex = self._compile(fmt)

    @staticmethod
    def _compile(fmt: str) -> re.Pattern[str] | None:
        out: list[str] = []
        seen: set[str] = set()
        i = 0
        while i < len(fmt):
            ch = fmt[i]
            if ch != "%":
                out.append(re.escape(ch))
                i += 1
                continue
            directive = fmt[i + 1:i + 2]
            if directive == "%":
                out.append("%")
            elif directive in _DIRECTIVES and directive not in seen:
                out.append(_DIRECTIVES[directive])
                seen.add(directive)
            else:
                return None  # anything else (month names, %z, ...) goes through strptime
            i += 2
        if not ({"Y", "y"} & seen and "m" in seen and "d" in seen):
            return None
        return re.compile("".join(out), re.ASCII)

    def parse(self, value: str) -> datetime | None:
        if self._regex is None:
            try:
                return datetime.strptime(value, self.fmt)
            except ValueError:
                return None
        match = self._regex.fullmatch(value)
        if match is None:
            return None
        g = match.groupdict()
        year = int(g["Y"]) if g.get("Y") else _two_digit_year(int(g["y"]))
        try:
            return datetime(year, int(g["m"]), int(g["d"]), int(g.get("H") or 0),
                            int(g.get("M") or 0), int(g.get("S") or 0), int((g.get("f") or "0").ljust(6, "0")))
        except ValueError:
            return None

    def iso(self, value: str) -> str | None:
        parsed = self.parse(value)
        if parsed is None:
            return None
        return parsed.isoformat() if self.has_time else parsed.date().isoformat()


def _two_digit_year(yy: int) -> int:
    return 2000 + yy if yy < 69 else 1900 + yy  # what strptime does for %y


# ---------------------------------------------------------------------------------------------------------
# Column checks: exact per value, plus a fast per-batch check that is sound (True only when every value passes)


class ColumnCheck:
    """One CSV column's rule, compiled. `batch_ok(values)` is the fast path over a whole batch column; when it
    says no, `problems(values)` finds the exact offending values."""

    def __init__(self, rule: ColumnRule, position: int) -> None:
        self.rule = rule
        self.name = rule.name
        self.position = position  # 0-based field index
        self.kind = rule.type
        self.required = rule.required
        self.max_length = rule.max_length
        self.date = DateFormat(rule.date_format) if rule.type == "date" else None
        self._pattern = re.compile(rule.pattern) if rule.type == "regex" and rule.pattern else None
        self._joined = joined_pattern(self._pattern, rule.required) if self._pattern is not None else None
        self._allowed = frozenset(rule.values or ()) if rule.type == "enum" else frozenset()
        self._allowed_or_empty = self._allowed if self.required else self._allowed | {""}
        self._good: set[str] = set()  # distinct values already checked (patterns) or shapes (numbers)
        self._iso: dict[str, str] = {}  # dates: distinct valid values already checked -> ISO 8601 text
        self._known: set[str] = set() if self.required else {""}  # dates: the keys of _iso (+ "" when optional)
        self.iso_is_value = True  # dates: every valid value seen so far is already its ISO text
        self.json_safe_values = all(_json_safe(v) for v in self._allowed)  # enums: no JSON escaping needed
        self._value_ok: Callable[[str], bool] = self._value_check()
        self._type_message = self._message()

    def _value_check(self) -> Callable[[str], bool]:
        kind = self.kind
        if kind == "integer":
            return lambda v: INTEGER_RE.fullmatch(v) is not None
        if kind == "decimal":
            return lambda v: DECIMAL_RE.fullmatch(v) is not None
        if kind == "date":
            date = self.date
            assert date is not None
            return lambda v: date.parse(v) is not None
        if kind == "enum":
            return self._allowed.__contains__
        if kind == "regex":
            pattern = self._pattern
            if pattern is None:
                raise ValueError(f"column {self.name!r}: type regex needs a pattern")
            return lambda v: pattern.fullmatch(v) is not None
        if kind == "string":
            return lambda v: True
        raise ValueError(f"column {self.name!r}: unknown type {kind!r}")

    def _message(self) -> tuple[str, str]:
        if self.kind == "date":
            return "date", f"not a valid date in format {self.rule.date_format}"
        if self.kind == "enum":
            shown = ", ".join(sorted(self._allowed)[:10]) + (", ..." if len(self._allowed) > 10 else "")
            return "enum", f"not one of the allowed values ({shown})"
        if self.kind == "regex":
            return "pattern", f"does not match the pattern {self.rule.pattern}"
        return self.kind, {"integer": "not an integer", "decimal": "not a decimal number"}.get(self.kind, "invalid")

    def check(self, value: str) -> tuple[str, str] | None:
        """(code, message) of the first rule `value` breaks, or None. Empty values only break `required`."""
        if value == "":
            return ("required", "a value is required") if self.required else None
        if not self._value_ok(value):
            return self._type_message
        if self.max_length is not None and len(value) > self.max_length:
            return "max_length", f"longer than {self.max_length} characters ({len(value)})"
        return None

    def problems(self, values: Sequence[str]) -> Iterator[tuple[int, str, str]]:
        """(index, code, message) of every offending value."""
        check = self.check
        for index, value in enumerate(values):
            found = check(value)
            if found is not None:
                yield index, found[0], found[1]

    def batch_ok(self, values: Sequence[str]) -> bool:
        """Sound fast check over a batch column: True means every value passes. False means look closer."""
        if not values:
            return True
        if self.required and "" in values:
            return False
        if self.max_length is not None and max(map(len, values)) > self.max_length:
            return False
        kind = self.kind
        if kind == "string":
            return True
        if kind == "enum":
            return self._allowed_or_empty.issuperset(values)
        if kind == "integer":
            joined = "".join(values)
            if joined.isdigit() and joined.isascii():
                return True
            return self._shapes_ok(values, INTEGER_RE)
        if kind == "decimal":
            return self._shapes_ok(values, DECIMAL_RE)
        if kind == "date":
            return self._dates_ok(values)
        if self._joined is not None:
            # One regex run over the whole batch column; exact because the pattern cannot match a line break
            # and the count proves no value holds one.
            joined = "\n".join(values) + "\n"
            return joined.count("\n") == len(values) and self._joined.fullmatch(joined) is not None
        return self._distinct_ok(values)

    def iso_dates(self, values: Sequence[str]) -> list[str] | None:
        """ISO 8601 text of every value of a date column batch that `batch_ok` passed; None if any is unknown."""
        try:
            return list(map(self._iso.__getitem__, values))
        except KeyError:
            return None

    def _shapes_ok(self, values: Sequence[str], regex: re.Pattern[str]) -> bool:
        # A number's validity depends only on where its digits are: "12.50" and "99.99" share the shape "99.99".
        # A batch has a handful of shapes, each checked once; a value holding a newline breaks the count.
        parts = "\n".join(values).translate(_DIGITS_TO_9).split("\n")
        if len(parts) != len(values):
            return False
        good = self._good
        for shape in set(parts).difference(good):
            if shape and regex.fullmatch(shape) is None:
                return False
            if len(good) < CACHE_LIMIT:
                good.add(shape)
        return True

    def _dates_ok(self, values: Sequence[str]) -> bool:
        # Dates repeat: each distinct one is parsed once, then remembered with its ISO text for transforms.
        known = self._known
        if known.issuperset(values):
            return True
        iso_of = self._iso
        date = self.date
        assert date is not None
        for value in set(values).difference(known):
            iso = date.iso(value)
            if iso is None:
                return False
            if len(iso_of) < CACHE_LIMIT:
                iso_of[value] = iso
                known.add(value)
                if iso != value:
                    self.iso_is_value = False
            else:
                self.iso_is_value = False  # no longer every value is remembered: transforms look them up
        return True

    def _distinct_ok(self, values: Sequence[str]) -> bool:
        good = self._good
        if good.issuperset(values):
            return True
        value_ok = self._value_ok
        for value in set(values).difference(good):
            if value and not value_ok(value):
                return False
            if len(good) < CACHE_LIMIT:
                good.add(value)
        return True


def _json_safe(value: str) -> bool:
    return not any(c in value for c in '"\\') and all(c >= " " for c in value)


def joined_pattern(pattern: re.Pattern[str], required: bool) -> re.Pattern[str] | None:
    """`(?:P\\n)*` for a pattern P that provably cannot match a line break (so each value matches alone);
    None when that cannot be shown (the caller checks value by value: slower, never wrong)."""
    try:
        from re import _constants, _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern.pattern, pattern.flags)
        if not _no_newline(parsed.data, bool(pattern.flags & re.DOTALL), _constants):
            return None
        element = f"(?:{pattern.pattern})" + ("" if required else "?")
        return re.compile(f"(?:{element}\n)*", pattern.flags & ~re.MULTILINE)
    except Exception:  # noqa: BLE001 - private parser API or an odd pattern: just use the slow path
        return None


def _no_newline(items: Any, dotall: bool, c: Any) -> bool:
    newline = 10
    for op, arg in items:
        if op is c.LITERAL:
            if arg == newline:
                return False
        elif op is c.ANY:
            if dotall:
                return False
        elif op is c.IN:
            for item_op, item_arg in arg:
                if item_op is c.LITERAL and item_arg != newline:
                    continue
                if item_op is c.RANGE and not item_arg[0] <= newline <= item_arg[1]:
                    continue
                if item_op is c.CATEGORY and item_arg in (c.CATEGORY_DIGIT, c.CATEGORY_WORD, c.CATEGORY_NOT_SPACE,
                                                          c.CATEGORY_NOT_LINEBREAK):
                    continue
                return False  # NEGATE, \s, \D, \W, a range over \n, ...
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
            if not _no_newline(arg[2], dotall, c):
                return False
        elif op is c.SUBPATTERN:
            _, add_flags, del_flags, sub = arg
            inner = (dotall or bool(add_flags & re.DOTALL)) and not del_flags & re.DOTALL
            if not _no_newline(sub, inner, c):
                return False
        elif op is getattr(c, "ATOMIC_GROUP", None):
            if not _no_newline(arg, dotall, c):
                return False
        elif op is c.BRANCH:
            if not all(_no_newline(branch, dotall, c) for branch in arg[1]):
                return False
        elif op is c.AT:
            if arg not in (c.AT_BOUNDARY, c.AT_NON_BOUNDARY):
                return False  # ^ $ \\A \\Z would make every later value of a batch fail: use the other path
        elif op is c.GROUPREF:
            continue
        else:
            return False  # lookarounds can see the next value; anything unknown is not proven safe
    return True


def compile_columns(rules: Sequence[ColumnRule], positions: Mapping[str, int]) -> list[ColumnCheck]:
    """Checks for the configured columns found in `positions` (name -> 0-based index)."""
    return [ColumnCheck(rule, positions[rule.name]) for rule in rules if rule.name in positions]
