"""The routes block: which processed files go where (blob, SFTP, email, event)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from shared.catalog.common import (
    AbsPath,
    Email,
    Glob,
    PartnerId,
    Regex,
    SecretName,
    Template,
    _container,
    _mailbox_id,
    _match,
    _Model,
    _template,
)
from shared.catalog.errors import Loc, _Invalid
from shared.catalog.mailbox import MailboxAuth
from shared.domain.delivery import DEFAULT_REMOTE_NAME, check_remote_name
from shared.domain.routing import DEFAULT_BLOB_PATH

_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)+")
_EVENT_MESSAGE = "must be a dotted lowercase event type such as file.processed"

FileType = Literal["csv", "json", "xml", "binary"]


def _blob_path(value: str) -> str:
    _template(value)
    if value.startswith("/") or value.endswith("/"):
        raise ValueError("must not start or end with /")
    if "\\" in value:
        raise ValueError("must use / as the separator")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("must not contain empty, . or .. segments")
    return value


class RouteMatch(_Model):
    """Which files a route takes; every condition given must hold."""

    file_glob: Glob = "*"
    file_regex: Regex | None = None
    type: FileType | None = None


def _temp_part(value: str) -> str:
    if "/" in value or "\\" in value:
        raise ValueError("must not contain / or \\: the temporary file stays in the destination folder")
    return value


class PgpOutbound(_Model):
    """OpenPGP on an outbound file: encrypt it to the key(s) in `encrypt_to_secret`, optionally sign it with the
    secret key in `sign_with_secret` (its passphrase in `sign_passphrase_secret`); binary unless `armor`."""

    encrypt_to_secret: SecretName
    sign_with_secret: SecretName | None = None
    sign_passphrase_secret: SecretName | None = None
    armor: bool = False
    compress: bool = True
    suffix: Annotated[str, AfterValidator(_temp_part)] = ".pgp"


class BlobDestination(_Model):
    """A blob path template in a container. `on_exists` when the path holds another job's blob: fail (the
    default: the job fails naming the blob and its job), overwrite (the earlier job gets a file.superseded
    event) or unique (`name.2.ext`, `name.3.ext`, ...). A retry of the same job reuses its own blob."""

    kind: Literal["blob"] = "blob"
    container: Annotated[str, AfterValidator(_container)] = "processed"
    path: Annotated[str, AfterValidator(_blob_path)] = DEFAULT_BLOB_PATH
    on_exists: Literal["fail", "overwrite", "unique"] = "fail"
    pgp: PgpOutbound | None = None  # trust (#18): the blob written is the encrypted (and signed) output


def _remote_name(value: str) -> str:
    _template(value)
    return check_remote_name(value)


class SftpDestination(_Model):
    """Upload to another partner's SFTP server (its `sftp` block: host, pinned keys, login), into `folder` or its
    `sftp.outbound_dir`, under the name template `name` (placeholders as blob paths; sanitised; it cannot leave
    the folder). The file goes up under a temporary name (`{temp_prefix}{name}.{tag}{temp_suffix}`, suffix
    `.part` by default), is verified (size, and sha256 with `verify: sha256` where the server offers check-file)
    and renamed into place. `on_exists`: fail (the default), overwrite, or unique (`name.2.ext`, ...)."""

    kind: Literal["sftp"] = "sftp"
    partner: PartnerId
    folder: AbsPath | None = None
    name: Annotated[str, AfterValidator(_remote_name)] = DEFAULT_REMOTE_NAME
    temp_prefix: Annotated[str, AfterValidator(_temp_part)] | None = None
    temp_suffix: Annotated[str, AfterValidator(_temp_part)] | None = None
    on_exists: Literal["overwrite", "fail", "unique"] = "fail"
    verify: Literal["size", "sha256"] = "size"
    pgp: PgpOutbound | None = None  # trust branch (#18): encrypt/sign before upload (services/pgp.py)


#: Graph's limit on the recipients of one message (to + cc + bcc).
MAX_RECIPIENTS = 500
DEFAULT_EMAIL_BODY = "Wharf job {job_id}: {name} from {partner}, attached."


class EmailDestination(_Model):
    """Send the job's output by email through Microsoft Graph from the sender `mailbox` (application permission
    Mail.Send, plus Mail.ReadWrite for drafts, Sent Items and the status checks). Subject and bodies are templates
    with the blob routes' placeholders. `attach: file` attaches the file (inline in sendMail up to 3 MB, through a
    draft and an upload session up to 150 MiB, refused above); `attach: link` sends a download link valid for
    `link_expiry_hours` instead when the file is over 150 MiB. `receipt: true` asks for delivery receipts. `auth`
    is the app registration; without it, the one of the partner whose mailbox block reads the same mailbox.
    `pgp` (PgpOutbound) attaches the output encrypted (and signed) under its name with the suffix."""

    kind: Literal["email"] = "email"
    to: Annotated[list[Email], Field(min_length=1)]
    cc: list[Email] = Field(default_factory=list)
    bcc: list[Email] = Field(default_factory=list)
    subject: Template = "{partner}: {name}"
    body: Template = DEFAULT_EMAIL_BODY
    html_body: Template | None = None
    mailbox: Annotated[str, AfterValidator(_mailbox_id)]
    attach: Literal["file", "link"] = "file"
    link_expiry_hours: Annotated[int, Field(ge=1, le=168)] = 72  # a user delegation key lives 7 days at most
    receipt: bool = False
    auth: MailboxAuth | None = None
    pgp: PgpOutbound | None = None  # trust (#18): the attachment is the encrypted (and signed) output

    @model_validator(mode="after")
    def _check(self) -> EmailDestination:
        problems: list[tuple[Loc, str]] = []
        total = len(self.to) + len(self.cc) + len(self.bcc)
        if total > MAX_RECIPIENTS:
            problems.append((("to",), f"to, cc and bcc name {total} recipients; Graph sends to at most "
                                      f"{MAX_RECIPIENTS}"))
        if "\n" in self.subject or "\r" in self.subject:
            problems.append((("subject",), "must be one line"))
        if problems:
            raise _Invalid(*problems)
        return self


class EventDestination(_Model):
    kind: Literal["event"] = "event"
    type: Annotated[str, AfterValidator(lambda v: _match(v, _EVENT_TYPE, _EVENT_MESSAGE))] = "file.processed"


#: The destination kinds Wharf itself provides; any other `kind:` must be registered by a plugin
#: (shared.plugins, entry point group wharf.destinations).
_DESTINATION_KINDS = ("blob", "sftp", "email", "event")
_PLUGIN_TAG = "plugin"


class PluginDestination(_Model):
    """A destination of a kind a plugin registers (`wharf plugins list`). Its other keys are checked against the
    kind's `Options` model when the catalogue loads; an unregistered kind is a catalogue error."""

    model_config = ConfigDict(extra="allow", frozen=True)
    union_tag: ClassVar[str] = _PLUGIN_TAG

    kind: str

    @model_validator(mode="after")
    def _registered(self) -> PluginDestination:
        from shared.plugins import destination_kind
        from shared.services.destinations import UnknownDestinationError

        try:
            kind = destination_kind(self.kind)
        except UnknownDestinationError as exc:
            raise _Invalid((("kind",), f"{exc} (a plugin kind must be installed where Wharf runs)")) from None
        try:
            kind.Options.model_validate(dict(self.model_extra or {}))
        except ValidationError as exc:
            raise _Invalid(*[(tuple(e["loc"]), e["msg"][:1].lower() + e["msg"][1:]) for e in exc.errors()]) from None
        return self


def _destination_tag(value: Any) -> str | None:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    if kind is None:
        return None
    return kind if kind in _DESTINATION_KINDS else _PLUGIN_TAG


Destination = Annotated[
    Annotated[BlobDestination, Tag("blob")] | Annotated[SftpDestination, Tag("sftp")]
    | Annotated[EmailDestination, Tag("email")] | Annotated[EventDestination, Tag("event")]
    | Annotated[PluginDestination, Tag(_PLUGIN_TAG)],
    Discriminator(_destination_tag),
]


class Route(_Model):
    """Where processed files go: the first matching non-default route, else the default (domain/routing.py)."""

    name: Annotated[
        str,
        AfterValidator(lambda v: _match(v, _ROUTE_NAME, "must be 1-64 letters, digits, dashes and underscores")),
    ]
    match: RouteMatch = Field(default_factory=RouteMatch)
    default: bool = False
    destinations: Annotated[list[Destination], Field(min_length=1)]
