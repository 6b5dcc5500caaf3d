"""The mailbox block: the mailbox folder Wharf reads partner attachments from, through Microsoft Graph."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from shared.catalog.common import (
    _DOMAIN,
    _EMAIL,
    _GUID,
    DEFAULT_SCHEDULE,
    MIB,
    AttachmentSize,
    Glob,
    Regex,
    Schedule,
    SecretName,
    _mailbox_id,
    _Model,
)
from shared.catalog.errors import Loc, _Invalid

_SENDER_DOMAIN = re.compile(r"\*@" + _DOMAIN)
_TENANT = re.compile(_DOMAIN + r"\.[A-Za-z]{2,}")


def _sender(value: str) -> str:
    if not (_EMAIL.fullmatch(value) or _SENDER_DOMAIN.fullmatch(value)):
        raise ValueError("must be an email address (name@example.com) or a whole domain (*@example.com)")
    return value.lower()


def _guid(value: str) -> str:
    if not _GUID.fullmatch(value):
        raise ValueError("must be a GUID such as 00000000-0000-0000-0000-000000000000")
    return value.lower()


def _tenant(value: str) -> str:
    if not (_GUID.fullmatch(value) or _TENANT.fullmatch(value)):
        raise ValueError("must be a tenant GUID or a domain such as contoso.onmicrosoft.com")
    return value


def _folder(value: str) -> str:
    parts = value.split("/")
    if not all(p.strip() for p in parts):
        raise ValueError("must be a folder path such as Inbox/Partners/Acme (no empty segments)")
    return value


FolderPath = Annotated[str, AfterValidator(_folder)]


class MailboxAuth(_Model):
    """Entra app registration used to read the mailbox through Microsoft Graph."""

    tenant_id: Annotated[str, AfterValidator(_tenant)]
    client_id: Annotated[str, AfterValidator(_guid)]
    client_secret_secret: SecretName | None = None
    certificate_secret: SecretName | None = None

    @model_validator(mode="after")
    def _check(self) -> MailboxAuth:
        if self.client_secret_secret and self.certificate_secret:
            raise ValueError("give client_secret_secret or certificate_secret, not both")
        if not (self.client_secret_secret or self.certificate_secret):
            raise ValueError("needs client_secret_secret or certificate_secret (a Key Vault secret name)")
        return self


class Mailbox(_Model):
    """A mailbox folder Wharf reads partner attachments from, through Microsoft Graph."""

    mailbox: Annotated[str, AfterValidator(_mailbox_id)]
    folder: FolderPath = "Inbox"
    sender_allow: Annotated[list[Annotated[str, AfterValidator(_sender)]], Field(min_length=1)]
    subject_regex: Regex | None = None
    attachment_globs: Annotated[list[Glob], Field(min_length=1)] = Field(default_factory=lambda: ["*"])
    max_attachment_bytes: AttachmentSize = 150 * MIB
    after_action: Literal["mark_read", "move", "both"] = "mark_read"
    move_to: FolderPath | None = None
    rejected_folder: FolderPath | None = None
    item_attachments: Literal["skip", "keep"] = "skip"
    inline_images: Literal["skip", "keep"] = "skip"
    schedule: Schedule = DEFAULT_SCHEDULE
    auth: MailboxAuth

    @model_validator(mode="after")
    def _check(self) -> Mailbox:
        problems: list[tuple[Loc, str]] = []
        if self.after_action in ("move", "both") and not self.move_to:
            problems.append((("move_to",), f"is required when after_action is {self.after_action}"))
        if self.move_to and self.after_action == "mark_read":
            problems.append((("move_to",), "is only used when after_action is move or both (it is mark_read)"))
        for field in ("move_to", "rejected_folder"):
            if getattr(self, field) and getattr(self, field).lower() == self.folder.lower():
                problems.append(((field,), "must differ from folder, or the same mails would be read again"))
        if problems:
            raise _Invalid(*problems)
        return self
