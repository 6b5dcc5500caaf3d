"""Validation: size, type, encoding, CSV column rules with exact positions, JSON Schema, XML, report model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.domain.errors import ConfigurationError
from shared.domain.validation import (
    VALUE_LIMIT,
    ColumnCheck,
    ColumnRule,
    DateFormat,
    ValidationReport,
    joined_pattern,
    rule_spec,
)
from shared.services import validate as validate_module
from shared.services.validate import validate_stream


def csv_rule(columns: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    csv_block = {"columns": columns or {}, **extra.pop("csv", {})}
    return {"type": "csv", "csv": csv_block, **extra}


def run(data: bytes, rule: Any, name: str = "f.csv", **kwargs: Any) -> ValidationReport:
    return validate_stream([data], rule, file_name=name, **kwargs)


def only(report: ValidationReport) -> dict[str, Any]:
    assert len(report.errors) == 1, report.errors
    return report.errors[0].model_dump(exclude_none=True)


# ---------------------------------------------------------------------------------------------------------
# CSV column rules: exact row / line / column / field / value


@pytest.mark.parametrize(("column", "good", "bad", "code"), [
    ({"type": "integer"}, "-42", "4.2", "integer"),
    ({"type": "integer"}, "+7", "1_000", "integer"),
    ({"type": "decimal"}, "-0.50", "1.", "decimal"),
    ({"type": "decimal"}, ".5", "1e3", "decimal"),
    ({"type": "date"}, "2024-02-29", "2023-02-29", "date"),
    ({"type": "date", "format": "%d/%m/%Y"}, "31/12/2024", "31/11/2024", "date"),
    ({"type": "date", "format": "%d.%m.%Y %H:%M"}, "01.02.2024 23:59", "01.02.2024 24:00", "date"),
    ({"type": "date", "format": "%d %b %Y"}, "05 Mar 2024", "05 Foo 2024", "date"),
    ({"type": "enum", "values": ["NEW", "OPEN"]}, "OPEN", "open", "enum"),
    ({"type": "regex", "pattern": r"[A-Z]{2}-\d{3}"}, "AB-123", "AB-1234", "pattern"),
    ({"type": "regex", "pattern": r"[^,]+x"}, "abx", "ab", "pattern"),  # a pattern not provably newline-free
    ({"type": "string", "max_length": 3}, "abc", "abcd", "max_length"),
    ({"type": "string", "required": True}, "x", "", "required"),
])
def test_each_column_rule_reports_the_exact_cell(column: dict[str, Any], good: str, bad: str, code: str) -> None:
    data = f"id,value\n1,{good}\n2,{good}\n3,{bad}\n4,{good}\n".encode()
    report = run(data, csv_rule({"value": column}))
    assert not report.valid and report.error_count == 1 and report.rows == 4
    error = only(report)
    assert error["code"] == code
    assert (error["row"], error["line"], error["column"], error["field"]) == (3, 4, 2, "value")
    assert error.get("value", "") == bad
    assert run(f"id,value\n1,{good}\n".encode(), csv_rule({"value": column})).valid


def test_empty_optional_values_pass_every_type() -> None:
    columns: dict[str, Any] = {"i": {"type": "integer"}, "d": {"type": "decimal"}, "t": {"type": "date"},
                               "e": {"type": "enum", "values": ["A"]}, "r": {"type": "regex", "pattern": "x+"}}
    report = run(b"i,d,t,e,r\n,,,,\n1,2.5,2024-01-01,A,xx\n", csv_rule(columns))
    assert report.valid, report.errors


def test_error_in_a_later_batch_has_the_right_row_and_line() -> None:
    rows = [f"{i},{i * 1.5:.2f}" for i in range(1, 5001)]
    rows[3999] = "4000,12,50"  # ragged
    rows[4499] = "4500,x"
    data = ("id,amount\n" + "\n".join(rows) + "\n").encode()
    report = run(data, csv_rule({"id": {"type": "integer"}, "amount": {"type": "decimal"}}))
    assert [(e.code, e.row, e.line) for e in report.errors] == [("ragged", 4000, 4001), ("decimal", 4500, 4501)]
    assert report.rows == 5000


def test_quoted_delimiters_and_newlines_count_physical_lines() -> None:
    data = (b'id,note,qty\r\n'
            b'1,"a, b",1\r\n'
            b'2,"line one\r\nline two\nline three",2\r\n'
            b'3,"say ""hi""",x\r\n'
            b'4,plain,4\r\n')
    report = run(data, csv_rule({"qty": {"type": "integer"}}))
    error = only(report)
    assert (error["row"], error["line"], error["column"], error["value"]) == (3, 6, 3, "x")  # record 2: lines 3-5
    assert report.rows == 4


def test_ragged_rows_are_reported_once_and_blank_lines_skipped() -> None:
    data = b"a,b,c\n1,2,3\n\n4,5\n6,7,8,9\n\n10,11,12\n"
    report = run(data, csv_rule({"c": {"type": "integer", "required": True}}))
    assert [(e.code, e.row, e.line, e.value) for e in report.errors] == [
        ("ragged", 2, 4, "4,5"), ("ragged", 3, 5, "6,7,8,9")]
    assert report.rows == 4
    assert any("2 blank lines" in w for w in report.warnings)


def test_malformed_quoting_is_an_error_with_its_line_and_the_rest_is_still_read() -> None:
    data = b'id,name\n1,ok\n2,"bad"x\n3,"fine"\n4,"never closed\n5,x\n'
    report = run(data, csv_rule({"id": {"type": "integer"}}))
    assert [(e.code, e.row, e.line) for e in report.errors] == [("csv", 2, 3), ("csv", 4, 5)]
    assert "unexpected end of data" in report.errors[1].message


def test_error_cap_keeps_counting() -> None:
    data = ("n\n" + "".join(f"x{i}\n" for i in range(250))).encode()
    report = run(data, {**csv_rule({"n": {"type": "integer"}}), "max_errors": 7})
    assert report.error_count == 250 and len(report.errors) == 7 and report.truncated
    assert [e.row for e in report.errors] == [1, 2, 3, 4, 5, 6, 7]
    assert report.rows == 250


def test_header_rules() -> None:
    report = run(b"id,name,name\n1,a,b\n", csv_rule({"ghost": {"type": "integer"}},
                                                     csv={"required_columns": ["id", "amount"]}))
    assert only(report) == {"code": "missing_column", "message": "required column 'amount' is not in the header",
                            "row": 0, "line": 1, "field": "amount"}
    assert any("'name' appears more than once" in w for w in report.warnings)
    assert any("'ghost' has rules but is not in the header" in w for w in report.warnings)
    assert run(b"id,name\n", csv_rule()).valid  # header only: valid, no rows
    assert only(run(b"", csv_rule()))["code"] == "empty"


def test_headerless_csv_uses_configured_columns_in_order() -> None:
    rule = csv_rule({"id": {"type": "integer"}, "code": {"type": "enum", "values": ["A"]}}, csv={"header": False})
    report = run(b"1,A\n2,B\n", rule)
    assert (only(report)["row"], only(report)["line"], only(report)["field"]) == (2, 2, "code")


def test_semicolon_delimiter_is_sniffed_when_not_configured_and_warned_when_configured_otherwise() -> None:
    data = b"id;amount\n1;2.5\n2;x\n"
    report = run(data, csv_rule({"amount": {"type": "decimal"}}))
    assert report.delimiter == ";" and only(report)["row"] == 2
    report = run(data, csv_rule(csv={"delimiter": ","}))
    assert any("looks ';'-delimited" in w for w in report.warnings)


def test_catalogue_file_rule_is_accepted_as_is() -> None:
    catalog = pytest.importorskip("shared.catalog")
    rule = catalog.FileRule.model_validate({
        "match": "*.csv", "type": "csv", "max_errors": 5,
        "csv": {"delimiter": ";", "columns": {"qty": {"type": "integer", "required": True}}},
        "transform": {"name": "csv_to_jsonl"}})
    spec = rule_spec(rule)
    assert (spec.csv.delimiter, spec.max_errors, spec.transform_name) == (";", 5, "csv_to_jsonl")
    report = run(b"qty;x\n1;a\n;b\n", rule)
    assert only(report)["code"] == "required"
    defaulted = catalog.FileRule.model_validate({"type": "csv", "csv": {"header": True}})
    assert rule_spec(defaulted).csv.delimiter is None  # only defaulted: sniffed from the content


# ---------------------------------------------------------------------------------------------------------
# Size, type, encoding


def never_read() -> Iterator[bytes]:
    raise AssertionError("the content must not be read")
    yield b""  # pragma: no cover


def test_too_big_is_rejected_before_reading() -> None:
    report = validate_stream(never_read(), {"max_bytes": 10}, file_name="x.csv", size=11)
    assert only(report)["code"] == "size" and report.bytes == 11


def test_size_is_counted_when_not_given() -> None:
    report = validate_stream([b"a,b\n", b"1,2\n" * 10], {"max_bytes": 20, "type": "csv"}, file_name="x.csv")
    assert [e.code for e in report.errors] == ["size"]
    small = validate_stream([b"a,b\n1,2\n"], {"min_bytes": 100}, file_name="x.csv")
    assert [e.code for e in small.errors] == ["size"] and small.bytes == 8


def test_declared_type_must_match_content() -> None:
    report = run(b'{"a": 1}', {"type": "csv"})
    assert only(report)["message"] == "expected csv content, found json"
    assert any("suggests csv" in w for w in report.warnings)
    assert run(b"\x00\x01binary", {"type": "binary"}).valid
    assert run(b"id,x\n1,2\n", {"type": "auto"}).file_type == "csv"


def test_cp1252_file_is_validated_as_windows_1252() -> None:
    data = "name;price\nCafé;5,50 €\nMüller;x\n".encode("cp1252")
    report = run(data, csv_rule({"name": {"type": "string", "max_length": 4}}))
    assert report.encoding == "windows-1252"
    assert only(report)["value"] == "Müller"


def test_bytes_that_do_not_decode_are_reported_in_their_cell() -> None:
    data = b"id,name\n1,ok\n2,bad \xff here\n"
    report = run(data, {**csv_rule(), "encoding": "utf-8"})
    error = only(report)
    assert (error["code"], error["row"], error["line"], error["column"], error["field"]) == (
        "encoding", 2, 3, 2, "name")


def test_undecodable_bytes_far_into_the_file_are_found_in_their_row() -> None:
    rows = [f"{i},name {i}" for i in range(1, 3001)]
    data = ("id,name\n" + "\n".join(rows) + "\n").encode().replace(b"name 2500", b"name \xff2500")
    report = run(data, {**csv_rule(), "encoding": "utf-8"})
    assert (only(report)["code"], only(report)["row"], only(report)["line"]) == ("encoding", 2500, 2501)


def test_cp1252_after_a_long_ascii_head_switches_encoding() -> None:
    data = ("id,name\n" + "".join(f"{i},plain\n" for i in range(20000)) + "20000,Café €\n").encode("cp1252")
    assert len(data) > 64 * 1024
    report = validate_stream([data[i:i + 4096] for i in range(0, len(data), 4096)],
                             csv_rule({"name": {"type": "string", "max_length": 5}}), file_name="x.csv")
    assert report.encoding == "windows-1252" and only(report)["value"] == "Café €"
    assert any("decoded as windows-1252" in w for w in report.warnings)


@pytest.mark.parametrize("size", [1, 7, 64])
def test_tiny_chunks_give_the_same_report(size: int) -> None:
    data = ("id,note,day\r\n" + "".join(
        f'{i},"é, line\nbreak",2024-02-{(i % 31) + 1:02d}\r\n' for i in range(60))).encode()
    rule = csv_rule({"id": {"type": "integer"}, "day": {"type": "date"}})
    whole = run(data, rule)
    assert whole.error_count == 2  # 2024-02-30, 2024-02-31
    chunked = validate_stream([data[i:i + size] for i in range(0, len(data), size)], rule, file_name="f.csv")
    assert chunked.model_dump() == whole.model_dump()


# ---------------------------------------------------------------------------------------------------------
# JSON

SCHEMA = {"type": "object", "required": ["id"],
          "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}}}


def test_json_lines_schema_errors_have_line_and_path() -> None:
    data = b'{"id": 1}\n\n{"id": "2"}\n{"id": 3, "tags": ["a", 4]}\n{oops}\n'
    report = run(data, {"type": "json", "json_schema": SCHEMA}, "x.jsonl")
    assert report.file_type == "jsonl" and report.rows == 4
    assert [(e.code, e.row, e.line, e.field) for e in report.errors] == [
        ("schema", 2, 3, "$.id"), ("schema", 3, 4, "$.tags[1]"), ("json", 4, 5, None)]
    assert report.errors[0].value == '"2"'


def test_single_json_document_schema_and_syntax_errors() -> None:
    report = run(b'[{"id": 1}, {"id": "x"}]', {"type": "json", "json_schema": {"type": "array", "items": SCHEMA}},
                 "x.json")
    assert (only(report)["field"], report.rows) == ("$[1].id", 2)
    broken = run(b'{\n  "id": 1,\n  "x": tru\n}', {"type": "json"}, "x.json")
    assert (only(broken)["line"], only(broken)["column"]) == (3, 8)


def test_big_json_array_streams_items_through_the_items_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate_module, "FULL_LOAD_LIMIT", 16)
    schema = {"$defs": {"id": {"type": "integer"}}, "type": "array", "minItems": 5,
              "items": {"type": "object", "properties": {"id": {"$ref": "#/$defs/id"}}}}
    data = json.dumps([{"id": 1}, {"id": "two"}, {"id": 3}]).encode()
    report = validate_stream([data[i:i + 10] for i in range(0, len(data), 10)], {"json_schema": schema},
                             file_name="big.json")
    assert [(e.row, e.field, e.message) for e in report.errors] == [
        (None, "$", "array has 3 items; minItems is 5"), (2, "$[1].id", "'two' is not of type 'integer'")]
    assert report.rows == 3


def test_schema_from_a_path_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "order.json").write_text(json.dumps(SCHEMA))
    report = run(b'{"tags": []}', {"json_schema": "schemas/order.json"}, "x.json", base_dir=tmp_path)
    assert only(report)["message"] == "'id' is a required property"
    with pytest.raises(ConfigurationError, match="cannot read"):
        run(b"{}", {"json_schema": "missing.json"}, "x.json", base_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="not a valid JSON Schema"):
        run(b"{}", {"json_schema": {"type": 12}}, "x.json")


# ---------------------------------------------------------------------------------------------------------
# XML

XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="orders"><xs:complexType><xs:sequence>
    <xs:element name="order" maxOccurs="unbounded"><xs:complexType><xs:sequence>
      <xs:element name="id" type="xs:integer"/></xs:sequence></xs:complexType></xs:element>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>"""


def test_xml_well_formed_and_malformed_with_line_and_column() -> None:
    good = run(b'<?xml version="1.0"?>\n<orders>\n  <order id="1"/>\n  <order id="2"/>\n</orders>\n',
               {"type": "xml"}, "x.xml")
    assert good.valid and good.rows == 2
    bad = run(b"<orders>\n  <order>\n  </orderz>\n</orders>", {"type": "xml"}, "x.xml")
    assert (only(bad)["code"], only(bad)["line"], only(bad)["column"]) == ("xml", 3, 5)
    assert "mismatched tag" in only(bad)["message"]


def test_xml_entity_declarations_are_refused() -> None:
    bomb = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]>\n<r>&a;</r>'
    assert "entity declarations are not allowed" in only(run(bomb, {"type": "xml"}, "x.xml"))["message"]


def test_xml_declared_latin1_is_decoded_and_checked(tmp_path: Path) -> None:
    data = '<?xml version="1.0" encoding="ISO-8859-1"?><orders><order><id>1</id></order></orders>'.encode("latin-1")
    assert run(data, {"type": "xml"}, "x.xml").valid


def test_xsd_validation(tmp_path: Path) -> None:
    pytest.importorskip("lxml")
    (tmp_path / "orders.xsd").write_text(XSD)
    rule = {"type": "xml", "xsd": "orders.xsd"}
    ok = run(b"<orders><order><id>1</id></order><order><id>2</id></order></orders>", rule, "x.xml",
             base_dir=tmp_path)
    assert ok.valid and ok.rows == 2
    bad = run(b"<orders><order><id>1</id></order><order><id>x</id></order></orders>", rule, "x.xml",
              base_dir=tmp_path)
    assert only(bad)["code"] == "xsd" and "'x' is not a valid value" in only(bad)["message"]


def test_xsd_unavailable_is_a_clear_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: Any) -> Any:
        raise ImportError("No module named 'lxml'")

    monkeypatch.setattr(validate_module, "load_xsd", missing)
    report = run(b"<a/>", {"type": "xml", "xsd": "a.xsd"}, "x.xml")
    assert only(report) == {"code": "xsd_unavailable",
                            "message": "XSD validation unavailable: lxml is not installed"}


# ---------------------------------------------------------------------------------------------------------
# Report model and compiled checks


def test_summary_is_short_and_values_are_truncated() -> None:
    long_value = "é" * 500
    data = ("v\n" + "".join(f"{long_value}{i}\n" for i in range(50))).encode()
    report = run(data, csv_rule({"v": {"type": "integer"}}))
    assert all(len(e.value or "") <= VALUE_LIMIT for e in report.errors)
    summary = report.summary()
    assert len(summary.encode()) <= 1024 and summary.startswith("INVALID csv utf-8")
    assert ValidationReport.model_validate_json(report.to_json()) == report


def test_summary_of_a_valid_file() -> None:
    assert run(b"a\n1\n", csv_rule()).summary() == "VALID csv utf-8 4 bytes, 1 rows, 0 errors"


def test_batch_fast_path_agrees_with_value_checks() -> None:
    check = ColumnCheck(ColumnRule("v", type="decimal"), 0)
    assert check.batch_ok(["1.5", "-2", ".5", ""])
    assert not check.batch_ok(["1.5", "1.5.5"])
    assert not check.batch_ok(["1\n2", "3"])  # a value with a line break never slips through a join
    code = ColumnCheck(ColumnRule("c", type="regex", pattern=r"\d+"), 0)
    assert not code.batch_ok(["1\n2", "3"]) and code.batch_ok(["12", "3"])


@pytest.mark.parametrize(("pattern", "joinable"), [
    (r"[A-Z]{2}-\d{6}", True), (r"\w+@\w+\.com", True), (r"[^x]+", False), (r"\s+", False), (r"(?s).+", False),
    (r"a(?=b)", False), (r"^AB\d+$", False), (r"\bx\b", True),
])
def test_only_patterns_that_cannot_match_a_newline_are_joined(pattern: str, joinable: bool) -> None:
    import re

    assert (joined_pattern(re.compile(pattern), False) is not None) is joinable


def test_date_format_matches_strptime_for_common_formats() -> None:
    from datetime import datetime

    for fmt, values in [("%Y-%m-%d", ["2024-2-9", "2024-02-30", "99-01-01", "2024-12-31"]),
                        ("%d/%m/%y", ["31/12/68", "01/01/69", "29/02/23", "1/1/24"]),
                        ("%Y%m%d%H%M%S", ["20240131235959", "20240131246000"])]:
        for value in values:
            try:
                expected: datetime | None = datetime.strptime(value, fmt)
            except ValueError:
                expected = None
            assert DateFormat(fmt).parse(value) == expected, (fmt, value)
