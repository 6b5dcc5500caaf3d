"""Delivery status notifications parsed with the stdlib email package; Wharf's Message-IDs; the email catalogue."""

from __future__ import annotations

import pytest

from shared.catalog import CatalogError, parse_catalog
from shared.domain.dsn import MAX_REPORT_BYTES, parse_report, read_capped
from shared.services.deliver_email import internet_message_id, parse_message_id
from tests.graph_server.reports import exchange_ndr, exchange_receipt, plain_mail, rfc3464

ORIGINAL = "<wharf.job-20261202011234567890-0123456789ab.002.a1b2c3d4e5f6@contoso.example>"
BOX = "out@contoso.example"


def test_a_postfix_style_bounce_names_the_original_status_and_diagnostic() -> None:
    report = parse_report(rfc3464(ORIGINAL, to=BOX))
    assert report is not None and report.message_ids == (ORIGINAL,)
    assert (report.outcome, report.status) == ("bounced", "5.1.1")
    assert report.diagnostic == "partner@example.net: 550 5.1.1 <partner@example.net>: Recipient address rejected"


def test_exchange_ndr_delay_and_receipt() -> None:
    ndr = parse_report(exchange_ndr(ORIGINAL, to=BOX))
    assert ndr is not None and ndr.message_ids == (ORIGINAL,) and ndr.status == "5.1.10"
    assert "RecipientNotFound" in ndr.diagnostic
    delayed = parse_report(exchange_ndr(ORIGINAL, to=BOX, action="delayed", status="4.4.7", diagnostic="slow"))
    assert delayed is not None and (delayed.outcome, delayed.status) == ("delayed", "4.4.7")
    receipt = parse_report(exchange_receipt(ORIGINAL, to=BOX))
    assert receipt is not None and (receipt.outcome, receipt.status) == ("delivered", "2.0.0")


def test_mixed_recipients_bounce_if_any_failed_and_the_diagnostic_names_only_the_failed() -> None:
    raw = rfc3464(ORIGINAL, to=BOX, action="delivered", status="2.0.0", diagnostic="").replace(
        b"Final-Recipient: rfc822; partner@example.net\nAction: delivered\nStatus: 2.0.0\n",
        b"Final-Recipient: rfc822; partner@example.net\nAction: delivered\nStatus: 2.0.0\n\n"
        b"Original-Recipient: rfc822;<other@example.net>\nAction: failed\nStatus: 5.2.2 (mailbox full)\n"
        b"Diagnostic-Code: smtp; 552 5.2.2\n Mailbox full\n")
    report = parse_report(raw)
    assert report is not None and [r.action for r in report.recipients] == ["delivered", "failed"]
    assert (report.outcome, report.status) == ("bounced", "5.2.2")
    assert report.diagnostic == "other@example.net: 552 5.2.2 Mailbox full"  # folded line unfolded


def test_what_is_not_a_delivery_report_is_none() -> None:
    assert parse_report(plain_mail(to=BOX, in_reply_to=ORIGINAL)) is None  # a human's reply
    read_receipt = rfc3464(ORIGINAL, to=BOX).replace(b"report-type=\"delivery-status\"",
                                                     b"report-type=\"disposition-notification\"")
    assert parse_report(read_receipt) is None
    no_original = rfc3464(ORIGINAL, to=BOX).replace(ORIGINAL.encode(), b"")
    assert parse_report(no_original) is None  # nothing to match it by
    assert parse_report(b"\x00\xff garbage") is None


def test_the_report_is_read_at_most_to_the_cap_and_still_parses_its_status_part() -> None:
    raw = exchange_ndr(ORIGINAL, to=BOX).replace(b"the original body", b"x" * (2 * MAX_REPORT_BYTES))
    kept = read_capped(iter([raw[i:i + 65536] for i in range(0, len(raw), 65536)]))
    assert len(kept) == MAX_REPORT_BYTES
    report = parse_report(kept)
    assert report is not None and report.message_ids == (ORIGINAL,) and report.outcome == "bounced"


def test_wharf_message_ids_round_trip_and_others_do_not_parse() -> None:
    made = internet_message_id("job-20261202011234567890-0123456789ab", 7, "Sender@Contoso.Example")
    assert made.startswith("<wharf.job-20261202011234567890-0123456789ab.007.") and made.endswith("@contoso.example>")
    assert parse_message_id(made) == ("job-20261202011234567890-0123456789ab", 7)
    assert internet_message_id("j", 0, "11111111-2222-3333-4444-555555555555").endswith("@wharf.invalid>")
    for other in ("<abc@x>", "<wharf.a.b@x>", "<wharf.job.x.y@x>", ""):
        assert parse_message_id(other) is None
    assert internet_message_id("j", 1, BOX) != internet_message_id("j", 1, BOX)  # one per record


AUTH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret_secret": "graph-send"}


@pytest.mark.parametrize(("dest", "message"), [
    ({"to": []}, "to"),
    ({"cc": ["nope"]}, "cc"),
    ({"attach": "inline"}, "attach"),
    ({"link_expiry_hours": 500}, "link_expiry_hours"),
    ({"subject": "{partner} {nope}"}, "subject"),
    ({"subject": "line one\nline two"}, "one line"),
    ({"to": [f"r{i}@x.example" for i in range(501)]}, "at most 500"),
    ({"auth": {**AUTH, "client_secret_secret": None, "certificate_secret": None}}, "auth"),
])
def test_email_destination_catalogue_errors(dest: dict[str, object], message: str) -> None:
    base = {"kind": "email", "to": ["a@b.example"], "mailbox": BOX, "auth": AUTH}
    doc = {"partners": [{"id": "acme", "name": "A", "routes": [
        {"name": "r", "default": True, "destinations": [{**base, **dest}]}]}]}
    with pytest.raises(CatalogError, match=message):
        parse_catalog(doc, env={})
