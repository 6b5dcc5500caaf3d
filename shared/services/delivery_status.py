"""Email status checks: read each sender mailbox's inbox for delivery status notifications and move the matching
Delivery on (SENT -> DELIVERED / BOUNCED / DELAYED), with a `delivery.*` event on the job, a log line and a metric.

Each message in the inbox is handled once across polls, by the ledger rules of the inbound mail poll: a Ledger
row per message (PK `mail-status:<mailbox>`, RK the ledger key of the mailbox + internetMessageId), claimed
insert-if-absent before any work, DONE when its report is recorded; a claim whose poller died is taken over after
the lease. What is not a report is recorded SKIPPED (read once, never again); a report that matches no delivery
REJECTED and logged once, and left in the inbox as it is. Reports are matched by the original Message-ID, which
Wharf generated (`<wharf.{job}.{index}.{nonce}@...>`) and stored on the Delivery: the record must hold that very id.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.catalog.model import email_destinations, sender_auth
from shared.domain.delivery import Delivery, DeliveryState
from shared.domain.dsn import DeliveryReport, parse_report, read_capped
from shared.domain.errors import ConflictError, NotFoundError, WharfError
from shared.domain.jobs import EventType, utcnow
from shared.domain.ledger import LedgerEntry, LedgerState, ledger_key
from shared.metrics import record_delivery_status
from shared.observability.tracing import log_fields, span
from shared.ports import MailMessage, MailSender
from shared.services.deliver_email import parse_message_id

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

CHANNEL = "mail-status"
STATUS_FOLDER = "Inbox"
LOOKBACK = timedelta(days=7)  # reports older than this are not looked at (delay notices come for up to 2 days)
MAX_MESSAGES = 500  # inbox messages looked at per mailbox and check
LEASE = timedelta(minutes=10)
_EVENTS = {"delivered": EventType.DELIVERY_DELIVERED, "bounced": EventType.DELIVERY_BOUNCED,
           "delayed": EventType.DELIVERY_DELAYED}
_STATES = {"delivered": DeliveryState.DELIVERED, "bounced": DeliveryState.BOUNCED, "delayed": DeliveryState.DELAYED}
# A later report never moves a delivery back: bounced stays bounced, delivered is not turned delayed.
_RANK = {DeliveryState.SENT: 0, DeliveryState.DELAYED: 1, DeliveryState.DELIVERED: 2, DeliveryState.BOUNCED: 3}


@dataclass
class StatusSummary:
    """What one check of one sender mailbox did."""

    mailbox: str
    listed: int = 0
    matched: list[dict[str, Any]] = field(default_factory=list)  # {job_id, index, outcome, status}
    unmatched: int = 0
    not_reports: int = 0
    already_seen: int = 0
    error: str = ""


def sender_mailboxes(services: Services) -> list[tuple[str, Any]]:
    """Every sender mailbox an enabled partner's email destination uses, once, with its app registration."""
    partners = services.catalog.partners
    seen: dict[str, Any] = {}
    for partner, _, dest in email_destinations(partners):
        if partner.enabled and dest.mailbox.lower() not in seen:
            seen[dest.mailbox.lower()] = (dest.mailbox, sender_auth(partners, dest))
    return list(seen.values())


def check_delivery_status(services: Services, *, now: datetime | None = None, owner: str | None = None,
                          lookback: timedelta = LOOKBACK, max_messages: int = MAX_MESSAGES) -> list[StatusSummary]:
    """Check every sender mailbox once. A mailbox that fails is reported in its summary; the others go on."""
    out = []
    for mailbox, auth in sender_mailboxes(services):
        try:
            out.append(check_mailbox(services, mailbox, auth, now=now, owner=owner, lookback=lookback,
                                     max_messages=max_messages))
        except WharfError as exc:
            log.warning("delivery status check of %s failed: %s; the next check retries", mailbox, exc,
                        extra=log_fields(channel=CHANNEL, mailbox=mailbox))
            out.append(StatusSummary(mailbox=mailbox, error=str(exc)))
    return out


def check_mailbox(services: Services, mailbox: str, auth: Any, *, now: datetime | None = None,
                  owner: str | None = None, lookback: timedelta = LOOKBACK,
                  max_messages: int = MAX_MESSAGES) -> StatusSummary:
    now = now or utcnow()
    check = _Check(services, mailbox, services.mail_senders.open(mailbox, auth), now=now,
                   owner=owner or f"{socket.gethostname()}:status")
    with span("delivery_status.check", {"wharf.mailbox": mailbox, "wharf.channel": CHANNEL}) as s:
        check.run(lookback, max_messages)
        s.set_attribute("wharf.listed", check.summary.listed)
        s.set_attribute("wharf.matched", len(check.summary.matched))
        s.set_attribute("wharf.unmatched", check.summary.unmatched)
    return check.summary


class _Check:
    def __init__(self, services: Services, mailbox: str, mail: MailSender, *, now: datetime, owner: str) -> None:
        self._s, self.box, self.mail, self.now, self.owner = services, mailbox, mail, now, owner
        self.partner_key = f"{CHANNEL}:{mailbox.lower()}"
        self.summary = StatusSummary(mailbox=mailbox)

    def _key(self, msg: MailMessage) -> tuple[str, str]:
        path = f"{self.box.lower()}/{msg.internet_message_id or 'graph-id:' + msg.id}"
        return ledger_key(CHANNEL, path, 0, int(msg.received_at.timestamp())), path

    def run(self, lookback: timedelta, max_messages: int) -> None:
        folder = self.mail.resolve_folder(self.box, STATUS_FOLDER)
        listing = self.mail.list_messages(self.box, folder, received_after=self.now - lookback)
        messages = list(itertools.islice(listing, max_messages))
        self.summary.listed = len(messages)
        keys = {self._key(m)[0]: m for m in messages}
        known = self._s.ledger.get_many(self.partner_key, list(keys))
        for key, msg in keys.items():
            entry = known.get(key)
            claimed = self._claim(msg, entry)
            if claimed is None:
                self.summary.already_seen += 1
                continue
            self._handle(msg, claimed)

    # --- the ledger ------------------------------------------------------------------------------

    def _claim(self, msg: MailMessage, entry: LedgerEntry | None) -> LedgerEntry | None:
        """This check's claim on the message, or None (handled before, or another check holds a live claim)."""
        key, path = self._key(msg)
        if entry is not None:
            if entry.state is not LedgerState.CLAIMED or not entry.lease_expired(self.now, LEASE):
                return None
            try:  # a check that died holding it: take it over
                return self._s.ledger.update(replace(entry, owner=self.owner, claimed_at=self.now,
                                                     attempts=entry.attempts + 1))
            except (ConflictError, NotFoundError):
                return None
        new = LedgerEntry(partner=self.partner_key, key=key, channel=CHANNEL, path=path, size=0,
                          mtime=int(msg.received_at.timestamp()), state=LedgerState.CLAIMED, owner=self.owner,
                          claimed_at=self.now, job_id="", transfer_id="", container="", blob_path="")
        try:
            return self._s.ledger.create(new)
        except ConflictError:
            return None

    def _close(self, entry: LedgerEntry, state: LedgerState, *, job_id: str = "", error: str = "") -> None:
        try:
            self._s.ledger.update(replace(entry, state=state, job_id=job_id, error=error[:1000]))
        except (ConflictError, NotFoundError):
            log.warning("status report ledger entry moved; another check took it over",
                        extra=log_fields(job_id or None, channel=CHANNEL, mailbox=self.box))

    # --- one message -----------------------------------------------------------------------------

    def _handle(self, msg: MailMessage, entry: LedgerEntry) -> None:
        chunks: Iterable[bytes] = self.mail.open_mime(self.box, msg.id)
        try:
            raw = read_capped(chunks)
        except NotFoundError:  # deleted or moved since the listing: nothing to read, nothing to do
            self._close(entry, LedgerState.GONE, error="gone before it was read")
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        report = parse_report(raw)
        if report is None:
            self.summary.not_reports += 1
            self._close(entry, LedgerState.SKIPPED, error="not a delivery status report")
            return
        delivery = self._delivery(report)
        if delivery is None:
            self.summary.unmatched += 1
            log.warning("delivery report %s in %s matches no delivery Wharf sent (Message-IDs %s); left alone",
                        msg.internet_message_id or msg.id, self.box, ", ".join(report.message_ids[:3]),
                        extra=log_fields(channel=CHANNEL, mailbox=self.box))
            self._close(entry, LedgerState.REJECTED, error="matches no delivery")
            return
        self._record(msg, entry, report, delivery)
        try:
            self.mail.mark_read(self.box, msg.id)
        except WharfError as exc:
            log.info("could not mark report read: %s", exc, extra=log_fields(delivery.job_id, channel=CHANNEL))
        self._close(entry, LedgerState.DONE, job_id=delivery.job_id)

    def _delivery(self, report: DeliveryReport) -> Delivery | None:
        for message_id in report.message_ids:
            ref = parse_message_id(message_id)
            if ref is None:
                continue
            try:
                found = self._s.deliveries.get(*ref)
            except (NotFoundError, ValueError):
                continue
            if found.kind == "email" and found.message_id == message_id:
                return found
        return None

    def _record(self, msg: MailMessage, entry: LedgerEntry, report: DeliveryReport, delivery: Delivery) -> None:
        outcome = report.outcome
        fields = log_fields(delivery.job_id, partner=delivery.partner, channel=CHANNEL, index=delivery.index,
                            outcome=outcome, status=report.status)
        with span("delivery_status.report", {"wharf.job_id": delivery.job_id, "wharf.partner": delivery.partner,
                                             "wharf.destination.index": delivery.index,
                                             "wharf.delivery.outcome": outcome, "wharf.dsn.status": report.status}):
            data = {"index": delivery.index, "message_id": delivery.message_id, "report": entry.key,
                    "status": report.status, "diagnostic": report.diagnostic,
                    "recipients": [{"recipient": r.recipient, "action": r.action, "status": r.status,
                                    "diagnostic": r.diagnostic} for r in report.recipients][:50],
                    "reported_at": msg.received_at.isoformat()}
            events = self._s.jobs.events(delivery.job_id)
            if not any(e.type is _EVENTS[outcome] and e.data.get("report") == entry.key for e in events):
                self._s.jobs.append(delivery.job_id, _EVENTS[outcome], data)
                level = "WARNING" if outcome == "bounced" else "INFO"
                self._s.jobs.log(delivery.job_id, level, f"email delivery {delivery.index} {outcome}"
                                 + (f": {report.status} {report.diagnostic}" if outcome != "delivered" else ""))
                record_delivery_status(delivery.partner, outcome)
            self._move(delivery, outcome, report)
            self.summary.matched.append({"job_id": delivery.job_id, "index": delivery.index, "outcome": outcome,
                                         "status": report.status})
            log.info("email delivery %s (%s)", outcome, report.status or "-", extra=fields)

    def _move(self, delivery: Delivery, outcome: str, report: DeliveryReport) -> None:
        """The record's state, unless it already says something later (three tries against concurrent writers)."""
        state = _STATES[outcome]
        for _ in range(3):
            if _RANK.get(delivery.state, -1) > _RANK[state] or delivery.state not in _RANK:
                return
            try:
                self._s.deliveries.update(replace(delivery, state=state, status_code=report.status,
                                                  status_detail=report.diagnostic, status_at=self.now))
                return
            except ConflictError:
                delivery = self._s.deliveries.get(delivery.job_id, delivery.index)


__all__ = ["CHANNEL", "StatusSummary", "check_delivery_status", "check_mailbox", "sender_mailboxes"]
