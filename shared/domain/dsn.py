"""Delivery status notifications (RFC 3464 `multipart/report; report-type=delivery-status`, which Exchange Online's
non-delivery reports, delay notices and delivery receipts also are), parsed with the stdlib `email` package (pure).

What a report says about the message it reports on: which Message-ID (from the `text/rfc822-headers` part, the
attached `message/rfc822` original, or the report's own In-Reply-To / References), and per recipient the action
(`failed`, `delayed`, `delivered`, `relayed`, `expanded`), the status code (`5.1.1`) and the diagnostic text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email import message_from_bytes, message_from_string, policy
from email.message import Message

#: How much of a report is read: the status parts come first; an attached original beyond this is cut off.
MAX_REPORT_BYTES = 1024 * 1024
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_DIAGNOSTIC_CHARS = 1000
_DIAGNOSTIC_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*;\s*")  # `smtp; 550 ...` -> `550 ...`


@dataclass(frozen=True)
class RecipientStatus:
    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str  # e.g. 5.1.1
    diagnostic: str = ""


@dataclass(frozen=True)
class DeliveryReport:
    """One parsed report: the Message-IDs it names (most trustworthy first) and what happened per recipient."""

    message_ids: tuple[str, ...]
    recipients: tuple[RecipientStatus, ...] = field(default_factory=tuple)

    @property
    def outcome(self) -> str:
        """bounced when any recipient failed, else delayed when any was delayed, else delivered."""
        actions = {r.action for r in self.recipients}
        if "failed" in actions:
            return "bounced"
        if "delayed" in actions:
            return "delayed"
        return "delivered"

    @property
    def status(self) -> str:
        wanted = {"bounced": "failed", "delayed": "delayed"}.get(self.outcome)
        for r in self.recipients:
            if wanted is None or r.action == wanted:
                return r.status
        return ""

    @property
    def diagnostic(self) -> str:
        wanted = {"bounced": "failed", "delayed": "delayed"}.get(self.outcome)
        return "; ".join(f"{r.recipient}: {r.diagnostic or r.status}" for r in self.recipients
                         if wanted is None or r.action == wanted)[:_DIAGNOSTIC_CHARS]


def read_capped(chunks: Iterable[bytes], limit: int = MAX_REPORT_BYTES) -> bytes:
    """At most `limit` bytes of a message's MIME source (the rest is not read)."""
    kept = bytearray()
    for chunk in chunks:
        kept += chunk[:limit - len(kept)]
        if len(kept) >= limit:
            break
    return bytes(kept)


def parse_report(raw: bytes) -> DeliveryReport | None:
    """The delivery status report in a MIME message, or None when it is not one (a read receipt, a reply, mail)."""
    msg = message_from_bytes(raw, policy=policy.compat32)
    if msg.get_content_type() != "multipart/report" or \
            str(msg.get_param("report-type", "") or "").lower() != "delivery-status":
        return None
    status_part = next((p for p in msg.walk() if p.get_content_type() == "message/delivery-status"), None)
    if status_part is None:
        return None
    recipients = tuple(_recipients(status_part))
    ids: list[str] = []
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(part.get_payload())
            ids += _ids(message_from_string(text.lstrip(), policy=policy.compat32).get("Message-ID"))
        elif kind == "message/rfc822":
            inner = part.get_payload()
            original = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(original, Message):
                ids += _ids(original.get("Message-ID"))
    for header in ("In-Reply-To", "References"):
        ids += _ids(msg.get(header))
    unique = tuple(dict.fromkeys(ids))
    if not unique:
        return None
    return DeliveryReport(message_ids=unique, recipients=recipients)


def _recipients(status_part: Message) -> Iterable[RecipientStatus]:
    blocks = status_part.get_payload()
    if not isinstance(blocks, list):  # not split into header blocks (a non-conforming report): parse it here
        text = str(blocks or "")
        blocks = [message_from_string(b.strip() + "\n", policy=policy.compat32) for b in re.split(r"\r?\n\r?\n", text)
                  if b.strip()]
    for block in blocks:
        if not isinstance(block, Message):
            continue
        action = str(block.get("Action", "") or "").strip().lower()
        if not action:
            continue  # the per-message block (Reporting-MTA, Arrival-Date)
        recipient = _address(block.get("Final-Recipient") or block.get("Original-Recipient") or "")
        match = _STATUS.search(str(block.get("Status", "") or ""))
        status = ".".join(match.groups()) if match else ""
        diagnostic = _DIAGNOSTIC_TYPE.sub("", " ".join(str(block.get("Diagnostic-Code", "") or "").split()))
        yield RecipientStatus(recipient=recipient, action=action, status=status,
                              diagnostic=diagnostic[:_DIAGNOSTIC_CHARS])


def _address(field_value: str) -> str:
    """`rfc822; someone@example.com` -> someone@example.com."""
    text = str(field_value).strip()
    return text.partition(";")[2].strip().strip("<>") if ";" in text else text.strip("<>")


def _ids(value: object) -> list[str]:
    return _MESSAGE_ID.findall(str(value)) if value else []


__all__ = ["MAX_REPORT_BYTES", "DeliveryReport", "RecipientStatus", "parse_report", "read_capped"]
