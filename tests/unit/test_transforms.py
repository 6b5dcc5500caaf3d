"""Transforms: registry, exact outputs, tiny-chunk streaming, validate_and_transform, flat memory."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest

from shared.domain.errors import ConfigurationError
from shared.services.transforms import (
    TRANSFORMS,
    Transform,
    TransformError,
    TransformRegistry,
    UnknownTransformError,
    ValidationFailedError,
    get_transform,
    validate_and_transform,
)

ORDERS_RULE: dict[str, Any] = {
    "type": "csv",
    "csv": {"columns": {
        "id": {"type": "integer", "required": True},
        "amount": {"type": "decimal"},
        "booked": {"type": "date", "format": "%d/%m/%Y"},
        "status": {"type": "enum", "values": ["NEW", "OPEN"]},
    }},
}
ORDERS = ('id,amount,booked,status,note\r\n'
          '1,12.50,31/01/2024,NEW,"a ""quoted"", text"\r\n'
          '2,,01/02/2024,OPEN,"two\r\nlines"\r\n'
          '007,-0.5,,NEW,tab\there \\ é\r\n').encode()


def transform(name: str, data: bytes | Iterable[bytes], options: Mapping[str, Any] | None = None,
              rule: Any = None) -> tuple[bytes, Transform]:
    instance = get_transform(name)
    chunks = [data] if isinstance(data, bytes) else data
    return b"".join(instance.run(chunks, options or {}, rule if rule is not None else {})), instance


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_known_names_for_an_unknown_one() -> None:
    assert {"csv_normalise", "csv_to_jsonl", "json_to_csv", "passthrough"} <= set(TRANSFORMS.names())
    with pytest.raises(UnknownTransformError) as caught:
        TRANSFORMS.get("xml_to_json")
    assert str(caught.value) == f"unknown transform 'xml_to_json'; known transforms: {', '.join(TRANSFORMS.names())}"
    assert "csv_normalise, csv_to_jsonl, json_to_csv, passthrough" in str(caught.value)
    assert isinstance(caught.value, ConfigurationError)


def test_a_new_transform_is_one_class_and_a_decorator() -> None:
    registry = TransformRegistry()

    @registry.register("upper")
    class Upper(Transform):
        output_extension = ".txt"
        content_type = "text/plain"

        def run(self, chunks: Iterable[bytes], options: Mapping[str, Any] | None, rule: Any) -> Iterator[bytes]:
            self.rows = 0
            for chunk in chunks:
                self.rows += chunk.count(b"\n")
                yield chunk.upper()

    instance = registry.get("upper")()
    assert instance.name == "upper" and Upper.output_name("a/b.csv") == "a/b.txt"
    assert b"".join(instance.run([b"a\n", b"b\n"], {}, None)) == b"A\nB\n" and instance.rows == 2
    with pytest.raises(ValueError, match="already registered"):
        registry.register("upper")(type("Other", (Upper,), {}))


def test_options_are_checked_with_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"transform csv_normalise: invalid options: delimitr: Extra"):
        transform("csv_normalise", b"a\n1\n", {"delimitr": ";"})
    with pytest.raises(ConfigurationError, match="decimals"):
        transform("csv_to_jsonl", b"a\n1\n", {"decimals": "float"})


# ---------------------------------------------------------------------------------------------------------
# csv_to_jsonl


def test_csv_to_jsonl_types_values_by_column_rules() -> None:
    out, instance = transform("csv_to_jsonl", ORDERS, rule=ORDERS_RULE)
    lines = out.decode().splitlines()
    assert lines[0] == ('{"id":1,"amount":"12.50","booked":"2024-01-31","status":"NEW",'
                        '"note":"a \\"quoted\\", text"}')
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "amount": "12.50", "booked": "2024-01-31", "status": "NEW", "note": 'a "quoted", text'},
        {"id": 2, "amount": None, "booked": "2024-02-01", "status": "OPEN", "note": "two\r\nlines"},
        {"id": 7, "amount": "-0.5", "booked": None, "status": "NEW", "note": "tab\there \\ é"},
    ]
    assert instance.rows == 3 and out.endswith(b"}\n")


def test_csv_to_jsonl_decimals_as_numbers_keep_their_digits() -> None:
    data = b"v\n12.50\n007.5\n.5\n+3\n-0.25\n"
    out, _ = transform("csv_to_jsonl", data, {"decimals": "number"}, {"csv": {"columns": {"v": {"type": "decimal"}}}})
    assert out == b'{"v":12.50}\n{"v":7.5}\n{"v":0.5}\n{"v":3}\n{"v":-0.25}\n'


def test_csv_to_jsonl_integers_are_canonical_json_numbers() -> None:
    rule = {"csv": {"columns": {"n": {"type": "integer"}}}}
    assert transform("csv_to_jsonl", b"n\n0\n-0\n10\n", rule=rule)[0] == b'{"n":0}\n{"n":-0}\n{"n":10}\n'
    assert transform("csv_to_jsonl", b"n\n010\n+5\n", rule=rule)[0] == b'{"n":10}\n{"n":5}\n'


def test_csv_to_jsonl_without_header_uses_configured_names() -> None:
    rule = {"csv": {"header": False, "columns": {"id": {"type": "integer"}, "name": {}}}}
    assert transform("csv_to_jsonl", b"1,Ann\n2,Bo\n", rule=rule)[0] == (
        b'{"id":1,"name":"Ann"}\n{"id":2,"name":"Bo"}\n')
    out, _ = transform("csv_to_jsonl", b"1,Ann\n", {"columns": ["a"]}, {"csv": {"header": False}})
    assert out == b'{"a":"1","col2":"Ann"}\n'


def test_csv_to_jsonl_from_cp1252_writes_utf8() -> None:
    data = "name;price\nCafé;5 €\n".encode("cp1252")
    assert transform("csv_to_jsonl", data)[0] == '{"name":"Café","price":"5 €"}\n'.encode()


def test_csv_to_jsonl_needs_csv() -> None:
    with pytest.raises(TransformError, match="needs CSV input; found json"):
        transform("csv_to_jsonl", b'{"a": 1}', rule={"type": "auto"})


@pytest.mark.parametrize("size", [1, 7])
@pytest.mark.parametrize(("name", "options"), [("csv_to_jsonl", {}), ("csv_normalise", {"delimiter": ";"}),
                                               ("passthrough", {})])
def test_tiny_chunks_give_the_same_output(name: str, options: dict[str, Any], size: int) -> None:
    data = ORDERS * 40
    data = data[:len(ORDERS)] + b"".join(line for line in data[len(ORDERS):].splitlines(True)
                                          if not line.startswith(b"id,"))
    whole, first = transform(name, data, options, ORDERS_RULE)
    chunked, second = transform(name, pieces(data, size), options, ORDERS_RULE)
    assert chunked == whole and first.rows == second.rows
    assert whole


# ---------------------------------------------------------------------------------------------------------
# csv_normalise


def test_csv_normalise_rewrites_dialect_encoding_and_columns() -> None:
    data = b"\xef\xbb\xbfid;name;city\r\n1;\"Doe; Jane\";Paris\r\n2;O'Neil;\"Lyon\nCentre\"\r\n"
    out, instance = transform("csv_normalise", data, {"select": ["city", "id"], "rename": {"city": "town"},
                                                      "line_terminator": "\n"}, {"csv": {"delimiter": ";"}})
    assert out == b'town,id\nParis,1\n"Lyon\nCentre",2\n' and instance.rows == 2
    out, _ = transform("csv_normalise", data, {"order": ["name"], "delimiter": "|"}, {"csv": {"delimiter": ";"}})
    assert out == b'name|id|city\r\nDoe; Jane|1|Paris\r\nO\'Neil|2|"Lyon\nCentre"\r\n'
    with pytest.raises(TransformError, match="columns not in the header: zip"):
        transform("csv_normalise", data, {"select": ["zip"]}, {"csv": {"delimiter": ";"}})


def test_csv_normalise_latin1_to_utf8() -> None:
    data = "a,b\nü,€\n".encode("cp1252")
    assert transform("csv_normalise", data)[0] == "a,b\r\nü,€\r\n".encode()


# ---------------------------------------------------------------------------------------------------------
# json_to_csv and passthrough


@pytest.mark.parametrize("data", [
    b'[{"id": 1, "name": "A, B", "ok": true}, {"id": 2.50, "name": null, "ok": false, "x": [1, {"y": 2}]}]',
    b'{"id": 1, "name": "A, B", "ok": true}\n{"id": 2.50, "name": null, "ok": false, "x": [1, {"y": 2}]}\n',
])
def test_json_to_csv_from_array_or_lines(data: bytes) -> None:
    out, instance = transform("json_to_csv", data)
    assert out == b'id,name,ok\r\n1,"A, B",true\r\n2.50,,false\r\n'
    assert instance.rows == 2 and instance.warnings == ["1 values under keys not in the header were dropped"]
    out, _ = transform("json_to_csv", pieces(data, 3), {"columns": ["x", "id"], "line_terminator": "\n"})
    assert out == b'x,id\n,1\n"[1,{""y"":2}]",2.50\n'


def test_json_to_csv_single_object_and_errors() -> None:
    assert transform("json_to_csv", b'{"a": "x"}')[0] == b"a\r\nx\r\n"
    with pytest.raises(TransformError, match="record 1 is list, not an object"):
        transform("json_to_csv", b"[[1, 2]]")
    with pytest.raises(TransformError, match="needs JSON input"):
        transform("json_to_csv", b"a,b\n1,2\n")


def test_passthrough_is_byte_exact() -> None:
    data = bytes(range(256)) * 3
    out, instance = transform("passthrough", pieces(data, 100))
    assert out == data and instance.rows is None and instance.output_name("x.csv") == "x.csv"


# ---------------------------------------------------------------------------------------------------------
# validate_and_transform


def test_validate_and_transform_valid_file() -> None:
    run = validate_and_transform([ORDERS], {**ORDERS_RULE, "transform": {"name": "csv_to_jsonl"}},
                                 file_name="orders.csv")
    with pytest.raises(Exception, match="once `chunks` has been consumed"):
        _ = run.report
    out = b"".join(run.chunks)
    assert out == transform("csv_to_jsonl", ORDERS, rule=ORDERS_RULE)[0]
    assert run.report.valid and run.report.rows == 3 and run.rows == 3
    assert run.content_type == "application/x-ndjson"


def test_invalid_file_raises_before_the_last_chunk_so_nothing_is_committed() -> None:
    data = ORDERS + b"x,1.0,01/01/2024,NEW,n\r\n"
    committed: list[bytes] = []

    def upload(chunks: Iterable[bytes]) -> None:
        parts = list(chunks)  # an exception here means no commit
        committed.extend(parts)

    run = validate_and_transform([data], ORDERS_RULE, file_name="o.csv", transform="csv_to_jsonl")
    with pytest.raises(ValidationFailedError) as caught:
        upload(run.chunks)
    assert committed == []
    assert caught.value.report.errors[0].row == 4 and caught.value.report.errors[0].code == "integer"
    assert str(caught.value).startswith("INVALID csv")


def test_invalid_values_are_kept_as_text_when_not_failing() -> None:
    data = b"id,amount\n1,2.5\nx,abc\n"
    rule = {"csv": {"columns": {"id": {"type": "integer"}, "amount": {"type": "decimal"}}}}
    run = validate_and_transform([data], rule, file_name="o.csv", transform="csv_to_jsonl", fail_on_invalid=False)
    assert b"".join(run.chunks) == b'{"id":1,"amount":"2.5"}\n{"id":"x","amount":"abc"}\n'
    assert run.report.error_count == 2 and not run.report.valid


def test_validate_and_transform_beside_a_non_csv_transform() -> None:
    schema = {"type": "array", "items": {"type": "object", "required": ["id"]}}
    data = b'[{"id": 1}, {"id": 2}]'
    run = validate_and_transform(pieces(data, 4), {"json_schema": schema}, file_name="a.json",
                                 transform="json_to_csv")
    assert b"".join(run.chunks) == b"id\r\n1\r\n2\r\n"
    assert run.report.valid and run.report.rows == 2
    bad = validate_and_transform([b'[{"id": 1}, {"x": 2}]'], {"json_schema": schema}, file_name="a.json",
                                 transform="passthrough")
    with pytest.raises(ValidationFailedError, match="'id' is a required property"):
        b"".join(bad.chunks)


def test_size_limit_stops_validate_and_transform_without_output() -> None:
    run = validate_and_transform([b"a\n1\n"], {"max_bytes": 2, "transform": {"name": "csv_to_jsonl"}},
                                 file_name="a.csv", size=4)
    with pytest.raises(ValidationFailedError, match="the maximum is 2"):
        list(run.chunks)


# ---------------------------------------------------------------------------------------------------------
# Memory stays flat


def lazy_csv(total_bytes: int) -> Iterator[bytes]:
    """A CSV generated on the fly in ~64 KiB chunks (never held whole). Rows are wide (~500 bytes) so that
    tracemalloc, which slows every allocation, still gets through 50 MB in a few seconds."""
    yield b"id,amount,booked,status,note\r\n"
    produced, row = 0, 0
    filler = "lorem ipsum, dolor sit amet " * 16
    while produced < total_bytes:
        lines = []
        for _ in range(130):
            row += 1
            lines.append(f'{row},{row % 9973}.{row % 100:02d},2024-{row % 12 + 1:02d}-{row % 28 + 1:02d},'
                         f'{"NEW" if row % 3 else "OPEN"},"{row} {filler}"\r\n')
        chunk = "".join(lines).encode()
        produced += len(chunk)
        yield chunk


def test_fifty_megabytes_stream_with_bounded_memory() -> None:
    rule = {"type": "csv", "csv": {"columns": {
        "id": {"type": "integer"}, "amount": {"type": "decimal"}, "booked": {"type": "date"},
        "status": {"type": "enum", "values": ["NEW", "OPEN"]}}}}
    tracemalloc.start()
    try:
        run = validate_and_transform(lazy_csv(50 * 1024 * 1024), rule, file_name="big.csv",
                                     transform="csv_to_jsonl")
        written = sum(len(chunk) for chunk in run.chunks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.report.valid and run.report.rows > 100_000
    assert written > 50 * 1024 * 1024
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"  # measured ~2 MB at 5 MB and at 50 MB
