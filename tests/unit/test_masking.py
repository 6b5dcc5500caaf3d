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


# --- XML: XSD (libxml2) messages quote the offending value ---------------------------------------------------

XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:pay" xmlns="urn:pay"
           xmlns:p="urn:pay" elementFormDefault="qualified">
  <xs:element name="Doc"><xs:complexType><xs:sequence>
    <xs:element name="Pmt" maxOccurs="unbounded"><xs:complexType><xs:sequence>
      <xs:element name="IBAN"><xs:simpleType><xs:restriction base="xs:string">
        <xs:pattern value="[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}"/></xs:restriction></xs:simpleType></xs:element>
      <xs:element name="Acct" type="xs:int" minOccurs="0"/>
      <xs:element name="Nm" minOccurs="0"><xs:simpleType><xs:restriction base="xs:string">
        <xs:maxLength value="5"/></xs:restriction></xs:simpleType></xs:element>
      <xs:element name="Amt"><xs:complexType><xs:simpleContent><xs:extension base="xs:decimal">
        <xs:attribute name="Ref" type="xs:int"/></xs:extension></xs:simpleContent></xs:complexType></xs:element>
      <xs:element name="Kind" minOccurs="0"><xs:simpleType><xs:restriction base="xs:string">
        <xs:enumeration value="A"/><xs:enumeration value="B"/></xs:restriction></xs:simpleType></xs:element>
    </xs:sequence></xs:complexType></xs:element>
  </xs:sequence></xs:complexType>
  <xs:unique name="oneIban"><xs:selector xpath="p:Pmt"/><xs:field xpath="p:IBAN"/></xs:unique>
  </xs:element>
</xs:schema>"""

SECRET_NAME = "Jane Q. Account-Holder"


def _xml_report(tmp_path: Any, body: str, elements: list[str], style: str = "last4") -> Any:
    xsd = tmp_path / "pay.xsd"
    xsd.write_text(XSD)
    rule = {"type": "xml", "xsd": str(xsd), "sensitive_elements": elements, "mask_style": style}
    data = f'<?xml version="1.0"?>\n<Doc xmlns="urn:pay">{body}</Doc>\n'.encode()
    return validate_stream([data], rule, file_name="pay.xml")


def test_xsd_messages_never_show_a_sensitive_elements_value(tmp_path: Any) -> None:
    bad_iban = "de44 5001 0517 5407 3249 31"
    body = (f"<Pmt><IBAN>{bad_iban}</IBAN><Acct>AC{IBAN}</Acct><Nm>{SECRET_NAME}</Nm>"
            f"<Amt Ref='R{IBAN}'>1</Amt><Kind>K{IBAN}</Kind></Pmt>"
            f"<Pmt><IBAN>{IBAN}</IBAN><Amt>1</Amt></Pmt><Pmt><IBAN>{IBAN}</IBAN><Amt>2</Amt></Pmt>")
    report = _xml_report(tmp_path, body, ["IBAN", "Acct", "Nm", "@Ref", "Kind"])
    text = report.to_json() + report.summary()
    assert not report.valid and report.error_count >= 6
    for planted in (bad_iban, IBAN, IBAN[-12:], SECRET_NAME, "Account-Holder", "5001 0517"):
        assert planted not in text, planted
    messages = [e.message for e in report.errors]
    # The schema's part of each message stays (what is wrong, which element, the rule), the value is masked.
    assert any(m.startswith("Element '{urn:pay}IBAN': [facet 'pattern'] The value '****9 31' is not accepted")
               for m in messages), messages
    assert any("'****4931' is not a valid value of the atomic type 'xs:int'" in m for m in messages), messages
    assert any("attribute 'Ref': '****4931' is not a valid value" in m for m in messages), messages
    assert any("Duplicate key-sequence ['****4931']" in m for m in messages), messages
    assert any("{urn:pay}Nm" in m and "has a length of" in m for m in messages), messages


def test_xsd_messages_about_other_elements_are_unchanged(tmp_path: Any) -> None:
    report = _xml_report(tmp_path, f"<Pmt><IBAN>{IBAN}</IBAN><Acct>x12</Acct><Amt>1</Amt></Pmt>", ["IBAN"])
    assert [e.message for e in report.errors] == [
        "Element '{urn:pay}Acct': 'x12' is not a valid value of the atomic type 'xs:int'."]


def test_scrub_xsd_hides_a_message_it_cannot_parse_and_keeps_unquoted_ones() -> None:
    s = Sensitivity(elements=frozenset({"IBAN", "Amt@Ref"}), style="redact")
    assert s.scrub_xsd("Element '{urn:x}IBAN': something new quoting 'DE44500105175407324931'.") == (
        "Element '{urn:x}IBAN': details hidden: the message may quote a sensitive value")
    assert s.scrub_xsd("Element '{urn:x}IBAN': This element is not expected.") == (
        "Element '{urn:x}IBAN': This element is not expected.")
    assert s.scrub_xsd("Element 'Amt', attribute 'Ref': 'R1' is not a valid value of the atomic type 'xs:int'.") == (
        f"Element 'Amt', attribute 'Ref': '{REDACTED}' is not a valid value of the atomic type 'xs:int'.")
    # Ref of another element is not covered by Amt@Ref
    assert "'R1'" in s.scrub_xsd("Element 'Fee', attribute 'Ref': 'R1' is not a valid value of the atomic type "
                                 "'xs:int'.")
    assert Sensitivity().scrub_xsd("Element 'IBAN': 'x' is not valid") == "Element 'IBAN': 'x' is not valid"


def test_the_catalogue_accepts_sensitive_elements_and_checks_them() -> None:
    partner: dict[str, Any] = {"id": "px", "name": "P", "processing": {"rules": [
        {"match": "*.xml", "type": "xml", "sensitive_elements": ["IBAN", "@Ref", "Amt@Ccy"]}]}}
    parse_catalog({"partners": [partner]}, env={})
    partner["processing"]["rules"][0]["sensitive_elements"] = ["/Doc/IBAN"]
    with pytest.raises(CatalogError, match="local name"):
        parse_catalog({"partners": [partner]}, env={})


def test_an_xsd_report_holds_only_its_own_files_errors(tmp_path: Any) -> None:
    """Regression: lxml's per-thread error log was not cleared, so each XSD report also listed the errors (and
    the values they quote) of every XML file validated before it on the same thread."""
    first = _xml_report(tmp_path, f"<Pmt><IBAN>{IBAN}</IBAN><Acct>first-file-value</Acct><Amt>1</Amt></Pmt>", [])
    second = _xml_report(tmp_path, f"<Pmt><IBAN>{IBAN}</IBAN><Acct>second-value</Acct><Amt>1</Amt></Pmt>", [])
    malformed = _xml_report(tmp_path, "<Pmt><IBAN>", [])
    assert [e.message for e in first.errors] == [
        "Element '{urn:pay}Acct': 'first-file-value' is not a valid value of the atomic type 'xs:int'."]
    assert [e.message for e in second.errors] == [
        "Element '{urn:pay}Acct': 'second-value' is not a valid value of the atomic type 'xs:int'."]
    assert [e.code for e in malformed.errors] == ["xml"] and "first-file" not in malformed.to_json()
