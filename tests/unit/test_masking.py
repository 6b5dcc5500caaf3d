"""Data masking: mask styles, which report fields are sensitive, scrubbed reports (CSV columns, JSON paths,
jsonschema messages that quote the value), and the `mask` option of the CSV transforms."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.catalog import CatalogError, parse_catalog
from shared.domain.masking import REDACTED, Sensitivity, mask_value
from shared.services.transforms import TransformError, validate_and_transform
from shared.services.validate import validate_stream

IBAN = "DE44500105175407324931"


def test_mask_styles() -> None:
    assert mask_value(IBAN, "last4") == "****4931"
    assert mask_value("12345678", "last4") == "****"  # short: not even its end
    hashed = mask_value(IBAN, "hash")
    assert hashed.startswith("sha256:") and len(hashed) == 19 and hashed == mask_value(IBAN, "hash")
    assert hashed != mask_value(IBAN + "0", "hash") and IBAN not in hashed
    assert mask_value(IBAN, "redact") == REDACTED and mask_value("", "last4") == ""


def test_sensitivity_covers_columns_paths_inside_them_and_values_that_hold_them() -> None:
    s = Sensitivity(frozenset({"iban"}), ("$[*].payer.iban", "$.card"))
    assert s.covers("iban") == "value" and s.covers("amount") == ""
    assert s.covers("$[3].payer.iban") == "value" and s.covers("$.card.number") == "value"
    assert s.covers("$[3].payer") == "contains" and s.covers("$") == "contains"
    assert s.covers("$[3].payee.iban") == "" and s.covers(None) == ""
    assert not Sensitivity() and Sensitivity().covers("iban") == ""


def _rule(**extra: Any) -> dict[str, Any]:
    return {"type": "csv", "csv": {"columns": {"id": {"type": "integer"},
                                               "iban": {"type": "regex", "pattern": "[A-Z]{2}X+",
                                                        "sensitive": True}}}, **extra}


def test_a_csv_report_shows_the_mask_never_the_value() -> None:
    data = f"id,iban\n1,DEXXX\n2,{IBAN}\nx,{IBAN}\n".encode()
    report = validate_stream([data], _rule(), file_name="p.csv")
    text = report.to_json() + report.summary()
    assert IBAN not in text and "****4931" in text
    by_field = {e.field: e for e in report.errors}
    assert by_field["iban"].value == "****4931" and by_field["id"].value == "x"  # others as before


def test_a_json_report_masks_the_path_and_jsonschema_messages_that_quote_it() -> None:
    rule = {"type": "json", "sensitive_paths": ["$[*].iban"], "mask_style": "redact",
            "json_schema": {"type": "array", "items": {"type": "object", "required": ["id"],
                                                        "properties": {"iban": {"type": "integer"}}}}}
    data = json.dumps([{"id": 1, "iban": IBAN}, {"iban": "FR76" + "1" * 20}]).encode()
    report = validate_stream([data], rule, file_name="p.json")
    text = report.to_json() + report.summary()
    assert IBAN not in text and "FR76" not in text
    messages = {e.field: (e.message, e.value) for e in report.errors}
    assert messages["$[0].iban"] == (f"{REDACTED} is not of type 'integer'", REDACTED)
    # "'id' is a required property" is about $[1], whose value holds a sensitive field: neither is kept
    assert messages["$[1]"] == ("details hidden: the value holds a sensitive field", REDACTED)


def test_the_catalogue_accepts_sensitive_columns_and_checks_paths() -> None:
    partner: dict[str, Any] = {"id": "pp", "name": "P", "processing": {"rules": [
        {"match": "*.json", "sensitive_paths": ["$[*].iban", "$.a.b[2]"], "mask_style": "hash"}]}}
    parse_catalog({"partners": [partner]}, env={})
    partner["processing"]["rules"][0]["sensitive_paths"] = ["iban; DROP"]
    with pytest.raises(CatalogError, match="JSON path"):
        parse_catalog({"partners": [partner]}, env={})


@pytest.mark.parametrize(("transform", "style", "expected"), [
    ("csv_to_jsonl", "last4", b'{"id":1,"iban":"****4931","amount":"2.50"}\n'),
    ("csv_normalise", "redact", b"id,iban,amount\r\n1,[redacted],2.50\r\n"),
])
def test_the_mask_option_writes_masked_values_to_the_output(transform: str, style: str, expected: bytes) -> None:
    rule = {"type": "csv", "csv": {"columns": {"id": {"type": "integer"}, "iban": {"type": "regex",
                                                                                   "pattern": "[A-Z0-9]+"},
                                               "amount": {"type": "decimal"}}},
            "transform": {"name": transform, "options": {"mask": {"columns": ["iban"], "style": style}}}}
    data = f"id,iban,amount\n1,{IBAN},2.50\n".encode()
    run = validate_and_transform(iter([data]), rule, file_name="p.csv", size=len(data))
    assert b"".join(run.chunks) == expected
    assert run.report.valid  # validation saw the real value (it matches the pattern), the output the mask


def test_the_mask_option_refuses_a_column_not_in_the_header() -> None:
    rule = {"type": "csv", "transform": {"name": "csv_to_jsonl", "options": {"mask": {"columns": ["pan"]}}}}
    data = b"id,iban\n1,x\n"
    run = validate_and_transform(iter([data]), rule, file_name="p.csv", size=len(data))
    with pytest.raises(TransformError, match="pan"):
        b"".join(run.chunks)
