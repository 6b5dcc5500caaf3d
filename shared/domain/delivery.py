"""Outbound deliveries: one record per (job, destination), and the remote names an SFTP delivery writes (pure)."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.domain.ids import job_partition
from shared.domain.routing import fill_placeholders
from shared.domain.sanitize import MAX_SEGMENT_BYTES, sanitize_name

#: The remote name of an SFTP delivery unless its route says otherwise: the processed file's own name.
DEFAULT_REMOTE_NAME = "{name}"
#: What an SFTP delivery's temporary name ends with unless `temp_suffix` / `temp_prefix` say otherwise.
DEFAULT_TEMP_SUFFIX = ".part"
#: What an SFTP delivery does when its final name is taken (`on_exists`).
SFTP_ON_EXISTS = ("overwrite", "fail", "unique")
DEFAULT_SFTP_ON_EXISTS = "fail"
_TAG_HEX = 8


class DeliveryState(StrEnum):
    PENDING = "PENDING"  # recorded, nothing sent yet
    SENDING = "SENDING"  # an attempt is (or was, if it crashed) under way
    SENT = "SENT"  # in place under its final name, verified (email: accepted by Graph for sending)
    FAILED = "FAILED"  # the last attempt failed (`error`); the next attempt of the same delivery takes it over
    # Email only, from the sender mailbox's delivery status notifications (after SENT):
    DELIVERED = "DELIVERED"  # a delivery receipt / success DSN for every recipient that reported
    BOUNCED = "BOUNCED"  # a non-delivery report (`status_code`, `status_detail`)
    DELAYED = "DELAYED"  # a delay notification; a later DELIVERED or BOUNCED replaces it


#: States an email delivery is in once it left Wharf (a status check may still move it).
AFTER_SENT = frozenset({DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.BOUNCED, DeliveryState.DELAYED})


class DeliveryStep(StrEnum):
    """How far a SENDING attempt got: what a retry after a crash has to look for on the server."""

    NONE = ""
    UPLOADING = "UPLOADING"  # writing the temporary file
    RENAMING = "RENAMING"  # the temporary file was verified; renaming it to `remote_path`
    # Email: `message_id` is recorded before any of these, so a retry can look for the message.
    COMPOSING = "COMPOSING"  # creating the draft (a crash may leave one, found by its internetMessageId)
    SUBMITTING = "SUBMITTING"  # sendMail or the draft's send was called; a retry looks in Sent Items first


@dataclass(frozen=True)
class Delivery:
    """One row of the Deliveries table: PartitionKey the job group, RowKey the job suffix + destination index.

    `kind` is the destination kind (blob, event, sftp, email, or a plugin's); for kinds that are not SFTP,
    `remote_path` is where the delivery went (its file.routed `target`). For SFTP `remote_path` is the final
    name (for `on_exists: unique`, the candidate being renamed to), `temp_path` the temporary one; `verified`
    says what was checked before the rename (`size`, `size+sha256`, or why sha256 was not). `etag` is the
    stored version: every update is conditional on it."""

    job_id: str
    index: int
    partner: str  # the job's partner
    kind: str  # the destination kind (sftp, email)
    target: str  # the receiving partner (sftp), the recipients (email)
    route: str = ""
    state: DeliveryState = DeliveryState.PENDING
    step: DeliveryStep = DeliveryStep.NONE
    remote_path: str = ""
    temp_path: str = ""
    bytes: int = 0
    sha256: str = ""
    attempts: int = 0
    error: str = ""
    verified: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    sent_at: datetime | None = None
    #: The destination index this record re-sends on purpose (`wharf redeliver`), None for the route's own.
    redelivery_of: int | None = None
    # Email only: the client-generated internetMessageId (stored before sending), the draft of a large message,
    # what the status checks last heard (`status_code` e.g. 5.1.1, `status_detail` the diagnostic) and when.
    message_id: str = ""
    draft_id: str = ""
    status_code: str = ""
    status_detail: str = ""
    status_at: datetime | None = None
    etag: str = ""

    @property
    def keys(self) -> tuple[str, str]:
        return delivery_keys(self.job_id, self.index)


def delivery_keys(job_id: str, index: int) -> tuple[str, str]:
    """(PartitionKey, RowKey) of a job's delivery: the job's group, and its suffix + the destination index."""
    if index < 0 or index > 999:
        raise ValueError(f"destination index {index} is out of range 0-999")
    group, suffix = job_partition(job_id)
    return group, f"{suffix}-{index:03d}" if suffix else f"{index:03d}"


def delivery_tag(job_id: str, index: int) -> str:
    """A short tag that names one delivery in its temporary file name: a temp file with it is this delivery's."""
    return hashlib.sha256(f"{job_id}/{index}".encode()).hexdigest()[:_TAG_HEX]


def check_remote_name(template: str) -> str:
    """A remote name template stays inside its folder: relative, `/`-separated, no empty, `.` or `..` segment
    (placeholder values are sanitised into single segments, so only the template's own text could escape)."""
    if template.startswith("/"):
        raise ValueError("must be relative to the destination folder: it must not start with /")
    if "\\" in template:
        raise ValueError("must use / as the separator")
    if any(part in ("", ".", "..") for part in template.split("/")):
        raise ValueError("would leave the destination folder (outbound_dir): no empty, . or .. segments")
    return template


def render_remote_path(folder: str, template: str, *, partner: str, name: str, job_id: str,
                       when: datetime) -> str:
    """`folder` + the filled name template, every segment sanitised (`sanitize_name`). Placeholder values are
    sanitised before they are put in, so a `/` or `..` in a file name never makes a folder or leaves `folder`."""
    check_remote_name(template)
    rendered = fill_placeholders(template, partner=partner, name=name, job_id=job_id, when=when,
                                 what="remote name template", clean=lambda value: sanitize_name(value) if value else "")
    segments = [sanitize_name(part) for part in rendered.split("/")]
    base = folder.rstrip("/") or ""
    path = f"{base}/{'/'.join(segments)}"
    if not path.startswith(base + "/") or any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"remote name template '{template}' produced a path outside {folder}")
    return path


def temp_path(final: str, tag: str, *, prefix: str | None = None, suffix: str | None = None) -> str:
    """The temporary name a delivery uploads to, beside `final`: `{prefix}{name}.{tag}{suffix}`. The suffix is
    `.part` unless a prefix (or another suffix) is configured; the tag makes the file this delivery's."""
    folder, name = posixpath.split(final)
    prefix = prefix or ""
    suffix = suffix if suffix is not None else ("" if prefix else DEFAULT_TEMP_SUFFIX)
    extra = f"{prefix}.{tag}{suffix}".encode()
    room = MAX_SEGMENT_BYTES - len(extra)
    encoded = name.encode("utf-8")
    if len(encoded) > room:
        name = encoded[:room].decode("utf-8", "ignore")
    return posixpath.join(folder, f"{prefix}{name}.{tag}{suffix}")
