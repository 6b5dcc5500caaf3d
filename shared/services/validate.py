"""Validate a file streamed as byte chunks against its catalogue rule: size, type, encoding, CSV/JSON/XML content."""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import Any
from xml.parsers import expat

import ijson
import orjson

from shared.domain.detect import (
    ChunkReader,
    Detection,
    FileType,
    LineTooLongError,
    StreamDecoder,
    detect,
    iter_lines,
    peek,
)
from shared.domain.errors import ConfigurationError, WharfError
from shared.domain.validation import (
    MAX_NESTING_DEPTH,
    ColumnCheck,
    CsvRules,
    JsonNesting,
    NestingTooDeepError,
    ReportBuilder,
    RuleSpec,
    ValidationReport,
    compile_columns,
    nesting_message,
    rule_spec,
)
from shared.observability.tracing import span

__all__ = [
    "FULL_LOAD_LIMIT",
    "CsvBatch",
    "CsvEngine",
    "FileValidation",
    "ValidationFailedError",
    "validate_stream",
]

FULL_LOAD_LIMIT = 8 * 1024 * 1024
"""A single JSON document up to this size is parsed whole (exact error positions, any schema). Larger ones stream:
arrays item by item (schema `items` applied to each), anything else for well-formedness only."""

_CELLS_PER_BATCH = 2560
"""Records per batch ~ this / fields (32..512). Small enough that a batch's row lists (container objects) stay
under the cyclic GC's 700-allocation threshold, so no collection ever scans them; big enough to amortise the
per-batch column work. Measured: 8192 cells spent ~15% of the run in the GC, 2560 none."""
_TYPES_FOR = {"csv": {FileType.CSV, FileType.TEXT}, "json": {FileType.JSON, FileType.JSONL},
              "xml": {FileType.XML}}


class ValidationFailedError(WharfError):
    """A file did not pass validation; `report` says why. Raised by validating transforms before the last chunk,
    so an upload fed by them is never committed."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report


class _SizeExceededError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------
# CSV


@dataclass(slots=True)
class CsvBatch:
    """Consecutive data records, each exactly `width` fields (ragged ones padded/cut after being reported)."""

    rows: list[list[str]]
    columns: list[tuple[str, ...]]
    first_row: int
    ok: list[bool] | None  # per field position: every value passed its column rule (None: not checked)


def _extra_lines(row: Sequence[str]) -> int:
    """Line breaks inside a record's quoted fields (CRLF counts once): the record spans 1 + this many lines."""
    extra = 0
    for value in row:
        if "\n" in value or "\r" in value:
            extra += value.count("\n") + value.count("\r") - value.count("\r\n")
    return extra


class CsvEngine:
    """Parses CSV lines into batches of records and checks them column by column.

    Per-row work stays in C (csv.reader, zip, set and join built-ins); the per-column checks are compiled once
    and run over a whole batch column, falling back to value-by-value only where a batch has a problem.
    """

    def __init__(self, rules: CsvRules, report: ReportBuilder, *, delimiter: str, check: bool = True,
                 decoder: StreamDecoder | None = None) -> None:
        self.rules = rules
        self.report = report
        self.delimiter = delimiter
        self.check = check
        self.decoder = decoder
        self.header: list[str] | None = None
        self.width: int | None = None
        self.checks: list[ColumnCheck] = []
        self.rows = 0
        self.blank_lines = 0
        self.decode_problems = 0  # cells holding U+FFFD from bytes that did not decode

    # -- header -------------------------------------------------------------------------------------------

    def _start(self, reader: Any) -> bool:
        rules, report = self.rules, self.report
        if rules.header:
            header: list[str] | None = None
            while header is None:
                try:
                    row = next(reader)
                except StopIteration:
                    report.error("header", "the file has no header row", row=0, line=1)
                    return False
                except csv.Error as exc:
                    report.error("csv", f"header row: {exc}", row=0, line=reader.line_num)
                    return False
                if row:
                    header = [name.strip() for name in row]
                else:
                    self.blank_lines += 1
            self.header = header
        elif rules.columns:
            self.header = [c.name for c in rules.columns]
        if self.header is not None:
            self._configure(self.header, reader.line_num)
        return True

    def _configure(self, header: list[str], header_line: int) -> None:
        report = self.report
        positions: dict[str, int] = {}
        for index, name in enumerate(header):
            if name in positions:
                report.warn(f"column {name!r} appears more than once in the header; rules apply to the first")
            else:
                positions[name] = index
        if self.rules.header:
            for name in self.rules.required_columns:
                if name not in positions:
                    report.error("missing_column", f"required column {name!r} is not in the header", row=0,
                                 line=header_line, field=name)
            for col in self.rules.columns:
                if col.name not in positions:
                    report.warn(f"column {col.name!r} has rules but is not in the header; they were not applied")
        self.width = len(header)
        self.checks = compile_columns(self.rules.columns, positions)

    # -- records ------------------------------------------------------------------------------------------

    def batches(self, lines: Iterator[str]) -> Iterator[CsvBatch]:
        """Batches of records until the end of `lines`; problems go to the report as they are found."""
        rules = self.rules
        reader = csv.reader(lines, delimiter=self.delimiter, quotechar=rules.quotechar, strict=True)
        if not self._start(reader):
            return
        size = max(32, min(512, _CELLS_PER_BATCH // max(1, self.width or 10)))
        while True:
            start_line = reader.line_num
            raw: list[list[str]] = []
            failure: csv.Error | None = None
            try:
                raw.extend(islice(reader, size))  # rows read before an error stay in `raw`
            except csv.Error as exc:
                failure = exc
            if not raw and failure is None:
                break
            exact = failure is None and reader.line_num - start_line == len(raw)
            consumed = len(raw) + (sum(map(_extra_lines, raw)) if failure is not None else 0)
            if raw:
                batch = self._batch(raw, start_line, exact)
                del raw  # hold one batch at a time: fewer live objects, no cyclic-GC passes (see _CELLS_PER_BATCH)
                if batch is not None:
                    yield batch
                    del batch
            if failure is not None:
                line = start_line + 1 + consumed
                self.rows += 1
                detected = f" (detected at line {reader.line_num})" if reader.line_num != line else ""
                self.report.error("csv", f"malformed record: {failure}{detected}", row=self.rows, line=line)

    def _batch(self, raw: list[list[str]], start_line: int, exact: bool) -> CsvBatch | None:
        if self.width is None:  # no header and no configured columns: the first record sets the width
            first = next((r for r in raw if r), None)
            if first is None:
                self.blank_lines += len(raw)
                return None
            self.header = [f"col{i}" for i in range(1, len(first) + 1)]
            self._configure(self.header, start_line)
        width = self.width
        assert width is not None
        starts: list[int] | None = None

        def line_of(raw_index: int) -> int:
            nonlocal starts
            if exact:
                return start_line + 1 + raw_index
            if starts is None:
                starts = [start_line + 1]
                for row in raw:
                    starts.append(starts[-1] + 1 + _extra_lines(row))
            return starts[raw_index]

        row_base = self.rows
        raw_index: list[int] | None = None
        skip: set[int] = set()
        lengths = set(map(len, raw))
        if len(lengths) == 1 and width in lengths:
            rows = raw
        else:
            rows, raw_index = [], []
            for i, row in enumerate(raw):
                if not row:
                    self.blank_lines += 1
                    continue
                if len(row) != width:
                    self.report.error("ragged", f"expected {width} fields, found {len(row)}",
                                      row=row_base + len(rows) + 1, line=line_of(i),
                                      value=self.delimiter.join(row))
                    skip.add(len(rows))
                    row = (row + [""] * (width - len(row)))[:width]
                rows.append(row)
                raw_index.append(i)
        self.rows += len(rows)
        if not rows:
            return None
        columns = list(zip(*rows))  # noqa: B905 - every row has exactly `width` fields here
        ok: list[bool] | None = None
        if self.check and self.checks:
            ok = [True] * width
            for check in self.checks:
                values = columns[check.position]
                if check.batch_ok(values):
                    continue
                ok[check.position] = False
                self._column_problems(check, values, row_base, skip, raw_index, line_of)
        if self.decoder is not None and self.decoder.errors:
            # The decoder runs ahead of the parser: once it has replaced bytes, look at every later batch.
            self._decode_problems(rows, row_base, raw_index, line_of)
        return CsvBatch(rows, columns, row_base + 1, ok)

    def _column_problems(self, check: ColumnCheck, values: Sequence[str], row_base: int, skip: set[int],
                         raw_index: list[int] | None, line_of: Callable[[int], int]) -> None:
        report = self.report
        for i, code, message in check.problems(values):
            if i in skip:  # a ragged record: reported once as ragged, not again per field
                continue
            if report.full:
                report.count(1)
                continue
            report.error(code, message, row=row_base + i + 1,
                         line=line_of(raw_index[i] if raw_index is not None else i),
                         column=check.position + 1, field=check.name, value=values[i])

    def _decode_problems(self, rows: list[list[str]], row_base: int, raw_index: list[int] | None,
                         line_of: Callable[[int], int]) -> None:
        decoder = self.decoder
        assert decoder is not None
        if not any("\ufffd" in value for value in columns_text(rows)):
            return
        header = self.header or []
        for i, row in enumerate(rows):
            for position, value in enumerate(row):
                if "\ufffd" in value:
                    self.decode_problems += 1
                    self.report.error(
                        "encoding", f"bytes that are not valid {decoder.label} (shown as \ufffd)",
                        row=row_base + i + 1, line=line_of(raw_index[i] if raw_index is not None else i),
                        column=position + 1, field=header[position] if position < len(header) else None,
                        value=value)


def columns_text(rows: list[list[str]]) -> Iterator[str]:
    """One string per record (its fields joined), for cheap substring tests over a batch."""
    return map("\x00".join, rows)


# ---------------------------------------------------------------------------------------------------------
# The validation of one file


class FileValidation:
    """One file's validation, in steps a validating transform can interleave with its own work:
    `open()` (size, detection, type), then `csv_batches()` or `run()`, then `finish()`."""

    def __init__(self, rule: Any, *, file_name: str = "", size: int | None = None,
                 base_dir: str | Path | None = None) -> None:
        self.spec: RuleSpec = rule_spec(rule)
        self.file_name = file_name
        self.size = size
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.report = ReportBuilder(file_name=file_name, declared_type=self.spec.type,
                                    max_errors=self.spec.max_errors, sensitivity=self.spec.sensitivity)
        self.detection: Detection | None = None
        self.decoder: StreamDecoder | None = None
        self.engine: CsvEngine | None = None
        self._stream: Iterator[bytes] = iter(())
        self._counted = 0
        self._read_all = False
        self._found: FileType | None = None

    @property
    def content_type(self) -> FileType | None:
        """The type the content is validated as, or None when validation stopped before the content."""
        return None if self.report.stopped else self._found

    def open(self, chunks: Iterable[bytes], *, expect: FileType | None = None) -> FileType | None:
        """Check size bounds, detect type and encoding, check the type; the content type, or None if stopped.

        `expect=FileType.CSV` (a CSV transform) reads plain text without a delimiter as one-column CSV."""
        self._found = self._open(chunks, expect)
        return self.content_type

    def _open(self, chunks: Iterable[bytes], expect: FileType | None) -> FileType | None:
        spec, report = self.spec, self.report
        if self.size is not None:
            report.bytes = self.size
            if spec.max_bytes is not None and self.size > spec.max_bytes:
                report.error("size", f"file is {self.size} bytes; the maximum is {spec.max_bytes}",
                             value=str(self.size))
                report.stopped = True
                return None
            if spec.min_bytes is not None and self.size < spec.min_bytes:
                report.error("size", f"file is {self.size} bytes; the minimum is {spec.min_bytes}",
                             value=str(self.size))
        head, stream = peek(chunks)
        self._stream = self._count(stream)
        try:
            detection = detect(head, self.file_name, encoding=spec.encoding, quotechar=spec.csv.quotechar)
        except ValueError as exc:
            raise ConfigurationError(f"rule {spec.match!r}: {exc}") from exc
        self.detection = detection
        report.file_type = detection.file_type.value
        report.encoding = detection.encoding_label
        for note in detection.notes:
            report.warn(note)
        declared = spec.type
        found = detection.file_type
        if found is FileType.EMPTY:
            if declared in _TYPES_FOR:
                report.error("empty", f"the file is empty: no {declared} content")
            return found
        if declared in _TYPES_FOR and found not in _TYPES_FOR[declared]:
            report.error("type", f"expected {declared} content, found {found.value}")
            report.stopped = True
            return None
        if declared == "binary":
            report.file_type = found.value
            return FileType.BINARY
        if found is FileType.TEXT and (declared == "csv" or (declared == "auto" and expect is FileType.CSV)):
            if len(spec.csv.columns) > 1 or len(spec.csv.required_columns) > 1:
                report.warn("no delimiter was found in the first lines: read as CSV with the configured dialect")
            found = FileType.CSV
            report.file_type = found.value
        self.decoder = StreamDecoder(detection.encoding, provisional=detection.provisional)
        if found is FileType.CSV:
            self._open_csv(detection)
        return found

    def _open_csv(self, detection: Detection) -> None:
        rules = self.spec.csv
        delimiter = rules.delimiter or detection.delimiter or ","
        if rules.delimiter and detection.delimiter and detection.delimiter != rules.delimiter:
            self.report.warn(f"configured delimiter {rules.delimiter!r} but the content looks "
                             f"{detection.delimiter!r}-delimited")
        self.report.delimiter = delimiter
        self.engine = CsvEngine(rules, self.report, delimiter=delimiter, decoder=self.decoder)

    def _count(self, stream: Iterator[bytes]) -> Iterator[bytes]:
        limit = self.spec.max_bytes if self.size is None else None
        for chunk in stream:
            self._counted += len(chunk)
            if limit is not None and self._counted > limit:
                raise _SizeExceededError
            yield chunk
        self._read_all = True

    def lines(self) -> Iterator[str]:
        """The rest of the opened file as decoded physical lines (for line-based formats)."""
        if self.decoder is None:
            raise WharfError("lines() needs a text file opened with open()")
        return iter_lines(self.decoder.blocks(self._stream))

    def utf8(self) -> Iterator[bytes]:
        """The rest of the opened file re-encoded as UTF-8 without BOM.

        JSON content is checked for nesting on the way: past MAX_NESTING_DEPTH the stream ends with
        ValidationFailedError, before a parser behind it recurses or slows down."""
        if self.decoder is None:
            raise WharfError("utf8() needs a text file opened with open()")
        utf8 = self.decoder.utf8(self._stream)
        if self._found not in (FileType.JSON, FileType.JSONL):
            return utf8
        return self._nesting_checked(utf8, lines=self._json_lines_mode(self._found))

    def _nesting_checked(self, utf8: Iterator[bytes], *, lines: bool) -> Iterator[bytes]:
        try:
            yield from JsonNesting(lines=lines).check(utf8)
        except NestingTooDeepError as exc:
            self._too_deep(exc)
            raise ValidationFailedError(self.report.build()) from exc

    def _too_deep(self, exc: NestingTooDeepError, *, row: int | None = None) -> None:
        self.report.error("nesting", nesting_message(exc.limit), row=row, line=exc.line, column=exc.column)
        self.report.stopped = row is None

    def csv_batches(self, *, check: bool = True) -> Iterator[CsvBatch]:
        """The records of a CSV file opened with `open()`, validated on the way (with `check`)."""
        if self.engine is None or self.decoder is None:
            raise WharfError("csv_batches() needs a file opened as CSV")
        self.engine.check = check
        try:
            yield from self.engine.batches(iter_lines(self.decoder.blocks(self._stream)))
        except _SizeExceededError:
            self._too_big()
        except LineTooLongError as exc:
            self.report.error("line_length", str(exc), row=self.engine.rows + 1)
            self.report.stopped = True

    def run(self) -> None:
        """Validate the content of a file opened with `open()` (any type) to its end."""
        found = self.content_type
        try:
            if found is FileType.CSV:
                for _ in self.csv_batches():
                    pass
            elif found in (FileType.JSON, FileType.JSONL):
                self._json(found)
            elif found is FileType.XML:
                self._xml()
            elif found is not None and self.size is None:
                for _ in self._stream:  # binary/text/empty: only the byte count (and max_bytes) matter
                    pass
        except _SizeExceededError:
            self._too_big()
        except LineTooLongError as exc:
            self.report.error("line_length", str(exc))
            self.report.stopped = True

    def _too_big(self) -> None:
        self.report.error("size", f"file is larger than the maximum of {self.spec.max_bytes} bytes")
        self.report.stopped = True

    def finish(self) -> ValidationReport:
        report, decoder = self.report, self.decoder
        if self.size is None:
            report.bytes = self._counted
        elif self._read_all and self._counted != self.size:
            report.warn(f"read {self._counted} bytes, but the size given was {self.size}")
        if self.size is None and self._read_all:
            spec = self.spec
            if spec.min_bytes is not None and self._counted < spec.min_bytes:
                report.error("size", f"file is {self._counted} bytes; the minimum is {spec.min_bytes}")
        if decoder is not None:
            report.encoding = decoder.label
            if decoder.switched_at is not None:
                report.warn(f"ASCII up to byte {decoder.switched_at}, then not UTF-8: decoded as windows-1252")
            if decoder.errors and (self.engine is None or not self.engine.decode_problems):
                report.error("encoding", f"{decoder.errors} byte sequences are not valid {decoder.label} "
                                         f"(first at byte {decoder.first_error_offset})")
        if self.engine is not None:
            report.rows = self.engine.rows
            if self.engine.blank_lines:
                report.warn(f"{self.engine.blank_lines} blank lines were skipped")
        return report.build()

    # -- JSON ---------------------------------------------------------------------------------------------

    def _json(self, found: FileType) -> None:
        decoder = self.decoder
        assert decoder is not None
        validator = load_json_schema(self.spec.json_schema, self.base_dir)
        if self._json_lines_mode(found):
            self.report.file_type = FileType.JSONL.value
            self._json_lines(iter_lines(decoder.blocks(self._stream)), validator)
            return
        guard = JsonNesting()
        try:
            self._json_document(guard.check(decoder.utf8(self._stream)), validator)
        except NestingTooDeepError as exc:
            self._too_deep(exc)

    def _json_lines_mode(self, found: FileType) -> bool:
        return found is FileType.JSONL or self.file_name.lower().endswith((".jsonl", ".ndjson"))

    def _json_lines(self, lines: Iterator[str], validator: Any) -> None:
        report = self.report
        rows = 0
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            rows += 1
            if line.count("[") + line.count("{") > MAX_NESTING_DEPTH:  # only such a line can be too deep
                try:
                    JsonNesting().feed(line.encode("utf-8", "surrogatepass"))
                except NestingTooDeepError as exc:
                    self.report.error("nesting", nesting_message(exc.limit), row=rows, line=line_no,
                                      column=exc.column)
                    continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                try:
                    value = json.loads(line)  # orjson refuses integers beyond 64 bits; JSON does not
                except json.JSONDecodeError as exc:
                    report.error("json", f"not valid JSON: {exc.msg}", row=rows, line=line_no, column=exc.colno,
                                 value=line.rstrip("\r\n"))
                    continue
            if validator is not None:
                self._schema_errors(validator, value, row=rows, line=line_no)
        report.rows = rows

    def _schema_errors(self, validator: Any, value: Any, *, row: int | None, line: int | None,
                       prefix: str = "$", array: bool = False) -> None:
        report = self.report
        try:
            for error in validator.iter_errors(value):
                if report.full:
                    report.count(1)
                    continue
                path = prefix + error.json_path[1:]
                shown = orjson.dumps(error.instance, default=str).decode()
                where = row
                if array and error.absolute_path and isinstance(error.absolute_path[0], int):
                    where = error.absolute_path[0] + 1  # the record of a top-level array
                report.error("schema", error.message, row=where, line=line, field=path, value=shown)
        except RecursionError:
            # Within MAX_NESTING_DEPTH, a schema that follows many $refs per level can still exhaust the stack.
            report.error("nesting", "the document is too deeply nested for its schema to be checked "
                                    f"(each level of nesting costs the schema several steps); nest less than "
                                    f"{MAX_NESTING_DEPTH} levels or simplify the schema", row=row, line=line,
                         field=prefix)

    def _json_document(self, utf8: Iterator[bytes], validator: Any) -> None:
        report = self.report
        held: list[bytes] = []
        have = 0
        for chunk in utf8:
            held.append(chunk)
            have += len(chunk)
            if have > FULL_LOAD_LIMIT:
                break
        if have <= FULL_LOAD_LIMIT:
            text = b"".join(held).decode("utf-8")
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                report.error("json", f"not valid JSON: {exc.msg}", line=exc.lineno, column=exc.colno,
                             value=text[max(0, exc.pos - 20):exc.pos + 20])
                return
            report.rows = len(value) if isinstance(value, list) else 1
            if validator is not None:
                self._schema_errors(validator, value, row=None, line=None, array=isinstance(value, list))
            return
        stream = ChunkReader(chain(held, utf8))
        items = _items_validator(validator.schema) if validator is not None else None
        first = next((b for b in held[0][:64] if b not in b" \t\r\n"), 0) if held else 0
        if validator is not None and (items is None or first != ord("[")):
            report.warn(f"document larger than {FULL_LOAD_LIMIT} bytes whose schema is not an array of items: "
                        "checked for well-formedness only; use JSON Lines or a top-level array")
        try:
            if first == ord("["):
                count = 0
                for count, item in enumerate(ijson.items(stream, "item"), 1):
                    if items is not None:
                        self._schema_errors(items, item, row=count, line=None, prefix=f"$[{count - 1}]")
                report.rows = count
                if validator is not None and items is not None:
                    _array_bounds(validator.schema, count, report)
            else:
                for _ in ijson.parse(stream):
                    pass
                report.rows = 1
        except ijson.JSONError as exc:
            report.error("json", f"not valid JSON: {exc}")

    # -- XML ----------------------------------------------------------------------------------------------

    def _xml(self) -> None:
        decoder = self.decoder
        assert decoder is not None
        utf8 = decoder.utf8(self._stream)
        if self.spec.xsd:
            try:
                schema = load_xsd(self.spec.xsd, self.base_dir)
            except ImportError:
                self.report.error("xsd_unavailable", "XSD validation unavailable: lxml is not installed")
            else:
                self._xml_xsd(utf8, schema)
                return
        self._xml_expat(utf8)

    def _xml_expat(self, utf8: Iterator[bytes]) -> None:
        report = self.report
        parser = expat.ParserCreate(encoding="UTF-8")  # the stream is already UTF-8, whatever it declares
        depth = 0
        records = 0

        def start(name: str, attrs: Any) -> None:
            nonlocal depth, records
            depth += 1
            if depth == 2:
                records += 1
            elif depth > MAX_NESTING_DEPTH:  # where the element starts: once stopped, the parser moves on
                raise _XmlTooDeepError(parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)

        def end(name: str) -> None:
            nonlocal depth
            depth -= 1

        def no_entities(*args: Any) -> None:
            raise _ForbiddenXmlError("entity declarations are not allowed (entity expansion protection)")

        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.EntityDeclHandler = no_entities
        parser.buffer_text = True
        try:
            for chunk in utf8:
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            report.error("xml", f"not well-formed XML: {expat.errors.messages[exc.code]}", line=exc.lineno,
                         column=exc.offset + 1)
        except _ForbiddenXmlError as exc:
            report.error("xml", str(exc), line=parser.CurrentLineNumber, column=parser.CurrentColumnNumber + 1)
        except _XmlTooDeepError as exc:
            report.error("nesting", nesting_message(), line=exc.line, column=exc.column)
            report.stopped = True
        report.rows = records

    def _xml_xsd(self, utf8: Iterator[bytes], schema: Any) -> None:
        from lxml import etree

        report = self.report
        # libxml2's schema errors reach XMLSyntaxError.error_log through lxml's per-thread global log, which
        # is not cleared between parses: without this, a report carried the errors (and values) of every file
        # validated before it on the same thread, another partner's included.
        etree.clear_error_log()
        parser = etree.XMLPullParser(events=("start", "end"), schema=schema, encoding="utf-8",
                                     resolve_entities=False, no_network=True, load_dtd=False)
        depth = 0
        records = 0
        try:
            for chunk in utf8:
                parser.feed(chunk)
                for event, element in parser.read_events():
                    if event == "start":
                        depth += 1
                        records += depth == 2
                        if depth > MAX_NESTING_DEPTH:  # libxml2 would stop at 256 with "no element found"
                            report.error("nesting", nesting_message(), line=element.sourceline)
                            report.stopped = True
                            report.rows = records
                            return
                        continue
                    depth -= 1
                    if depth >= 1:  # keep memory flat: drop finished elements
                        element.clear()
                        parent = element.getparent()
                        if parent is not None and depth == 1:
                            while element.getprevious() is not None:
                                del parent[0]
            parser.close()
        except etree.XMLSyntaxError as exc:
            entries = [e for e in exc.error_log if e.domain_name != "SCHEMASV"]
            schema_errors = [e for e in exc.error_log if e.domain_name == "SCHEMASV"]
            for entry in schema_errors:
                report.xsd_error(entry.message, line=entry.line or None)
            if entries or not schema_errors:
                # exc.msg may be a schema message (quoting a value): the syntax error's own message, scrubbed too
                line, column = exc.position if exc.position != (0, 0) else (None, None)
                text = entries[0].message if entries else exc.msg
                report.error("xml", f"not well-formed XML: {report.sensitivity.scrub_xsd(text)}", line=line,
                             column=column + 1 if column is not None else None)
        report.rows = records


class _ForbiddenXmlError(Exception):
    pass


class _XmlTooDeepError(Exception):
    def __init__(self, line: int, column: int) -> None:
        super().__init__(line, column)
        self.line = line
        self.column = column


def _items_validator(schema: Mapping[str, Any]) -> Any:
    """A validator for the items of a top-level array schema (refs still resolve), or None if not that shape."""
    allowed = {"$schema", "$id", "$defs", "definitions", "type", "items", "minItems", "maxItems", "title",
               "description", "$comment"}
    if not isinstance(schema, Mapping) or not isinstance(schema.get("items"), Mapping) or set(schema) - allowed:
        return None
    if schema.get("type", "array") not in ("array", ["array"]):
        return None
    wrapper = {k: schema[k] for k in ("$schema", "$id", "$defs") if k in schema}
    wrapper["definitions"] = {**schema.get("definitions", {}), "__wharf_item": schema["items"]}
    wrapper["$ref"] = "#/definitions/__wharf_item"
    return _validator_for(json.dumps(wrapper, sort_keys=True))


def _array_bounds(schema: Mapping[str, Any], count: int, report: ReportBuilder) -> None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and count < low:
        report.error("schema", f"array has {count} items; minItems is {low}", field="$")
    if isinstance(high, int) and count > high:
        report.error("schema", f"array has {count} items; maxItems is {high}", field="$")


def load_json_schema(schema: str | Mapping[str, Any] | None, base_dir: Path | None = None) -> Any:
    """A jsonschema validator (format checks on) for an inline schema or a path, or None; compiled once."""
    if schema is None:
        return None
    if isinstance(schema, Mapping):
        return _validator_for(json.dumps(schema, sort_keys=True))
    path = _resolve(schema, base_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"json_schema {schema!r}: cannot read {path}: {exc.strerror}") from exc
    return _validator_for(text, str(path))


@lru_cache(maxsize=64)
def _validator_for(text: str, origin: str = "inline") -> Any:
    import jsonschema

    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"json_schema {origin}: not valid JSON: {exc}") from exc
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ConfigurationError(f"json_schema {origin}: not a valid JSON Schema: {exc.message}") from exc
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load_xsd(xsd: str, base_dir: Path | None = None) -> Any:
    """An lxml XMLSchema for a path (ImportError when lxml is missing); compiled once."""
    import lxml.etree  # noqa: F401 - ImportError here means "XSD validation unavailable"

    # One compiled schema per thread: lxml objects are not meant to be shared between threads.
    return _xsd_for(str(_resolve(xsd, base_dir)), threading.get_ident())


@lru_cache(maxsize=32)
def _xsd_for(path: str, thread: int) -> Any:
    from lxml import etree

    try:
        return etree.XMLSchema(etree.parse(path, etree.XMLParser(no_network=True, resolve_entities=False)))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ConfigurationError(f"xsd {path}: {exc}") from exc


def _resolve(path: str, base_dir: Path | None) -> Path:
    candidate = Path(path)
    if not candidate.is_absolute() and base_dir is not None:
        candidate = base_dir / candidate
    return candidate


def validate_stream(chunks: Iterable[bytes], rule: Any, *, file_name: str, size: int | None = None,
                    base_dir: str | Path | None = None) -> ValidationReport:
    """Validate a file streamed as byte chunks (e.g. `BlobStore.open_read`) against a catalogue `FileRule`.

    Memory stays flat whatever the size. `size` (the blob size) lets size bounds be checked before reading;
    without it bytes are counted on the way. Relative `json_schema`/`xsd` paths resolve against `base_dir`
    (the catalogue's folder). Raises ConfigurationError for a broken rule (bad schema, unknown encoding); a
    broken file is never an exception: it is a report with `valid=False`.
    """
    validation = FileValidation(rule, file_name=file_name, size=size, base_dir=base_dir)
    with span("wharf.validate", {"wharf.file_name": file_name, "file.size": size}) as s:
        if validation.open(chunks) is not None:
            validation.run()
        report = validation.finish()
        s.set_attribute("wharf.valid", report.valid)
        s.set_attribute("wharf.rows", report.rows)
        s.set_attribute("wharf.error_count", report.error_count)
    return report
