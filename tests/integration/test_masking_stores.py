"""A planted sensitive value (an IBAN in a column marked `sensitive`, one under a sensitive JSON path, one in a
sensitive XML element and one in a sensitive XML attribute, both violating the XSD) and a
planted secret (the PGP passphrase) are found nowhere: not in any table (Azurite), blob, published event, log
record or exported span, after the files failed validation, were quarantined and their jobs FAILED. The raw
inputs are the only exception: the CSV arrives encrypted (its raw copies hold ciphertext only), the JSON raw
copies (inbound/quarantine) are the partner's own files and are left out of the search, as are the XML's."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import LocalSecrets, env_name
from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType, utcnow
from shared.observability.setup import for_tests
from shared.services import process
from tests.gpg_home import PASSPHRASE, GpgHome, stored_key
from tests.planted import found, stored_documents

pytestmark = [pytest.mark.azurite, pytest.mark.timeout(300)]

IBAN = "DE44500105175407324931"  # planted: must never be stored or logged as it is
JSON_IBAN = "FR7630006000011234567890189"
XML_IBAN = "nl91 abna 0417 1643 00"  # violates the XSD's IBAN pattern: libxml2's message quotes it
XML_REF = "GB82WEST12345698765432"  # in an xs:int attribute: quoted too
XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:element name="Doc"><xs:complexType><xs:sequence>
    <xs:element name="IBAN" maxOccurs="unbounded"><xs:complexType><xs:simpleContent>
      <xs:extension base="iban"><xs:attribute name="Ref" type="xs:int"/></xs:extension>
    </xs:simpleContent></xs:complexType></xs:element>
  </xs:sequence></xs:complexType></xs:element>
  <xs:simpleType name="iban"><xs:restriction base="xs:string">
    <xs:pattern value="[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}"/></xs:restriction></xs:simpleType>
</xs:schema>"""
SECRET = PASSPHRASE  # the PGP passphrase, through the secrets adapter (registered for redaction there)


def catalog(partner: str, xsd: Path) -> Any:
    pgp = {"decrypt": True, "verify": "off", "private_key_secret": "mask-pgp-key",
           "passphrase_secret": "mask-pgp-pass"}
    return parse_catalog({"partners": [{
        "id": partner, "name": "Masking", "processing": {"rules": [
            {"match": "*.csv.pgp", "type": "csv", "pgp": pgp, "csv": {"columns": {
                "id": {"type": "integer"},
                "iban": {"type": "regex", "pattern": "[A-Z]{2}[0-9]{2}X+", "sensitive": True}}}},
            {"match": "*.json", "type": "json", "sensitive_paths": ["$[*].iban"], "mask_style": "hash",
             "json_schema": {"type": "array", "items": {"type": "object", "properties": {
                 "iban": {"type": "string", "maxLength": 10}}}}},
            {"match": "*.xml", "type": "xml", "xsd": str(xsd), "sensitive_elements": ["IBAN", "IBAN@Ref"]},
        ]},
        "routes": [{"name": "r", "default": True, "destinations": [{"kind": "blob"}]}],
    }]}, env={})


def stored(services: Services, prefix: str, partner: str) -> list[tuple[str, str]]:
    def partners_own_json(container: str, name: str) -> bool:  # as it came (see the module docstring)
        return name.endswith(("/data.json", "/pay.xml")) and container in ("inbound", "quarantine")

    return stored_documents(services.settings.storage_connection_string or "", prefix, [partner],
                            services.settings.events_queue, skip=partners_own_json)


def _run_failing(services: Services, partner: str, name: str, data: bytes) -> dict[str, Any]:
    job_id = new_job_id(utcnow())
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "file_name": name, "source": "test"})
    info = services.blobs.upload_stream("inbound", f"{partner}/{job_id}/{name}", [data])
    ref = {"job_id": job_id, "partner": partner, "file_name": name, "container": "inbound", "blob_path": info.path}
    process.start_job(services, ref)
    result = process.validate_and_transform(services, ref)
    assert not result["valid"], result
    failure = {**ref, "step": "validate", "reason": result["reason"], "report_path": result.get("report_path", "")}
    process.quarantine_file(services, failure)
    process.fail_job(services, failure)
    return result


def test_no_sensitive_value_or_secret_is_stored_logged_or_exported(
        services: Services, table_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    partner = f"mask-{uuid.uuid4().hex[:10]}"
    wharf = stored_key("wharf-ed25519")
    (tmp_path / "pay.xsd").write_text(XSD)
    services.overrides["catalog"] = catalog(partner, tmp_path / "pay.xsd")
    services.overrides["secrets"] = LocalSecrets(env={env_name("mask-pgp-key"): wharf.secret,
                                                      env_name("mask-pgp-pass"): SECRET})
    capture = for_tests()
    caplog.set_level(logging.DEBUG)
    home = GpgHome()
    try:
        home.import_key(wharf.public)
        (tmp_path / "pay.csv").write_bytes(f"id,iban\n1,DE00XXXX\n2,{IBAN}\n".encode())
        home.gpg("-r", wharf.fingerprint, "-o", str(tmp_path / "pay.csv.pgp"), "--encrypt", str(tmp_path / "pay.csv"))
        csv_result = _run_failing(services, partner, "pay.csv.pgp", (tmp_path / "pay.csv.pgp").read_bytes())
        json_result = _run_failing(services, partner, "data.json",
                                   json.dumps([{"iban": "short"}, {"iban": JSON_IBAN}]).encode())
        xml_result = _run_failing(services, partner, "pay.xml", (
            f'<?xml version="1.0"?>\n<Doc><IBAN>{XML_IBAN}</IBAN><IBAN Ref="{XML_REF}">DE89370400440532013000</IBAN>'
            "</Doc>\n").encode())
    finally:
        home.close()
    # The failures are reported, with the masked value in their place.
    assert "****4931" in csv_result["reason"] and "iban" in csv_result["reason"]
    assert "sha256:" in json_result["reason"]
    assert "'****3 00' is not accepted by the pattern" in xml_result["reason"], xml_result["reason"]
    docs = stored(services, table_prefix, partner)
    assert any(where.startswith("table ") for where, _ in docs) and any("reports/" in w for w, _ in docs)
    assert any("****4931" in text for where, text in docs if where.startswith("blob reports/"))
    docs += [(f"log {r.name}", r.getMessage() + json.dumps({k: str(v) for k, v in vars(r).items()}))
             for r in caplog.records]
    spans = capture.finished_spans()
    assert any(s.name == "activity.validate_and_transform" for s in spans)
    docs += [(f"span {s.name}", json.dumps({"attrs": dict(s.attributes or {}), "events": [
        {"name": e.name, "attrs": dict(e.attributes or {})} for e in s.events],
        "status": str(s.status.description)}, default=str)) for s in spans]
    docs += [("otel log", json.dumps({"body": str(r.log_record.body), "attrs": dict(r.log_record.attributes or {})},
                                     default=str)) for r in capture.logs.get_finished_logs()]
    planted = {"the IBAN": IBAN, "the JSON IBAN": JSON_IBAN, "the passphrase": SECRET,
               "the IBAN's last 12": IBAN[-12:], "the JSON IBAN's last 12": JSON_IBAN[-12:],
               "the XML IBAN": XML_IBAN, "the XML IBAN's last 12": XML_IBAN[-12:], "the XML Ref": XML_REF,
               "the XML Ref's last 12": XML_REF[-12:]}
    leaks = found(docs, planted)
    assert not leaks, "\n".join(leaks)
