"""Delivery status notifications as MTAs write them, for seeding a sender's inbox (`User.add_mime`).

`rfc3464` is a plain RFC 3464 DSN (Postfix-like, the original's headers as text/rfc822-headers); `exchange_ndr`
is shaped like Exchange Online's non-delivery report (HTML explanation, the status part, the whole original
attached as message/rfc822, the Message-ID not in the report's own headers); `exchange_receipt` is Exchange's
"Delivered:" receipt for isDeliveryReceiptRequested.
"""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid


def _status_part(recipient: str, action: str, status: str, diagnostic: str, mta: str) -> MIMEBase:
    part = MIMEBase("message", "delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {mta}"
    per_message["Arrival-Date"] = formatdate(usegmt=True)
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    if diagnostic:
        per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    if action == "delayed":
        per_recipient["Will-Retry-Until"] = formatdate(usegmt=True)
    part.set_payload([per_message, per_recipient])
    return part


def _report(subject: str, sender: str, to: str) -> MIMEMultipart:
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = sender
    report["To"] = to
    report["Subject"] = subject
    report["Date"] = formatdate(usegmt=True)
    report["Message-ID"] = make_msgid(domain="mta.example.net")
    return report


def rfc3464(original_id: str, *, to: str, recipient: str = "partner@example.net", action: str = "failed",
            status: str = "5.1.1", diagnostic: str = "550 5.1.1 <partner@example.net>: Recipient address rejected",
            subject: str = "Undelivered Mail Returned to Sender") -> bytes:
    report = _report(subject, "MAILER-DAEMON@mta.example.net (Mail Delivery System)", to)
    report.attach(MIMEText(f"This is the mail system at host mta.example.net.\n\nYour message to {recipient} "
                           f"could not be delivered ({action}).\n"))
    report.attach(_status_part(recipient, action, status, diagnostic, "mta.example.net"))
    headers = MIMEText(f"From: {to}\nTo: {recipient}\nSubject: the original\nMessage-ID: {original_id}\n",
                       "rfc822-headers")
    report.attach(headers)
    return report.as_bytes()


def _original(original_id: str, sender: str, recipient: str) -> Message:
    original = EmailMessage()
    original["From"] = sender
    original["To"] = recipient
    original["Subject"] = "the original"
    original["Message-ID"] = original_id
    original.set_content("the original body\n")
    return original


def exchange_ndr(original_id: str, *, to: str, recipient: str = "nobody@fabrikam.example",
                 status: str = "5.1.10", action: str = "failed",
                 diagnostic: str = "Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient "
                                   "not found by SMTP address lookup'") -> bytes:
    domain = to.rpartition("@")[2]
    report = _report("Undeliverable: the original" if action == "failed" else "Delivery delayed: the original",
                     f"Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@{domain}>", to)
    report["X-MS-Exchange-Message-Is-Ndr"] = ""
    report.attach(MIMEText("<html><body><b>Your message to " + recipient + " couldn't be delivered.</b>"
                           "</body></html>", "html"))
    report.attach(_status_part(recipient, action, status, diagnostic, f"BN8PR.{domain}"))
    report.attach(MIMEMessage(_original(original_id, to, recipient)))
    return report.as_bytes()


def exchange_receipt(original_id: str, *, to: str, recipient: str = "partner@fabrikam.example") -> bytes:
    domain = to.rpartition("@")[2]
    report = _report("Delivered: the original",
                     f"Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@{domain}>", to)
    report.attach(MIMEText(f"Your message has been delivered to the following recipients:\n{recipient}\n"))
    report.attach(_status_part(recipient, "delivered", "2.0.0", "", f"BN8PR.{domain}"))
    report.attach(MIMEText(f"From: {to}\nTo: {recipient}\nMessage-ID: {original_id}\n", "rfc822-headers"))
    return report.as_bytes()


def plain_mail(*, to: str, subject: str = "Re: your invoice", in_reply_to: str = "") -> bytes:
    msg = EmailMessage()
    msg["From"] = "someone@partner.example"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="partner.example")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content("Thanks, got it.\n")
    return msg.as_bytes()


__all__ = ["exchange_ndr", "exchange_receipt", "plain_mail", "rfc3464"]
