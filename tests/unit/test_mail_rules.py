"""Mail rules: sender allow-list (addresses and *@domain), subject regex, attachment decisions."""

from __future__ import annotations

import pytest

from shared.domain.mail_rules import (
    MailRules,
    Verdict,
    item_file_name,
    name_matches,
    normalise_address,
    sender_allowed,
    subject_matches,
)

ALLOW = ("ops@acme.com", "*@partner.example", "Billing@Globex.COM")


@pytest.mark.parametrize(("address", "allowed"), [
    ("ops@acme.com", True),
    ("OPS@ACME.COM", True),
    ("  ops@acme.com ", True),
    ("<ops@acme.com>", True),
    ("billing@globex.com", True),
    ("other@acme.com", False),
    ("anyone@partner.example", True),
    ("x@PARTNER.example", True),
    ("x@sub.partner.example", False),  # *@domain is that domain only
    ("x@notpartner.example", False),
    ("x@partner.example.evil.org", False),
    ("partner.example", False),
    ("ops@acme.com@evil.org", False),
    ("", False),
    ("ops @acme.com", False),
])
def test_sender_allow_list(address: str, allowed: bool) -> None:
    assert sender_allowed(address, ALLOW) is allowed


def test_empty_allow_list_allows_nobody() -> None:
    assert not sender_allowed("ops@acme.com", [])


def test_normalise_address() -> None:
    assert normalise_address(" A@B.com ") == "a@b.com"
    assert normalise_address("no-at-sign") == ""
    assert normalise_address("@b.com") == ""


@pytest.mark.parametrize(("subject", "pattern", "ok"), [
    ("Invoices 2024-05", r"^Invoices \d{4}-\d{2}$", True),
    ("RE: Invoices 2024-05", r"^Invoices", False),
    ("invoices", r"(?i)^INVOICES$", True),
    ("anything", None, True),
    ("", r"x", False),
    ("Überweisung März", r"März", True),
])
def test_subject_regex(subject: str, pattern: str | None, ok: bool) -> None:
    assert subject_matches(subject, pattern) is ok


def test_name_globs_are_case_insensitive() -> None:
    assert name_matches("INVOICE-1.CSV", ["invoice-*.csv"])
    assert not name_matches("invoice-1.csv.exe", ["*.csv"])
    assert name_matches("a.xlsx", ["*.csv", "*.xlsx"])


def _rules(**kw: object) -> MailRules:
    base: dict[str, object] = {"sender_allow": ALLOW, "attachment_globs": ("*.csv", "*.eml", "*.png")}
    base.update(kw)
    return MailRules(**base)  # type: ignore[arg-type]


def test_check_message_sender_then_subject() -> None:
    rules = _rules(subject_regex=r"^Invoices")
    assert rules.check_message("ops@acme.com", "Invoices May").accepted
    refused = rules.check_message("spam@evil.org", "Invoices May")
    assert refused.verdict is Verdict.REJECT and "spam@evil.org" in refused.reason
    assert rules.check_message("ops@acme.com", "Hello").verdict is Verdict.REJECT
    assert rules.check_message("", "Invoices").reason == "sender (none) is not allowed"


def test_attachment_decisions() -> None:
    rules = _rules(max_attachment_bytes=1000)
    assert rules.check_attachment("a.csv", kind="file", is_inline=False, size=10).accepted
    assert rules.check_attachment("a.pdf", kind="file", is_inline=False, size=10).verdict is Verdict.SKIP
    too_big = rules.check_attachment("a.csv", kind="file", is_inline=False, size=1001)
    assert too_big.verdict is Verdict.REJECT and "max_attachment_bytes" in too_big.reason
    assert rules.check_attachment("logo.png", kind="file", is_inline=True, size=10).verdict is Verdict.SKIP
    assert rules.check_attachment("fwd.eml", kind="item", is_inline=False, size=10).verdict is Verdict.SKIP
    assert rules.check_attachment("link.csv", kind="reference", is_inline=False, size=0).verdict is Verdict.SKIP


def test_keep_inline_and_items_when_configured() -> None:
    rules = _rules(inline_images="keep", item_attachments="keep")
    assert rules.check_attachment("logo.png", kind="file", is_inline=True, size=10).accepted
    assert rules.check_attachment("fwd.eml", kind="item", is_inline=False, size=10).accepted
    assert rules.needs_inline
    assert not _rules().needs_inline


def test_item_file_name() -> None:
    assert item_file_name("Fwd: order") == "Fwd: order.eml"
    assert item_file_name("orig.EML") == "orig.EML"
    assert item_file_name("orig.msg") == "orig.msg.eml"  # $value is MIME, whatever the name says


def test_from_config_reads_the_catalogue_block() -> None:
    from shared.catalog import Mailbox

    cfg = Mailbox.model_validate({
        "mailbox": "ingest@wharf.test", "sender_allow": ["*@acme.com"], "subject_regex": "^Inv",
        "attachment_globs": ["*.csv"], "max_attachment_bytes": "1 MiB", "item_attachments": "keep",
        "auth": {"tenant_id": "contoso.onmicrosoft.com", "client_id": "00000000-0000-0000-0000-000000000001",
                 "client_secret_secret": "demo-graph-secret"},
    })
    rules = MailRules.from_config(cfg)
    assert rules.sender_allow == ("*@acme.com",)
    assert rules.max_attachment_bytes == 1024 * 1024
    assert rules.item_attachments == "keep" and rules.inline_images == "skip"
    assert rules.check_message("a@acme.com", "Invoices").accepted
    assert not rules.check_message("a@evilacme.com", "Invoices").accepted
