"""Poll one partner's mailbox through Microsoft Graph: take mails by rule, land each attachment exactly once,
then mark the mail read and/or move it. Ledger, landing and circuit breaker are the ones SFTP uses."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from azure.core.exceptions import AzureError

from shared.domain.errors import (
    ConfigurationError,
    ConflictError,
    DependencyUnavailableError,
    NotFoundError,
    WharfError,
)
from shared.domain.jobs import JobType
from shared.domain.ledger import LedgerEntry, LedgerState
from shared.domain.mail_rules import MailRules, Verdict, item_file_name
from shared.domain.sanitize import display_name, sanitize_name
from shared.faults import fault_point
from shared.observability.tracing import log_fields, span
from shared.ports import MailAttachment, Mailbox, MailMessage
from shared.services.landing import Arrival, Claim, ClaimLostError, Landing
from shared.services.polls import PollOptions, PollProgress, PollSummary, PollTally, default_options, guarded_poll
from shared.services.storage import one_line, storage_unavailable

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

CHANNEL = "mail"
MAX_MESSAGES_PER_POLL = 200  # accepted mails handled per poll; the rest waits for the next one, oldest first
MAX_LISTED = 5000  # mails listed per poll (metadata only)
PAGE_SIZE = 50
_TIDIED_PER_POLL = 100  # LANDED entries of mails no longer in the folder marked DONE by one poll
_SUBJECT_IN_LOGS = 120

T = TypeVar("T")


def poll_mailbox(services: Services, partner_id: str, *, options: PollOptions | None = None,
                 progress: Callable[[PollProgress], None] | None = None, requested_by: str = "",
                 max_messages: int = MAX_MESSAGES_PER_POLL, page_size: int = PAGE_SIZE) -> PollSummary:
    """Poll one partner's mailbox folder now and land every wanted attachment exactly once.

    Raises NotFoundError for an unknown partner and ConfigurationError for one without a mailbox block;
    whatever Graph does wrong is reported in the summary (and counted by the partner's mail breaker).
    """
    opts = options or default_options(services)
    partner = services.catalog.get(partner_id)
    cfg = partner.mailbox
    if cfg is None:
        raise ConfigurationError(f"partner {partner_id} has no mailbox block in the catalogue")
    graph_host = urlparse(services.settings.graph_base_url).hostname
    return guarded_poll(services, partner, channel=CHANNEL, opts=opts, requested_by=requested_by,
                        progress=progress, attrs={"server.address": graph_host},
                        run=lambda tally: _MailPoll(services, partner_id, cfg, services.mailboxes.open(partner_id, cfg),
                                                    opts, tally, max_messages, page_size).run(),
                        poll_failures=(WharfError,))


@dataclass(frozen=True)
class _Wanted:
    attachment: MailAttachment
    arrival: Arrival


def _listed(rest: str, listed: set[str]) -> bool:
    """Whether `message-id/attachment-id` (a mail entry's path after the mailbox) belongs to a listed mail. Either
    part may hold a '/' (Graph ids are base64), so every split is tried."""
    at = rest.find("/")
    while at != -1:
        if rest[:at] in listed:
            return True
        at = rest.find("/", at + 1)
    return False


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class _MailPoll:
    """One poll of one mailbox: the policy. GraphMailClient makes the calls, Landing keeps the books."""

    def __init__(self, services: Services, partner_id: str, cfg: Any, mailbox: Mailbox, opts: PollOptions,
                 tally: PollTally, max_messages: int, page_size: int = PAGE_SIZE) -> None:
        self._s, self.partner, self.cfg, self.mail, self.opts = services, partner_id, cfg, mailbox, opts
        self.tally, self.max_messages, self.page_size = tally, max_messages, page_size
        self.rules = MailRules.from_config(cfg)
        self.landing = Landing(services, partner_id, channel=CHANNEL, job_type=JobType.MAIL_INGEST,
                               owner=opts.owner, lease=opts.lease, max_attempts=opts.max_attempts, clock=opts.clock)
        self.box = cfg.mailbox
        self._stop = False
        self._worked = 0  # accepted mails handled this poll (rejected ones already known cost no Graph call)

    # --- identities -----------------------------------------------------------------------------

    def _message_id(self, msg: MailMessage) -> str:
        # internetMessageId survives moves; Graph's id does not. A draft may lack one: fall back.
        return msg.internet_message_id or f"graph-id:{msg.id}"

    def _source(self, msg: MailMessage) -> str:
        return f"mail://{self.box}/{self._message_id(msg)}"

    def _arrival(self, msg: MailMessage, att: MailAttachment, name: str) -> Arrival:
        # Ledger identity: mailbox + internetMessageId + attachment id (+ size and received time).
        return Arrival(channel=CHANNEL, path=f"{self.box.lower()}/{self._message_id(msg)}/{att.id}", name=name,
                       size=att.size, mtime=int(msg.received_at.timestamp()), source=self._source(msg))

    def _message_arrival(self, msg: MailMessage) -> Arrival:
        return Arrival(channel=CHANNEL, path=f"{self.box.lower()}/{self._message_id(msg)}",
                       name=msg.subject[:200] or "(no subject)", size=0, mtime=int(msg.received_at.timestamp()),
                       source=self._source(msg))

    @staticmethod
    def _what(msg: MailMessage, name: str = "") -> str:
        subject = display_name(msg.subject[:_SUBJECT_IN_LOGS]) or "(no subject)"
        return f"{subject} / {display_name(name)}" if name else subject

    # --- folders --------------------------------------------------------------------------------

    def _folder(self, path: str, role: str) -> str:
        try:
            return self.mail.resolve_folder(self.box, path)
        except NotFoundError as exc:
            raise ConfigurationError(f"mail folder {path!r} ({role}) does not exist in mailbox {self.box}; "
                                     "create it or fix the partner's mailbox block") from exc

    # --- the poll -------------------------------------------------------------------------------

    def run(self) -> None:
        cfg = self.cfg
        self.tally.set_phase("connecting")
        folder_id = self._folder(cfg.folder, "folder")
        # Resolved up front: a wrong move_to fails the poll before anything is landed and left half-done.
        self.move_to = self._folder(cfg.move_to, "move_to") if cfg.after_action in ("move", "both") else None
        self.rejected_to = self._folder(cfg.rejected_folder, "rejected_folder") if cfg.rejected_folder else None
        self.tally.set_phase("listing")
        # Server-side where Graph can: unread when mails are marked read after ingestion; with attachments
        # unless inline ones are wanted (Graph's hasAttachments ignores them) or attachment-less mails
        # must be seen to be moved to the rejected folder. Everything else is decided here.
        listing = self.mail.list_messages(
            self.box, folder_id, unread_only=cfg.after_action in ("mark_read", "both"),
            with_attachments=not self.rules.needs_inline and not self.rejected_to, page_size=self.page_size)
        # The whole listing first, then the work: Graph pages with $skip, so marking mails read (or moving
        # them) while paging would shift the later pages and skip mails. Metadata only, so it stays small.
        messages = sorted(itertools.islice(listing, MAX_LISTED), key=lambda m: (m.received_at, m.id))
        self.tally.summary.listed = len(messages)
        self.tally.set_phase("transferring")
        for page in _batches(messages, self.page_size):
            self._page(page)
            if self._stop or self._worked >= self.max_messages:
                break
        if not self._stop and len(messages) < MAX_LISTED:
            self._finish_tidied({self._message_id(m) for m in messages})

    def _finish_tidied(self, listed: set[str]) -> None:
        """LANDED entries of mails no longer in the folder (moved, or marked read where only unread mails are
        listed): DONE (`Landing.finish_gone`). Called after a whole listing only (fewer than MAX_LISTED mails)."""
        prefix = f"{self.box.lower()}/"
        self.landing.finish_gone(
            lambda e: e.path.startswith(prefix) and not _listed(e.path[len(prefix):], listed),
            limit=_TIDIED_PER_POLL, span_name="mail.finish_tidied",
            why=lambda e: f"the mail of {display_name(e.path.rsplit('/', 1)[-1])} is no longer in {self.cfg.folder}; "
                          f"its after-action ({self.cfg.after_action}) is taken as done, ledger DONE")

    def _page(self, page: list[MailMessage]) -> None:
        accepted: list[MailMessage] = []
        refused: list[tuple[MailMessage, str, str]] = []
        for msg in page:
            decision = self.rules.check_message(msg.sender, msg.subject)
            if decision.accepted:
                accepted.append(msg)
            else:
                reason = "sender_not_allowed" if decision.reason.startswith("sender") else "subject_mismatch"
                refused.append((msg, reason, decision.reason))
        if refused:
            known = self.landing.lookup(self._message_arrival(m) for m, _, _ in refused)
            for msg, reason, text in refused:
                self._reject(msg, reason, text, known.get(self._message_arrival(msg).key))
        for msg in accepted:
            if self._stop or self._worked >= self.max_messages:
                return
            self._worked += 1
            self.tally.current = self._what(msg)
            try:
                self._message(msg)
            except NotFoundError:
                # Moved or deleted (by a person or another poller) since the listing: nothing to do.
                self.tally.skipped(self._what(msg), 0, "vanished")

    def _reject(self, msg: MailMessage, reason: str, text: str, entry: LedgerEntry | None) -> None:
        """Refused by rule: recorded REJECTED and logged once; moved to rejected_folder when there is one."""
        what = self._what(msg)
        if entry is not None:
            self.tally.skipped(what, 0, "already_rejected", detail=False)
        else:
            try:
                self._s.ledger.create(self.landing.new_entry(self._message_arrival(msg), state=LedgerState.REJECTED,
                                                             error=text))
            except ConflictError:
                self.tally.skipped(what, 0, "already_rejected", detail=False)  # another poller logged it
            else:
                log.warning("mail %r from %s in %s rejected: %s%s", what, msg.sender or "(no sender)", self.box,
                            text, f"; moving it to {self.cfg.rejected_folder}" if self.rejected_to else "",
                            extra=log_fields(partner=self.partner, channel=CHANNEL, reason=reason))
                self.tally.skipped(what, 0, reason)
        if self.rejected_to:
            try:
                self.mail.move(self.box, msg.id, self.rejected_to)
            except NotFoundError:
                pass
            except WharfError as exc:
                log.warning("could not move rejected mail %r: %s; the next poll retries", what, exc,
                            extra=log_fields(partner=self.partner, channel=CHANNEL))

    def _message(self, msg: MailMessage) -> None:
        attachments = self.mail.list_attachments(self.box, msg.id)
        wanted: list[_Wanted] = []
        too_big: list[tuple[Arrival, str]] = []
        for att in attachments:
            name = item_file_name(att.name or "attachment") if att.kind == "item" else att.name
            decision = self.rules.check_attachment(sanitize_name(name), kind=att.kind, is_inline=att.is_inline,
                                                   size=att.size)
            if decision.accepted:
                wanted.append(_Wanted(att, self._arrival(msg, att, name)))
            elif decision.verdict is Verdict.REJECT:
                too_big.append((self._arrival(msg, att, name), decision.reason))
        entries = self.landing.lookup([w.arrival for w in wanted] + [a for a, _ in too_big])
        for arrival, reason in too_big:
            entry = entries.get(arrival.key)
            if entry is None:
                stored = self.landing.skip(arrival, reason)  # a failed job and one log line, once
                self.tally.skipped(self._what(msg, arrival.name), arrival.size, "over_size",
                                   stored.job_id if stored else "")
        if not wanted:
            text = ("every matching attachment is over max_attachment_bytes" if too_big
                    else "no attachment matches the partner's rules")
            known = self.landing.lookup([self._message_arrival(msg)])
            self._reject(msg, "no_matching_attachment", text, known.get(self._message_arrival(msg).key))
            return

        complete = True
        to_finish: list[LedgerEntry] = []
        for w in wanted:
            if self._stop:
                return
            what = self._what(msg, w.arrival.name)
            entry = entries.get(w.arrival.key)
            plan = self.landing.plan(entry)
            claim: Claim | None = None
            if plan.action == "done":
                self.tally.skipped(what, w.arrival.size, "already_ingested", detail=False)
                continue
            if plan.action == "finish" and entry is not None:
                to_finish.append(entry)  # landed before; only the after-action is left
                self.tally.skipped(what, w.arrival.size, "already_ingested", entry.job_id, detail=False)
                continue
            if plan.action == "claim":
                claim, why = self.landing.claim_one(w.arrival)
                if claim is None:
                    complete = False
                    self.tally.skipped(what, w.arrival.size, why)
                    continue
            elif plan.action == "take_over" and entry is not None:
                claim = self.landing.take_over(w.arrival, entry)
                if claim is None:
                    complete = False
                    self.tally.skipped(what, w.arrival.size, "claimed_elsewhere")
                    continue
            else:
                complete = False  # claimed by another poller, or given up after max_attempts
                self.tally.skipped(what, w.arrival.size, plan.reason or plan.action,
                                   entry.job_id if entry else "", detail=plan.reason != "already_skipped")
                continue
            if self._land(msg, w, claim):
                to_finish.append(claim.entry)
            else:
                complete = False
        # The after-action only once every wanted attachment is in: a mail that failed midway stays
        # where it is (unread) and the next poll lands only what is missing.
        if complete and self._after_action(msg):
            fault_point("mail.after_action")
            for entry in to_finish:
                if entry.state is LedgerState.LANDED:
                    self.landing.finish(entry)

    def _land(self, msg: MailMessage, w: _Wanted, claim: Claim) -> bool:
        att, e = w.attachment, claim.entry
        what = self._what(msg, w.arrival.name)
        job = claim.job_id if claim.job_created else ""
        attrs = {"wharf.partner": self.partner, "wharf.job_id": e.job_id, "wharf.transfer_id": e.transfer_id,
                 "file.size": att.size, "wharf.attachment_kind": att.kind}
        with span("mail.attachment", attrs):
            try:
                self.landing.land(claim, lambda: self.mail.open_attachment(self.box, msg.id, att.id),
                                  on_bytes=self.tally.add_bytes)
            except NotFoundError as exc:
                self.landing.fail(claim, str(exc), gone=True)
                self.tally.skipped(what, att.size, "vanished", job)
                return False
            except DependencyUnavailableError as exc:
                # Graph is failing or throttling us past the retry budget: stop this poll, let the breaker count it.
                self.landing.fail(claim, str(exc))
                self.tally.source_failed = str(exc)
                self._stop = True
                self.tally.failed(what, att.size, "graph_unavailable", claim.job_id if claim.job_created else "",
                                  message=str(exc))
                return False
            except (ClaimLostError, AzureError, WharfError) as exc:
                if storage_unavailable(exc):
                    # Storage is gone: stop the poll now (the claim expires with its lease; nothing else written).
                    log.error("mail poll of %s stopped: storage unavailable: %s; the next poll takes %s over",
                              self.partner, one_line(exc), what, extra=log_fields(claim.job_id, partner=self.partner))
                    raise
                log.warning("landing %s failed: %s", what, one_line(exc), exc_info=log.isEnabledFor(logging.DEBUG),
                            extra=log_fields(claim.job_id, partner=self.partner))
                self.landing.fail(claim, str(exc))
                self.tally.failed(what, att.size, "storage_error" if isinstance(exc, AzureError) else "error",
                                  claim.job_id if claim.job_created else "", message=str(exc))
                return False
        self.tally.landed(what, att.size, claim.job_id, f"{e.container}/{e.blob_path}")
        return True

    def _after_action(self, msg: MailMessage) -> bool:
        action = self.cfg.after_action
        with span("mail.after_action", {"wharf.partner": self.partner, "wharf.after_action": action}):
            try:
                if action in ("mark_read", "both"):
                    self.mail.mark_read(self.box, msg.id)
                if action in ("move", "both") and self.move_to:
                    self.mail.move(self.box, msg.id, self.move_to)
            except NotFoundError:
                return True  # moved or deleted meanwhile: nothing left to tidy
            except WharfError as exc:
                log.warning("after-action %s of mail %r failed: %s; the next poll retries it", action,
                            self._what(msg), exc, extra=log_fields(partner=self.partner, channel=CHANNEL))
                if isinstance(exc, DependencyUnavailableError):
                    self.tally.source_failed = str(exc)
                return False
        return True


#: The name the poll dispatcher (shared.services.scheduling.poller) looks up for every channel.
poll_partner = poll_mailbox

__all__ = ["CHANNEL", "poll_mailbox", "poll_partner"]
