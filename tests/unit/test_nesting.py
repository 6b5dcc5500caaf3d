"""Nesting depth: deep JSON and XML are validation failures with a position, never RecursionError or a blow-up."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.domain.detect import FileType, detect
from shared.domain.validation import MAX_NESTING_DEPTH, JsonNesting, NestingTooDeepError, ValidationReport
from shared.services import validate as validate_module
from shared.services.transforms import ValidationFailedError, validate_and_transform
from shared.services.validate import validate_stream

LIMIT = MAX_NESTING_DEPTH
RECURSIVE = {"type": "array", "items": {"$ref": "#"}}


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def nesting_error(report: ValidationReport) -> dict[str, Any]:
    assert not report.valid
    assert [e.code for e in report.errors] == ["nesting"], report.errors
    return report.errors[0].model_dump(exclude_none=True)


def test_the_limit_is_documented_and_sane() -> None:
    assert 64 <= LIMIT <= 256


@pytest.mark.parametrize("rule", [{}, {"type": "json"}, {"json_schema": {"type": "array"}},
                                  {"json_schema": RECURSIVE}])
def test_a_400_kb_nested_array_is_invalid_with_line_and_column(rule: dict[str, Any]) -> None:
    report = validate_stream(pieces(deep(200_000), 65536), rule, file_name="deep.json")
    error = nesting_error(report)
    assert error["message"] == f"nesting deeper than {LIMIT} levels"
    assert (error["line"], error["column"]) == (1, LIMIT + 1)
    assert f"line 1 col {LIMIT + 1}: nesting deeper than {LIMIT} levels" in report.summary()


def test_nested_objects_report_the_bracket_that_goes_too_deep() -> None:
    data = b'{\n  "a": ' + b'{"b": ' * LIMIT + b"1" + b"}" * LIMIT + b"\n}\n"
    error = nesting_error(validate_stream([data], {}, file_name="deep.json"))
    assert (error["line"], error["column"]) == (2, 8 + 6 * (LIMIT - 1))


def test_exactly_the_limit_is_valid_even_with_a_recursive_schema() -> None:
    report = validate_stream([deep(LIMIT)], {"json_schema": RECURSIVE}, file_name="ok.json")
    assert report.valid, report.errors
    assert not validate_stream([deep(LIMIT + 1)], {"json_schema": RECURSIVE}, file_name="x.json").valid


def test_brackets_inside_strings_and_escapes_do_not_count() -> None:
    text = json.dumps({"s": "[" * 1000 + '\\"{' * 500, "t": ['"\\' * 300 + "]" * 300, "{["]})
    for size in (1, 2, 3, 7, 1 << 20):
        report = validate_stream(pieces(text.encode(), size), {}, file_name="s.json")
        assert report.valid, (size, report.errors)


def test_json_lines_each_line_starts_at_depth_zero_and_a_deep_line_is_located() -> None:
    shallow = b"[" * (LIMIT - 1) + b"]" * (LIMIT - 1)
    data = b"\n".join([shallow] * 3 + [b'{"ok": 1}', b'{"x": ' + deep(50_000) + b"}", b"[1]"]) + b"\n"
    report = validate_stream(pieces(data, 4096), {}, file_name="deep.jsonl")
    assert report.file_type == "jsonl"
    error = nesting_error(report)
    assert (error["row"], error["line"], error["column"]) == (5, 5, 7 + LIMIT - 1)


def test_a_deep_first_line_does_not_break_type_detection() -> None:
    sample = deep(5000) + b"\n[1]\n"
    assert detect(sample, "x.jsonl").file_type in (FileType.JSON, FileType.JSONL)
    report = validate_stream([sample], {}, file_name="x.jsonl")
    assert nesting_error(report)["line"] == 1


def test_a_big_streamed_document_stops_at_the_nesting_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "FULL_LOAD_LIMIT", 1024)
    items = b"[" + b'{"id": 1},\n' * 5000
    data = items + deep(100_000) + b"]"
    node = {"$defs": {"node": {"type": ["object", "array"], "items": {"$ref": "#/$defs/node"}}},
            "type": "array", "items": {"$ref": "#/$defs/node"}}
    for rule in ({}, {"json_schema": node}):
        start = time.perf_counter()
        report = validate_stream(pieces(data, 65536), rule, file_name="big.json")
        assert time.perf_counter() - start < 5  # ijson alone is quadratic in the depth: minutes and gigabytes
        error = nesting_error(report)
        assert (error["line"], error["column"]) == (5001, LIMIT)  # the array itself is the first level
    top = validate_stream(pieces(b'{"a": ' + b" " * 4096 + deep(100_000) + b"}", 1000), {}, file_name="big.json")
    assert (nesting_error(top)["line"], nesting_error(top)["column"]) == (1, 6 + 4096 + LIMIT)


def test_a_schema_that_recurses_further_than_python_can_is_reported_not_raised() -> None:
    # Each level costs the schema validator several Python frames; a schema that chains many refs per level
    # can run out of stack within the nesting limit. That is a problem of the file, not a crash.
    defs: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(40)}
    defs["d40"] = {"type": "array", "items": {"$ref": "#/$defs/d0"}}
    schema = {"$defs": defs, "$ref": "#/$defs/d0"}
    report = validate_stream([deep(LIMIT)], {"json_schema": schema}, file_name="x.json")
    assert not report.valid
    assert [e.code for e in report.errors] == ["nesting"]
    assert "too deeply nested for its schema" in report.errors[0].message


# ---------------------------------------------------------------------------------------------------------
# The scanner against a slow, obviously right model


def model_first_too_deep(data: bytes, limit: int, *, lines: bool) -> int | None:
    depth, in_string, escaped = 0, False, False
    for i, byte in enumerate(data):
        if escaped:
            escaped = False
        elif byte == 0x5C:
            escaped = True
        elif lines and byte == 0x0A:
            depth, in_string = 0, False
        elif in_string:
            in_string = byte != 0x22
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            if depth > limit:
                return i
        elif byte in b"]}":
            depth -= 1
    return None


def scanned(data: bytes, limit: int, size: int, *, lines: bool) -> int | None:
    guard = JsonNesting(limit, lines=lines)
    try:
        for chunk in guard.check(pieces(data, size)):
            assert chunk
    except NestingTooDeepError as exc:
        return exc.offset
    return None


def test_the_scanner_agrees_with_a_byte_by_byte_model_on_random_input() -> None:
    rng = random.Random(1313)
    alphabet = [b"[", b"]", b"{", b"}", b'"', b"\\", b"\n", b"a", b",", b":", b"\xc3\xa9"]
    weights = [8, 6, 8, 6, 4, 2, 1, 3, 2, 1, 1]
    for _ in range(600):
        data = b"".join(rng.choices(alphabet, weights, k=rng.randint(1, 300)))
        limit = rng.randint(1, 12)
        for lines in (False, True):
            expected = model_first_too_deep(data, limit, lines=lines)
            for size in (1, 2, 5, 64, 1000):
                assert scanned(data, limit, size, lines=lines) == expected, (data, limit, size, lines)


def test_the_scanner_reports_lines_and_columns_in_characters() -> None:
    data = 'é\n  ["é", [[' .encode()
    guard = JsonNesting(2)
    with pytest.raises(NestingTooDeepError) as caught:
        for _ in guard.check(pieces(data, 1)):
            pass
    assert (caught.value.line, caught.value.column, caught.value.limit) == (2, 10, 2)
    assert str(caught.value) == "nesting deeper than 2 levels at line 2, column 10"


# ---------------------------------------------------------------------------------------------------------
# XML


def deep_xml(n: int) -> bytes:
    return b"<?xml version='1.0'?>\n" + b"<a>" * n + b"</a>" * n


def test_deep_xml_is_invalid_with_line_and_column() -> None:
    assert validate_stream([deep_xml(LIMIT)], {"type": "xml"}, file_name="x.xml").valid
    error = nesting_error(validate_stream(pieces(deep_xml(200_000), 65536), {"type": "xml"}, file_name="x.xml"))
    assert (error["message"], error["line"], error["column"]) == (f"nesting deeper than {LIMIT} levels", 2,
                                                                   3 * LIMIT + 1)


def test_deep_xml_under_an_xsd_is_a_clean_nesting_error(tmp_path: Path) -> None:
    pytest.importorskip("lxml")
    (tmp_path / "a.xsd").write_text('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
                                    '<xs:element name="a" type="xs:anyType"/></xs:schema>')
    rule = {"type": "xml", "xsd": "a.xsd"}
    assert validate_stream([deep_xml(LIMIT)], rule, file_name="x.xml", base_dir=tmp_path).valid
    for n in (LIMIT + 1, 300, 200_000):  # libxml2 stops by itself at 256 and then says "no element found"
        report = validate_stream(pieces(deep_xml(n), 65536), rule, file_name="x.xml", base_dir=tmp_path)
        error = nesting_error(report)
        assert error["line"] == 2, (n, error)


# ---------------------------------------------------------------------------------------------------------
# Through validate_and_transform (what the validate activity runs): a report, no exception to retry


@pytest.mark.parametrize(("transform", "name"), [("passthrough", "deep.json"), ("json_to_csv", "deep.json"),
                                                 ("json_to_csv", "deep.jsonl")])
def test_validate_and_transform_fails_validation_instead_of_raising(transform: str, name: str) -> None:
    data = b'[{"a": ' + deep(200_000) + b"}]\n"
    run = validate_and_transform(iter(pieces(data, 65536)), {"transform": {"name": transform}},
                                 file_name=name, size=len(data))

    def drain() -> Iterator[bytes]:
        yield from run.chunks

    with pytest.raises(ValidationFailedError) as caught:
        for _ in drain():
            pass
    assert [e.code for e in caught.value.report.errors] == ["nesting"]
