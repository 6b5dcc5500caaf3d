"""The routes block: which processed files go where (blob, SFTP, email, event)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from shared.catalog.common import (
    AbsPath,
    Email,
    Glob,
    PartnerId,
    Regex,
    Template,
    _container,
    _mailbox_id,
    _match,
    _Model,
    _template,
)

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


class BlobDestination(_Model):
    kind: Literal["blob"] = "blob"
    container: Annotated[str, AfterValidator(_container)] = "processed"
    path: Annotated[str, AfterValidator(_blob_path)] = "{partner}/{yyyy}/{MM}/{dd}/{name}"


class SftpDestination(_Model):
    kind: Literal["sftp"] = "sftp"
    partner: PartnerId
    folder: AbsPath | None = None


class EmailDestination(_Model):
    kind: Literal["email"] = "email"
    to: Annotated[list[Email], Field(min_length=1)]
    subject: Template = "{partner}: {name}"
    mailbox: Annotated[str, AfterValidator(_mailbox_id)]


class EventDestination(_Model):
    kind: Literal["event"] = "event"
    type: Annotated[str, AfterValidator(lambda v: _match(v, _EVENT_TYPE, _EVENT_MESSAGE))] = "file.processed"


Destination = Annotated[
    BlobDestination | SftpDestination | EmailDestination | EventDestination, Field(discriminator="kind")
]
_DESTINATION_KINDS = ("blob", "sftp", "email", "event")


class Route(_Model):
    """Where processed files go: the first matching non-default route, else the default (domain/routing.py)."""

    name: Annotated[
        str,
        AfterValidator(lambda v: _match(v, _ROUTE_NAME, "must be 1-64 letters, digits, dashes and underscores")),
    ]
    match: RouteMatch = Field(default_factory=RouteMatch)
    default: bool = False
    destinations: Annotated[list[Destination], Field(min_length=1)]
