"""Transforms: a registry of streaming file transforms, and validate_and_transform (one pass for CSV input)."""

from __future__ import annotations

import csv
import dataclasses
import io
import queue
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from json.encoder import encode_basestring
from operator import itemgetter
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import ijson
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.domain.detect import ChunkReader, FileType
from shared.domain.errors import ConfigurationError, WharfError
from shared.domain.masking import mask_value
from shared.domain.validation import DECIMAL_RE, INTEGER_RE, ColumnCheck, RuleSpec, ValidationReport, rule_spec
from shared.services.validate import CsvBatch, FileValidation, ValidationFailedError, validate_stream

__all__ = [
    "TRANSFORMS",
    "CsvNormalise",
    "CsvToJsonl",
    "JsonToCsv",
    "Passthrough",
    "Transform",
    "TransformError",
    "TransformRegistry",
    "TransformRun",
    "UnknownTransformError",
    "ValidationFailedError",
    "get_transform",
    "register",
    "validate_and_transform",
]


class TransformError(WharfError):
    """The input cannot be transformed (wrong type for the transform, a record it cannot represent)."""


class UnknownTransformError(ConfigurationError, KeyError):
    """No transform is registered under a name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Transform(ABC):
    """A streaming transform: `run()` is a generator of output chunks (feed it to BlobStore.upload_stream);
    after it is exhausted, `rows` holds how many records it wrote (None when it does not count records).

    A new transform is one subclass with `@register("name")`, an `Options` model and `run()`.
    """

    name: ClassVar[str] = ""
    output_extension: ClassVar[str] = ""  # "" keeps the input's extension
    content_type: ClassVar[str] = "application/octet-stream"
    Options: ClassVar[type[BaseModel]] = _Options

    def __init__(self) -> None:
        self.rows: int | None = None
        self.warnings: list[str] = []

    def parse_options(self, options: Mapping[str, Any] | BaseModel | None) -> Any:
        """The transform's options model; ConfigurationError naming the transform and the bad option."""
        if isinstance(options, self.Options):
            return options
        try:
            return self.Options.model_validate(dict(options or {}))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"transform {self.name}: invalid options: {problems}") from exc

    @abstractmethod
    def run(self, chunks: Iterable[bytes], options: Mapping[str, Any] | None, rule: Any) -> Iterator[bytes]:
        """Output chunks for the input `chunks`, streaming (memory does not grow with the file)."""

    @classmethod
    def output_name(cls, file_name: str) -> str:
        """`file_name` with this transform's extension ("orders.csv" -> "orders.jsonl")."""
        if not cls.output_extension:
            return file_name
        stem = file_name.rsplit(".", 1)[0] if "." in file_name.rsplit("/", 1)[-1] else file_name
        return stem + cls.output_extension


T = TypeVar("T", bound=type[Transform])


class TransformRegistry:
    """Transforms by name. `get(name)` returns the class; instantiate it per run."""

    def __init__(self) -> None:
        self._items: dict[str, type[Transform]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(cls: T) -> T:
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"transform {name!r} is already registered by {self._items[name].__name__}")
            cls.name = name
            self._items[name] = cls
            return cls
        return decorate

    def get(self, name: str) -> type[Transform]:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownTransformError(
                f"unknown transform {name!r}; known transforms: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


TRANSFORMS = TransformRegistry()


def register(name: str) -> Callable[[T], T]:
    """Class decorator: make a Transform available as `name` in TRANSFORMS."""
    return TRANSFORMS.register(name)


def get_transform(name: str) -> Transform:
    """A new instance of the transform registered as `name` (UnknownTransformError lists the known ones)."""
    return TRANSFORMS.get(name)()


# ---------------------------------------------------------------------------------------------------------
# CSV input


class _CsvInput(Transform):
    """A transform of CSV records: it reads batches from a FileValidation, so the same code runs validating
    (validate_and_transform, one pass) or not (run)."""

    def run(self, chunks: Iterable[bytes], options: Mapping[str, Any] | None, rule: Any) -> Iterator[bytes]:
        opts = self.parse_options(options)
        validation = FileValidation(_unbounded(rule), file_name="")
        found = validation.open(chunks, expect=FileType.CSV)
        if found is not FileType.CSV:
            raise TransformError(f"transform {self.name} needs CSV input; found {validation.report.file_type}")
        return self._checked(validation, self.from_batches(validation, opts, check=False))

    @staticmethod
    def _checked(validation: FileValidation, output: Iterator[bytes]) -> Iterator[bytes]:
        yield from output
        if validation.report.stopped:  # the input could not be read to its end (a line over 64 Mi characters)
            raise TransformError(f"input not fully read: {validation.report.errors[-1].message}")

    @abstractmethod
    def from_batches(self, validation: FileValidation, options: Any, *, check: bool) -> Iterator[bytes]:
        """Output chunks for the records of an opened CSV file."""


_JSON_SAFE_BYTES = bytes(range(0x20, 0x100)).replace(b'"', b"").replace(b"\\", b"")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?", re.ASCII)
_LEADING_ZERO = re.compile(r"\n-?0\d")
_DIGITS_TO_9 = str.maketrans("0123456789", "9999999999")
_ISO_CACHE_LIMIT = 100_000


class _JsonColumn:
    """How one column becomes JSON text, decided per batch: either the raw values with the quotes in the
    separators (no per-value work), or one JSON fragment per value."""

    def __init__(self, name: str, check: ColumnCheck | None, decimals: str) -> None:
        self.key = encode_basestring(name)
        self.check = check
        self.kind = check.kind if check is not None else "string"
        self.decimals = decimals
        self._iso: dict[str, str] = {}
        self._number_shapes: set[str] = set()

    def encode(self, values: Sequence[str], ok: bool | None) -> tuple[bool, Sequence[str]]:
        """(quoted, fragments) for a batch column; `ok` is the validation verdict when known."""
        kind = self.kind
        check = self.check
        if kind == "enum" and check is not None and check.json_safe_values:
            if ok is None:
                ok = check.batch_ok(values)
            if ok:  # every value is an allowed one, and those need no escaping
                return True, values
        if kind in ("string", "enum", "regex"):
            # UTF-8 bytes needing a JSON escape are exactly '"', '\\' and the controls below 0x20.
            if not "".join(values).encode("utf-8", "surrogatepass").translate(None, _JSON_SAFE_BYTES):
                return True, values
            return False, list(map(encode_basestring, values))
        assert check is not None
        if ok is None:
            ok = check.batch_ok(values)
        has_empty = "" in values
        if kind == "date":
            if ok and not has_empty and check.iso_is_value:
                return True, values
            iso = check.iso_dates(values) if ok and not has_empty else None
            if iso is not None:
                return True, iso
            return False, self._dates(values)
        if kind == "integer":
            if ok and not has_empty:
                joined = "\n" + "\n".join(values)
                if "+" not in joined and (("\n0" not in joined and "\n-0" not in joined)
                                          or _LEADING_ZERO.search(joined) is None):
                    return False, values
            return False, [_integer(v) for v in values]
        if kind == "decimal":
            if self.decimals == "string":
                if ok and not has_empty:
                    return True, values
                return False, [_decimal_text(v) for v in values]
            if ok and not has_empty and self._json_numbers(values):
                return False, values
            return False, [_decimal_number(v) for v in values]
        return False, list(map(encode_basestring, values))

    def _json_numbers(self, values: Sequence[str]) -> bool:
        joined = "\n".join(values)
        for shape in set(joined.translate(_DIGITS_TO_9).split("\n")).difference(self._number_shapes):
            if not _JSON_NUMBER.fullmatch(shape):
                return False
            self._number_shapes.add(shape)
        # A shape cannot tell "0" from "9": leading zeros ("007.5") need a look at the values themselves.
        return _LEADING_ZERO.search("\n" + joined) is None

    def _dates(self, values: Sequence[str]) -> list[str]:
        cache = self._iso
        if len(cache) > _ISO_CACHE_LIMIT:
            cache.clear()
        date = self.check.date if self.check is not None else None
        assert date is not None
        for value in set(values).difference(cache):
            if value == "":
                cache[value] = "null"
                continue
            iso = date.iso(value)
            cache[value] = f'"{iso}"' if iso is not None else encode_basestring(value)
        return list(map(cache.__getitem__, values))


def _integer(value: str) -> str:
    if value == "":
        return "null"
    if INTEGER_RE.fullmatch(value):
        return str(int(value))
    return encode_basestring(value)  # invalid (written only when not failing on invalid input): kept as text


def _decimal_text(value: str) -> str:
    if value == "":
        return "null"
    if DECIMAL_RE.fullmatch(value):
        return f'"{value}"'
    return encode_basestring(value)


def _decimal_number(value: str) -> str:
    if value == "":
        return "null"
    if DECIMAL_RE.fullmatch(value):
        return value if _JSON_NUMBER.fullmatch(value) else str(Decimal(value))
    return encode_basestring(value)


class MaskOptions(_Options):
    columns: list[str] = Field(min_length=1, description="columns whose values are masked in the output")
    style: Literal["last4", "hash", "redact"] = "last4"


def _masked(batches: Iterable[CsvBatch], validation: FileValidation, mask: MaskOptions | None) -> Iterator[CsvBatch]:
    """The batches with the `mask` columns' values masked (rows and columns alike), after validation saw them."""
    if mask is None:
        yield from batches
        return
    positions: list[int] | None = None
    for batch in batches:
        if positions is None:
            header = (validation.engine.header if validation.engine is not None else None) or []
            missing = [c for c in mask.columns if c not in header]
            if missing:
                raise TransformError(f"mask: columns not in the header: {', '.join(missing)}")
            positions = [header.index(c) for c in mask.columns]
        for p in positions:
            column = tuple(mask_value(v, mask.style) for v in batch.columns[p])
            batch.columns[p] = column
            for row, value in zip(batch.rows, column, strict=True):
                row[p] = value
        yield batch
        del batch  # one batch alive at a time


def _masked_positions(validation: FileValidation, mask: MaskOptions | None) -> set[int]:
    header = (validation.engine.header if validation.engine is not None else None) or []
    return {header.index(c) for c in (mask.columns if mask else []) if c in header}


class CsvToJsonlOptions(_Options):
    decimals: Literal["string", "number"] = Field(
        default="string", description="decimal columns as JSON strings (exact, the default) or JSON numbers")
    columns: list[str] | None = Field(default=None, description="keys for a CSV without header")
    mask: MaskOptions | None = None


@register("csv_to_jsonl")
class CsvToJsonl(_CsvInput):
    """Each CSV record becomes one JSON object line, typed by the rule's columns: integer -> number,
    decimal -> string (or number), date -> ISO 8601 string, empty typed value -> null, anything else -> string."""

    output_extension = ".jsonl"
    content_type = "application/x-ndjson"
    Options = CsvToJsonlOptions

    def from_batches(self, validation: FileValidation, options: Any, *, check: bool) -> Iterator[bytes]:
        engine = validation.engine
        assert engine is not None
        writer: _JsonlWriter | None = None
        self.rows = 0
        for batch in _masked(validation.csv_batches(check=check), validation, options.mask):
            if writer is None:
                names = list(options.columns or engine.header or [])
                if len(names) < (engine.width or 0):
                    names += [f"col{i}" for i in range(len(names) + 1, (engine.width or 0) + 1)]
                masked = _masked_positions(validation, options.mask)  # masked values are strings now
                by_position = {c.position: c for c in engine.checks if c.position not in masked}
                writer = _JsonlWriter([_JsonColumn(names[i], by_position.get(i), options.decimals)
                                       for i in range(engine.width or 0)])
            self.rows += len(batch.rows)
            data = writer.text(batch).encode("utf-8")
            del batch  # see CsvEngine.batches: one batch alive at a time
            yield data


class _JsonlWriter:
    """Writes batches as JSON Lines. One flat list holds separators and values in output order, filled by slice
    assignment and joined once: no per-row Python code. Consecutive batches of the same shape reuse the list and
    its separators, so only the values are assigned."""

    def __init__(self, columns: list[_JsonColumn]) -> None:
        self.columns = columns
        self.stride = 2 * len(columns) + 1
        self._parts: list[str] = []
        self._shape: tuple[int, tuple[bool, ...]] | None = None

    def text(self, batch: CsvBatch) -> str:
        values, ok = batch.columns, batch.ok
        n = len(batch.rows)
        stride = self.stride
        encoded = [column.encode(values[i], ok[i] if ok is not None else None)
                   for i, column in enumerate(self.columns)]
        shape = (n, tuple(quoted for quoted, _ in encoded))
        parts = self._parts
        if shape != self._shape:
            parts = self._parts = [""] * (n * stride)
            self._shape = shape
            previous_quoted = False
            for i, (column, (quoted, _)) in enumerate(zip(self.columns, encoded, strict=True)):
                separator = ('"' if previous_quoted else "") + ("{" if i == 0 else ",") + column.key + ":" + (
                    '"' if quoted else "")
                parts[2 * i::stride] = [separator] * n
                previous_quoted = quoted
            parts[stride - 1::stride] = [('"' if previous_quoted else "") + "}\n"] * n
        for i, (_, fragments) in enumerate(encoded):
            parts[2 * i + 1::stride] = fragments
        return "".join(parts)


class CsvNormaliseOptions(_Options):
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    rename: dict[str, str] = Field(default_factory=dict)
    select: list[str] | None = None
    order: list[str] | None = None
    line_terminator: Literal["\r\n", "\n"] = "\r\n"
    mask: MaskOptions | None = None


@register("csv_normalise")
class CsvNormalise(_CsvInput):
    """CSV in any supported encoding/dialect -> UTF-8 CSV (RFC 4180 quoting). `select` keeps (and orders) input
    columns, `order` moves the named ones first, `rename` maps input names to output names."""

    output_extension = ".csv"
    content_type = "text/csv; charset=utf-8"
    Options = CsvNormaliseOptions

    def from_batches(self, validation: FileValidation, options: Any, *, check: bool) -> Iterator[bytes]:
        engine = validation.engine
        assert engine is not None
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=options.delimiter, lineterminator=options.line_terminator)
        pick: Callable[[list[str]], Sequence[str]] | None = None
        self.rows = 0
        started = False
        for batch in _masked(validation.csv_batches(check=check), validation, options.mask):
            if not started:
                started = True
                header = engine.header or []
                indexes = _column_indexes(header, options.select, options.order)
                if indexes != list(range(len(header))):
                    pick = _picker(indexes)
                if engine.rules.header:
                    writer.writerow([options.rename.get(header[i], header[i]) for i in indexes])
            writer.writerows(map(pick, batch.rows) if pick is not None else batch.rows)
            self.rows += len(batch.rows)
            yield _drain(buffer)
        if not started and engine.header and engine.rules.header:  # header only
            indexes = _column_indexes(engine.header, options.select, options.order)
            writer.writerow([options.rename.get(engine.header[i], engine.header[i]) for i in indexes])
            yield _drain(buffer)


def _picker(indexes: list[int]) -> Callable[[list[str]], Sequence[str]]:
    getter = itemgetter(*indexes)
    if len(indexes) > 1:
        return getter
    return lambda row: (getter(row),)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    return data


def _column_indexes(header: list[str], select: list[str] | None, order: list[str] | None) -> list[int]:
    position = {name: i for i, name in reversed(list(enumerate(header)))}
    missing = [n for n in (select or []) + (order or []) if n not in position]
    if missing:
        raise TransformError(f"columns not in the header: {', '.join(missing)} (header: {', '.join(header)})")
    indexes = [position[n] for n in select] if select is not None else list(range(len(header)))
    if order:
        first = [position[n] for n in order if position[n] in indexes]
        indexes = first + [i for i in indexes if i not in first]
    return indexes


# ---------------------------------------------------------------------------------------------------------
# JSON input


def _unbounded(rule: Any) -> RuleSpec:
    """The rule without size bounds: enforcing them is validation's job, a transform just converts."""
    return dataclasses.replace(rule_spec(rule), min_bytes=None, max_bytes=None)


class JsonToCsvOptions(_Options):
    columns: list[str] | None = Field(default=None, description="header; default: the keys of the first object")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    line_terminator: Literal["\r\n", "\n"] = "\r\n"
    mask: MaskOptions | None = None


@register("json_to_csv")
class JsonToCsv(Transform):
    """A top-level array of flat objects, a single object, or JSON Lines -> UTF-8 CSV. Header from `columns` or
    the first object's keys; missing keys are empty, unknown keys are dropped (and counted in `warnings`);
    null -> empty, true/false -> true/false, nested values -> their JSON text."""

    output_extension = ".csv"
    content_type = "text/csv; charset=utf-8"
    Options = JsonToCsvOptions

    def run(self, chunks: Iterable[bytes], options: Mapping[str, Any] | None, rule: Any) -> Iterator[bytes]:
        opts = self.parse_options(options)
        validation = FileValidation(_unbounded(rule), file_name="")
        found = validation.open(chunks)
        if found not in (FileType.JSON, FileType.JSONL):
            raise TransformError(f"transform {self.name} needs JSON input; found {validation.report.file_type}")
        return self._convert(validation, found, opts)

    def _convert(self, validation: FileValidation, found: FileType, options: Any) -> Iterator[bytes]:
        # ijson for both shapes: numbers keep their digits (Decimal), memory stays flat.
        records = _json_records(ChunkReader(validation.utf8()), lines=found is FileType.JSONL)
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter=options.delimiter, lineterminator=options.line_terminator)
        header: list[str] | None = list(options.columns) if options.columns else None
        wrote_header = False
        self.rows = 0
        dropped = 0
        try:
            for record in records:
                if not isinstance(record, dict):
                    raise TransformError(f"record {self.rows + 1} is {type(record).__name__}, not an object")
                if header is None:
                    header = list(record)
                if not wrote_header:
                    writer.writerow(header)
                    wrote_header = True
                if len(record) > len(header):
                    dropped += sum(1 for key in record if key not in header)
                writer.writerow([_cell(record.get(key)) for key in header])
                self.rows += 1
                if buffer.tell() > 1 << 20:
                    yield _drain(buffer)
        except (ijson.JSONError, orjson.JSONDecodeError) as exc:
            raise TransformError(f"not valid JSON after {self.rows} records: {exc}") from exc
        if not wrote_header and header:
            writer.writerow(header)
        if dropped:
            self.warnings.append(f"{dropped} values under keys not in the header were dropped")
        yield _drain(buffer)


def _json_records(source: ChunkReader, *, lines: bool) -> Iterator[Any]:
    reader = io.BufferedReader(source, 1 << 16)
    if lines:
        yield from ijson.items(reader, "", multiple_values=True)
        return
    first = reader.peek(64).lstrip()[:1]
    yield from ijson.items(reader, "item" if first == b"[" else "")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return str(value)
    return orjson.dumps(value, default=str).decode()


# ---------------------------------------------------------------------------------------------------------
# Any input


@register("passthrough")
class Passthrough(Transform):
    """The bytes unchanged (no record count)."""

    def run(self, chunks: Iterable[bytes], options: Mapping[str, Any] | None, rule: Any) -> Iterator[bytes]:
        self.parse_options(options)
        for chunk in chunks:
            if chunk:
                yield chunk


# ---------------------------------------------------------------------------------------------------------
# Validate and transform


class TransformRun:
    """A transform running with validation. Iterate `chunks` (e.g. into upload_stream); afterwards `report`
    and `rows` are set. With `fail_on_invalid`, an invalid file raises ValidationFailedError before the last
    chunk, so the upload is never committed; `error.report` has the details."""

    def __init__(self, transform: Transform, chunks: Iterator[bytes]) -> None:
        self.transform = transform
        self.chunks = chunks
        self._report: ValidationReport | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    @property
    def report(self) -> ValidationReport:
        if self._report is None:
            raise WharfError("the report is ready once `chunks` has been consumed")
        return self._report

    @property
    def rows(self) -> int | None:
        return self.transform.rows

    @property
    def content_type(self) -> str:
        return self.transform.content_type


def validate_and_transform(
    chunks: Iterable[bytes], rule: Any, *, file_name: str, size: int | None = None,
    transform: str | None = None, options: Mapping[str, Any] | None = None, base_dir: str | Path | None = None,
    fail_on_invalid: bool = True,
) -> TransformRun:
    """Validate and transform in one streaming pass (the rule's transform unless `transform` is given).

    CSV transforms validate while they convert (one parse). Other transforms run beside a validation of the same
    chunks in a helper thread (bounded queue, memory flat). Returns a TransformRun whose `chunks` is a generator.
    """
    spec = rule_spec(rule)
    instance = TRANSFORMS.get(transform or spec.transform_name)()
    opts = instance.parse_options(options if options is not None else spec.transform_options)
    run = TransformRun(instance, iter(()))

    def finish(report: ValidationReport) -> None:
        run._report = report
        if fail_on_invalid and not report.valid:
            raise ValidationFailedError(report)

    def fused() -> Iterator[bytes]:
        assert isinstance(instance, _CsvInput)
        validation = FileValidation(spec, file_name=file_name, size=size, base_dir=base_dir)
        found = validation.open(chunks, expect=FileType.CSV)
        if found is FileType.CSV:
            yield from instance.from_batches(validation, opts, check=True)
        elif found is not None:
            validation.report.error("type", f"transform {instance.name} needs CSV input")
        finish(validation.finish())

    def teed() -> Iterator[bytes]:
        tee = _Tee(chunks, lambda stream: validate_stream(stream, spec, file_name=file_name, size=size,
                                                          base_dir=base_dir))
        try:
            for chunk in instance.run(tee.source(), opts, spec):
                yield chunk
                early = tee.finished_report()
                if early is not None and fail_on_invalid and not early.valid:
                    break
        finally:
            tee.close()
        finish(tee.result())

    run.chunks = fused() if isinstance(instance, _CsvInput) else teed()
    return run


_END = object()


class _Tee:
    """Feeds the chunks a transform reads to a validation running in a helper thread (bounded queue)."""

    def __init__(self, chunks: Iterable[bytes], validate: Callable[[Iterator[bytes]], ValidationReport]) -> None:
        self._chunks = chunks
        self._validate = validate
        self._queue: queue.Queue[object] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._work, name="wharf-validate", daemon=True)
        self._report: ValidationReport | None = None
        self._error: BaseException | None = None
        self._closed = False

    def _feed(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def _work(self) -> None:
        try:
            self._report = self._validate(self._feed())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread in result()
            self._error = exc

    def _put(self, item: object) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def source(self) -> Iterator[bytes]:
        self._thread.start()
        for chunk in self._chunks:
            self._put(chunk)
            yield chunk
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._thread.ident is not None:
                self._put(_END)

    def finished_report(self) -> ValidationReport | None:
        return self._report if not self._thread.is_alive() else None

    def result(self) -> ValidationReport:
        if self._thread.ident is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        if self._report is None:
            raise WharfError("validation did not run")
        return self._report
