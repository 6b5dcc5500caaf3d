"""Outbound delivery by email through Microsoft Graph, exactly once per (job, destination index).

The Deliveries record (kind `email`) is the one SFTP uses: PENDING -> SENDING -> SENT, or FAILED with the reason;
the status checks (shared/services/delivery_status.py) move a SENT one on to DELIVERED, BOUNCED or DELAYED.

Exactly once: the record gets a client-generated internetMessageId when it is created, before anything is sent,
and the attempt writes its step before each call that cannot be taken back (`COMPOSING` before a draft is
created, `SUBMITTING` before sendMail or the draft's send). A retry after a crash that finds a step looks in the
sender's Sent Items for that internetMessageId first: found, the delivery is SENT without sending again. A draft
left in Drafts by an attempt that died while composing or uploading is deleted and composed again; one that died
after its upload was complete (SUBMITTING) is sent as it is (reused). Files under 3 MB go inline in one sendMail;
larger ones through a draft and an attachment upload session (chunked PUTs, memory: one chunk); above Graph's
150 MiB either a time-limited download link (`attach: link`) or a permanent refusal.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.adapters.graph_mail import INLINE_ATTACHMENT_LIMIT, UPLOAD_CHUNK, UPLOAD_SESSION_LIMIT, GraphRequestError
from shared.catalog.model import sender_auth
from shared.catalog.routes import EmailDestination
from shared.domain.delivery import AFTER_SENT, Delivery, DeliveryState, DeliveryStep
from shared.domain.errors import ConfigurationError, ConflictError, DependencyUnavailableError, NotFoundError
from shared.domain.jobs import FileTransfer, Job, utcnow
from shared.domain.routing import fill_placeholders
from shared.domain.sanitize import display_name, sanitize_name
from shared.faults import fault_point
from shared.metrics import record_failure, record_transfer
from shared.observability.redaction import redact
from shared.observability.tracing import current_trace_id, log_fields, span
from shared.ports import FileToAttach, MailSender, OutgoingMail
from shared.services.breaker import CircuitBreaker
from shared.services.deliver import DeliveryFailedError, DeliveryRefusedError, DeliveryUnavailableError

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

#: The breaker channel of outbound email, per sender mailbox: its own records, so a failing inbound mail poll of a
#: mailbox does not stop deliveries from it, nor the other way round (as `sftp-out` for SFTP).
CHANNEL = "email-out"
#: What a Deliveries row says about how the message carried the file (`Verified` column of SFTP rows).
INLINE, UPLOAD_SESSION, LINK = "sendMail inline", "draft + upload session", "download link"
_CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson",
                  "xml": "application/xml", "txt": "text/plain"}


@dataclass(frozen=True)
class EmailOptions:
    """How long a retry looks for a message in Sent Items before it concludes the send never happened (Sent
    Items is written when Exchange accepts the message, usually within a second or two)."""

    sent_lookups: int = 3
    sent_lookup_wait: float = 2.0
    chunk_size: int = UPLOAD_CHUNK
    breaker_threshold: int = 5  # the inbound poll's and SFTP delivery's defaults
    breaker_cooldown: timedelta = timedelta(minutes=5)
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class EmailPlan:
    dest: EmailDestination
    mail: OutgoingMail  # without the message id (it is the record's)
    target: str
    container: str
    blob_path: str
    name: str
    size: int
    sha256: str
    content_type: str
    route: str
    auth: Any


def internet_message_id(job_id: str, index: int, mailbox: str) -> str:
    """`<wharf.{job}.{index}.{nonce}@{sender domain}>`: unique per delivery record, and it names the delivery, so a
    status report that quotes it finds the record (which must hold the very same id)."""
    domain = mailbox.rpartition("@")[2] if "@" in mailbox else "wharf.invalid"
    return f"<wharf.{job_id}.{index:03d}.{uuid.uuid4().hex[:12]}@{domain.lower()}>"


def parse_message_id(message_id: str) -> tuple[str, int] | None:
    """(job id, destination index) from an internetMessageId Wharf generated, else None."""
    local = message_id.strip().strip("<>").partition("@")[0]
    parts = local.split(".")
    if len(parts) != 4 or parts[0] != "wharf" or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2])


def plan_email(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
               dest: Mapping[str, Any]) -> EmailPlan:
    route = str(ref.get("route", ""))
    model = _catalogued(services, job.partner, route, int(ref.get("index", 0)), dest)
    if model is None:  # the catalogue changed since the route was planned: what the plan says, without `auth`
        try:  # (secret-named fields are redacted on their way through the orchestration history)
            model = EmailDestination.model_validate({k: v for k, v in dest.items() if v is not None and k != "auth"})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(f"route '{route}': email destination: {problems}") from None
    auth = sender_auth(services.catalog.partners, model)
    if auth is None:
        raise ConfigurationError(f"route '{route}': email destination from {model.mailbox} has no auth and no "
                                 "partner's mailbox block reads that mailbox")
    name = str(output["name"])
    values = {"partner": job.partner, "name": name, "job_id": job.job_id, "when": job.created_at}

    def fill(template: str, what: str) -> str:
        try:
            return fill_placeholders(template, what=what, **values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigurationError(f"route '{route}': {exc}") from None

    html = model.html_body is not None
    body = fill(model.html_body if model.html_body is not None else model.body, "email body")
    mail = OutgoingMail(internet_message_id="", subject=fill(model.subject, "email subject").replace("\n", " "),
                        body=body, html=html, to=tuple(model.to), cc=tuple(model.cc), bcc=tuple(model.bcc),
                        receipt=model.receipt)
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    content_type = str(output.get("content_type") or "") or _CONTENT_TYPES.get(ext, "application/octet-stream")
    return EmailPlan(dest=model, mail=mail, target=", ".join(model.to)[:400], container=str(output["container"]),
                     blob_path=str(output["path"]), name=sanitize_name(name) or "attachment",
                     size=int(output.get("bytes", 0)), sha256=str(output.get("sha256", "")),
                     content_type=content_type.split(";")[0].strip(), route=route, auth=auth)


def _catalogued(services: Services, partner_id: str, route: str, index: int,
                dest: Mapping[str, Any]) -> EmailDestination | None:
    """The catalogue's destination this delivery was planned from (same route, index and mailbox), else None."""
    try:
        partner = services.catalog.get(partner_id)
    except NotFoundError:
        return None
    for r in getattr(partner, "routes", None) or []:
        if r.name == route and index < len(r.destinations):
            found = r.destinations[index]
            if isinstance(found, EmailDestination) and found.mailbox == dest.get("mailbox"):
                return found
    return None


def deliver_email(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                  dest: Mapping[str, Any], *, opts: EmailOptions | None = None) -> dict[str, Any]:
    """Send the job's output to one email destination, exactly once per (job, destination index).

    Raises DeliveryRefusedError (Graph refused the message, or the file is over the attachment limit without
    `attach: link`), DependencyUnavailableError (Graph unreachable or throttled past the retries) or
    ConfigurationError; the Delivery is FAILED with the reason, and the next attempt takes it over."""
    if dest.get("pgp"):  # trust (#18): attach the staged ciphertext instead (shared/services/pgp.py)
        from shared.services.pgp import deliver_encrypted_email

        return deliver_encrypted_email(deliver_email, services, job, ref, output, dest, opts=opts)
    opts = opts or EmailOptions()
    index = int(ref.get("index", 0))
    plan = plan_email(services, job, ref, output, dest)
    attrs = {"wharf.job_id": job.job_id, "wharf.partner": job.partner, "wharf.destination": "email",
             "wharf.destination.index": index, "wharf.mailbox": plan.dest.mailbox, "file.size": plan.size,
             "wharf.recipients": len(plan.mail.to) + len(plan.mail.cc) + len(plan.mail.bcc)}
    with span("deliver.email", attrs) as s:
        run = _EmailRun(services, job, plan, _record(services, job, index, plan), opts)
        s.set_attribute("wharf.message_id", run.record.message_id)
        if run.record.state in AFTER_SENT:
            s.set_attribute("wharf.delivery.already_sent", True)
            log.info("email delivery already sent; not sent again", extra=run.fields())
            return run.result(already_sent=True)
        breaker = CircuitBreaker(services.breakers, CHANNEL, threshold=opts.breaker_threshold,
                                 cooldown=opts.breaker_cooldown, clock=opts.clock)
        decision = breaker.allow(plan.dest.mailbox)
        if not decision.allowed:
            reason = (f"circuit {CHANNEL} is open for sender {plan.dest.mailbox} after repeated failures (last: "
                      f"{redact(decision.last_error) or 'unknown'}); next try after {decision.retry_at}")
            unavailable = DeliveryUnavailableError(f"email delivery from {plan.dest.mailbox}", reason)
            run.failed(reason, unavailable)
            raise unavailable
        started = time.monotonic()
        try:
            run.attempt()
        except DependencyUnavailableError as exc:  # Graph unreachable, 5xx or throttled past the retries
            breaker.record_failure(plan.dest.mailbox, redact(str(exc)))
            run.failed(str(exc), exc)
            raise
        except (ConfigurationError, DeliveryFailedError) as exc:
            run.failed(str(exc), exc)
            raise
        except GraphRequestError as exc:
            error = DeliveryRefusedError(f"Graph refused the message from {plan.dest.mailbox}: {exc}; nothing was "
                                         "sent")
            run.failed(str(error), error)
            raise error from exc
        except NotFoundError as exc:
            missing = ConfigurationError(f"sender mailbox {plan.dest.mailbox}: {exc} (check the destination's "
                                       "mailbox and that the app may use it)")
            run.failed(str(missing), missing)
            raise missing from exc
        breaker.record_success(plan.dest.mailbox)
        record_transfer(job.partner, "email", time.monotonic() - started)
        s.set_attribute("wharf.email.method", run.record.verified)
        s.set_attribute("wharf.attempts", run.record.attempts)
        return run.result(already_sent=False)


def _record(services: Services, job: Job, index: int, plan: EmailPlan) -> Delivery:
    try:
        return services.deliveries.get(job.job_id, index)
    except NotFoundError:
        pass
    new = Delivery(job_id=job.job_id, index=index, partner=job.partner, kind="email", target=plan.target,
                   route=plan.route, bytes=plan.size, sha256=plan.sha256, created_at=utcnow(),
                   remote_path=plan.dest.mailbox,
                   message_id=internet_message_id(job.job_id, index, plan.dest.mailbox))
    try:
        return services.deliveries.create(new)
    except ConflictError:
        return services.deliveries.get(job.job_id, index)


class _EmailRun:
    """One activity run of one email delivery."""

    def __init__(self, services: Services, job: Job, plan: EmailPlan, record: Delivery, opts: EmailOptions) -> None:
        self._s, self.job, self.plan, self.record, self.opts = services, job, plan, record, opts
        self.box = plan.dest.mailbox
        self.mail = replace(plan.mail, internet_message_id=record.message_id)

    def fields(self, **extra: Any) -> dict[str, Any]:
        return log_fields(self.job.job_id, partner=self.job.partner, mailbox=self.box, index=self.record.index,
                          message_id=self.record.message_id, **extra)

    def save(self, **changes: Any) -> Delivery:
        self.record = self._s.deliveries.update(replace(self.record, **changes))
        return self.record

    def sender(self) -> MailSender:
        return self._s.mail_senders.open(self.box, self.plan.auth)

    # --- the attempt -----------------------------------------------------------------------------

    def attempt(self) -> None:
        rec = self.record
        method = self._method()
        self.save(state=DeliveryState.SENDING, attempts=rec.attempts + 1, error="", verified=method)
        sender = self.sender()
        if rec.step is not DeliveryStep.NONE and self._recovered(sender, rec):
            return
        if method == UPLOAD_SESSION:
            self._via_draft(sender)
        else:
            self._via_send_mail(sender, method)

    def _method(self) -> str:
        plan = self.plan
        if plan.size > UPLOAD_SESSION_LIMIT:
            if plan.dest.attach == "link":
                return LINK
            raise DeliveryRefusedError(
                f"{display_name(plan.name)} is {plan.size} bytes, over Graph's {UPLOAD_SESSION_LIMIT} byte (150 MiB) "
                "attachment limit; nothing was sent. Set attach: link on the destination to send a time-limited "
                "download link instead, or use an sftp or blob destination")
        return INLINE if plan.size < INLINE_ATTACHMENT_LIMIT else UPLOAD_SESSION

    def _recovered(self, sender: MailSender, rec: Delivery) -> bool:
        """After an attempt that got past PENDING: the message if it was sent (SENT, True), a draft it left
        (deleted, or sent when complete), else False (compose and send from the start)."""
        with span("deliver.email.recover", {"wharf.job_id": self.job.job_id, "wharf.step": rec.step.value}) as s:
            lookups = self.opts.sent_lookups if rec.step is DeliveryStep.SUBMITTING else 1
            for look in range(max(1, lookups)):
                if look:
                    self.opts.sleep(self.opts.sent_lookup_wait)
                if sender.find_by_internet_message_id(self.box, "sentitems", rec.message_id):
                    s.set_attribute("wharf.found_in", "sentitems")
                    self._sent(found=True)
                    return True
            drafts = sender.find_by_internet_message_id(self.box, "drafts", rec.message_id)
            if rec.step is DeliveryStep.SUBMITTING and rec.draft_id:
                if any(d.id == rec.draft_id for d in drafts):
                    s.set_attribute("wharf.found_in", "drafts")
                    log.info("reusing the complete draft an earlier attempt left; sending it", extra=self.fields())
                    self._submit(lambda: sender.send_draft(self.box, rec.draft_id))
                    return True
                # The draft left Drafts (a send moves it) but its copy is not in Sent Items yet.
                s.set_attribute("wharf.found_in", "none")
                log.warning("the draft of an earlier attempt is gone from Drafts and not yet in Sent Items; its send "
                            "is taken as done", extra=self.fields())
                self._sent(found=True)
                return True
            left = [d.id for d in drafts]
            if rec.draft_id and rec.draft_id not in left:
                left.append(rec.draft_id)  # recorded, though the search did not show it: delete it too
            for draft_id in left:
                log.info("deleting a draft an earlier attempt left", extra=self.fields(draft=draft_id))
                try:
                    sender.delete_message(self.box, draft_id)
                except NotFoundError:
                    pass
            if rec.step is DeliveryStep.SUBMITTING:
                log.warning("an earlier attempt was sending but its message is not in Sent Items after %d looks; "
                            "sending again", lookups, extra=self.fields())
            self.save(step=DeliveryStep.NONE, draft_id="")
            return False

    def _via_send_mail(self, sender: MailSender, method: str) -> None:
        mail, attachment = self.mail, None
        if method == LINK:
            link = self._s.blobs.download_link(self.plan.container, self.plan.blob_path,
                                               expires_in=timedelta(hours=self.plan.dest.link_expiry_hours))
            mail = _with_link(mail, self.plan, link.url, link.expires_at.isoformat(timespec="minutes"), link.kind)
            self.save(verified=f"{LINK} ({link.kind}, {self.plan.dest.link_expiry_hours} h)")
        else:
            attachment = self._attachment()
        with span("deliver.email.send_mail", {"wharf.job_id": self.job.job_id, "wharf.email.method": method}):
            self._submit(lambda: sender.send_mail(self.box, mail, attachment))

    def _via_draft(self, sender: MailSender) -> None:
        self.save(step=DeliveryStep.COMPOSING)
        with span("deliver.email.draft", {"wharf.job_id": self.job.job_id, "file.size": self.plan.size}) as s:
            draft_id = sender.create_draft(self.box, self.mail)
            fault_point("email.after_draft")
            self.save(step=DeliveryStep.UPLOADING, draft_id=draft_id)
            uploaded = sender.upload_attachment(self.box, draft_id, self._attachment(), chunk_size=self.opts.chunk_size)
            s.set_attribute("wharf.bytes_uploaded", uploaded)
        with span("deliver.email.send_draft", {"wharf.job_id": self.job.job_id}):
            self._submit(lambda: sender.send_draft(self.box, draft_id))

    def _submit(self, send: Callable[[], None]) -> None:
        self.save(step=DeliveryStep.SUBMITTING)
        send()
        fault_point("email.after_send")
        self._sent(found=False)

    def _attachment(self) -> FileToAttach:
        plan = self.plan
        return FileToAttach(name=plan.name, content_type=plan.content_type, size=plan.size,
                            chunks=_checked(self._s.blobs.open_ranges(plan.container, plan.blob_path,
                                                                      chunk_size=self.opts.chunk_size), plan))

    # --- outcomes --------------------------------------------------------------------------------

    def _sent(self, *, found: bool) -> None:
        self.save(state=DeliveryState.SENT, step=DeliveryStep.NONE, error="", sent_at=utcnow())
        self._transfer("SENT")
        how = "found in Sent Items after an earlier attempt; not sent again" if found else self.record.verified
        self._s.jobs.log(self.job.job_id, "INFO", f"emailed {self.plan.name} from {self.box} to {self.plan.target} "
                                                  f"({how})", trace_id=current_trace_id())
        log.info("email delivery sent", extra=self.fields(found_in_sent_items=found, bytes=self.plan.size,
                                                          attempts=self.record.attempts, method=self.record.verified))

    def failed(self, reason: str, exc: BaseException) -> None:
        reason = redact(reason)
        try:
            self.save(state=DeliveryState.FAILED, error=reason[:2000])
        except (ConflictError, NotFoundError):
            log.warning("email delivery failure not recorded: the record moved", extra=self.fields())
        record_failure(self.job.partner, "email", exc)
        self._s.jobs.log(self.job.job_id, "WARNING", f"email delivery {self.record.index} from {self.box} failed "
                                                     f"(attempt {self.record.attempts}): {reason}",
                         trace_id=current_trace_id())
        self._transfer("FAILED")
        log.warning("email delivery failed: %s", reason, extra=self.fields(attempts=self.record.attempts))

    def _transfer(self, status: str) -> None:
        self._s.jobs.add_transfer(FileTransfer(
            job_id=self.job.job_id, transfer_id=f"dl-{self.record.index:03d}", file_name=self.plan.name,
            source=f"{self.plan.container}/{self.plan.blob_path}", destination=f"email:{self.box}:{self.plan.target}",
            status=status, transfer_date=utcnow(), bytes=self.plan.size, sha256=self.plan.sha256))

    def result(self, *, already_sent: bool) -> dict[str, Any]:
        r = self.record
        return {"kind": "email", "target": f"email:{r.target}", "mailbox": self.box, "message_id": r.message_id,
                "bytes": r.bytes, "sha256": r.sha256, "method": r.verified, "attempts": r.attempts,
                "delivery": r.state.value, "already_sent": already_sent}


def _with_link(mail: OutgoingMail, plan: EmailPlan, url: str, expires: str, kind: str) -> OutgoingMail:
    size_mib = plan.size / (1024 * 1024)
    if mail.html:
        from html import escape

        extra = (f'<p>{escape(plan.name)} ({size_mib:.0f} MiB) is too large to attach: '
                 f'<a href="{escape(url, quote=True)}">download it</a> (the link works until {escape(expires)} '
                 'UTC).</p>')
    else:
        extra = (f"\n\n{plan.name} ({size_mib:.0f} MiB) is too large to attach. Download it (the link works until "
                 f"{expires} UTC):\n{url}\n")
    if kind != "user-delegation-sas":
        extra += ("\n(local stand-in: a service SAS signed with the storage account key)" if not mail.html
                  else "<p>(local stand-in: a service SAS signed with the storage account key)</p>")
    return replace(mail, body=mail.body + extra)


def _checked(chunks: Any, plan: EmailPlan) -> Any:
    """The blob's bytes on their way to Graph, hashed: a blob that changed since it was staged fails the upload
    (before the send) instead of sending other bytes than the job recorded."""
    import hashlib

    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if plan.sha256 and digest.hexdigest() != plan.sha256:
        raise DeliveryFailedError(f"{plan.container}/{plan.blob_path} read back with sha256 {digest.hexdigest()}, not "
                                  f"the {plan.sha256} recorded for it; nothing was sent")


__all__ = ["EmailOptions", "EmailPlan", "deliver_email", "internet_message_id", "parse_message_id", "plan_email"]
