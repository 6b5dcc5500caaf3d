"""Partner catalogue: pydantic models for partners.yaml and a loader whose errors say what to change."""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import json
import os
import re
import string
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from croniter import CroniterBadDateError, croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.domain.errors import ConfigurationError, NotFoundError
from shared.domain.globs import glob_match

__all__ = [
    "DEFAULT_SCHEDULE",
    "PLACEHOLDERS",
    "BlobDestination",
    "Catalog",
    "CatalogError",
    "ColumnSpec",
    "CsvSpec",
    "Destination",
    "EmailDestination",
    "EventDestination",
    "FileRule",
    "HostKey",
    "Mailbox",
    "MailboxAuth",
    "Partner",
    "PartnerNotFoundError",
    "Problem",
    "Processing",
    "Route",
    "RouteMatch",
    "SftpAuth",
    "SftpDestination",
    "SftpSource",
    "Transform",
    "format_problems",
    "glob_match",
    "load_catalog",
    "next_run",
    "parse_catalog",
    "parse_host_key",
]

Loc = tuple[str | int, ...]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# ---------------------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a catalogue: where (`partners[acme].sftp.port`), what, and the line if known."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class CatalogError(ConfigurationError):
    """The catalogue is invalid. `.problems` holds one line per problem; `str()` prefixes the file name."""

    def __init__(self, problems: Sequence[Problem | str], *, source: str = "<catalog>") -> None:
        self.details: list[Problem] = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        self.problems: list[str] = [str(p) for p in self.details]
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        lines = []
        for problem in self.details:
            where = f"{self.source}:{problem.line}" if problem.line else self.source
            lines.append(f"{where}: {problem}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


class PartnerNotFoundError(NotFoundError, KeyError):
    """`Catalog.get` was asked for a partner id the catalogue does not define."""

    def __init__(self, partner_id: str, known: Sequence[str] = ()) -> None:
        self.partner_id = partner_id
        message = f"partner {partner_id!r} is not in the catalogue"
        close = difflib.get_close_matches(partner_id, list(known), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif known:
            message += f" (partners: {', '.join(sorted(known))})"
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.message


class _Invalid(ValueError):
    """Raised by validators to report problems at locations below the model being validated."""

    def __init__(self, *items: tuple[Loc, str]) -> None:
        super().__init__("; ".join(message for _, message in items))
        self.items = items


# ---------------------------------------------------------------------------------------------------------
# Field types. Validators raise ValueError with the plain-English message a user sees (no input values:
# a mistyped field may hold a real secret).

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])")
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@" + _DOMAIN)
_SENDER_DOMAIN = re.compile(r"\*@" + _DOMAIN)
_TENANT = re.compile(_DOMAIN + r"\.[A-Za-z]{2,}")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TRANSFORM_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)+")
_PEM = "-----BEGIN"
_RESERVED_CONTAINERS = frozenset({"drop", "inbound", "quarantine", "archive"})

#: Placeholders accepted in blob path and email subject templates.
PLACEHOLDERS = ("partner", "yyyy", "MM", "dd", "name", "job_id", "stem", "ext")

#: Keys that, when not a known field, are someone pasting a secret into the catalogue.
_INLINE_SECRET_KEYS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "private_key", "privatekey", "secret",
    "client_secret", "certificate", "cert", "token", "access_token", "api_key", "apikey",
    "connection_string", "sas_token",
})


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _between(low: int | float, high: int | float) -> AfterValidator:
    def check(value: int | float) -> int | float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return AfterValidator(check)


def _above(low: int | float) -> AfterValidator:
    def check(value: int | float) -> int | float:
        if not value > low:
            raise ValueError(f"must be greater than {low}")
        return value

    return AfterValidator(check)


def _at_least(low: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be {low} or more")
        return value

    return AfterValidator(check)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "kib": KIB, "mb": 10**6, "mib": MIB, "gb": 10**9, "gib": GIB, "tb": 10**12, "tib": 1024 * GIB,
}


def _size(value: Any) -> Any:
    """Bytes as an integer or a string with a unit: `5368709120`, `"5 GiB"`, `"150 MB"`."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError('must be a size in bytes, such as 1048576 or "1 MiB"')
        number = float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
        if number != int(number):
            raise ValueError("must be a whole number of bytes")
        return int(number)
    return value


def _secret_name(value: str) -> str:
    if value.lstrip().startswith(_PEM):
        raise ValueError(_PEM_MESSAGE)
    if not _SECRET_NAME.fullmatch(value):
        raise ValueError("must be a Key Vault secret name (1-127 letters, digits and dashes), not the secret itself")
    return value


_PEM_MESSAGE = (
    "looks like an inline key or certificate (it starts with -----BEGIN); "
    "store it in Key Vault and give the secret name instead"
)


def _partner_id(value: str) -> str:
    if not _SLUG.fullmatch(value):
        raise ValueError(
            "must be 2-40 lowercase letters, digits and dashes, starting and ending with a letter or digit "
            "(it is used in blob paths and table keys)"
        )
    return value


def _abs_path(value: str) -> str:
    if "\\" in value:
        raise ValueError("must be a POSIX path using / as the separator")
    if not value.startswith("/"):
        raise ValueError("must be an absolute path (starting with /)")
    parts = [p for p in value.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError("must not contain . or .. segments")
    return "/" + "/".join(parts)


def _glob(value: str) -> str:
    _text(value)
    if "/" in value:
        raise ValueError("matches file names only, so it must not contain /")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from exc
    return value


def _email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("must be an email address such as name@example.com")
    return value.lower()


def _mailbox_id(value: str) -> str:
    if not (_EMAIL.fullmatch(value) or _GUID.fullmatch(value)):
        raise ValueError("must be a mailbox address (name@example.com) or a user object id (GUID)")
    return value


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


def _one_char(value: str) -> str:
    if len(value) != 1:
        raise ValueError("must be exactly one character")
    if value in "\r\n":
        raise ValueError("must not be a line break")
    return value


def _container(value: str) -> str:
    if not _CONTAINER.fullmatch(value):
        raise ValueError(
            "must be a blob container name: 3-63 lowercase letters, digits and single dashes, "
            "starting and ending with a letter or digit"
        )
    if value in _RESERVED_CONTAINERS:
        raise ValueError(
            f"is reserved for Wharf's own use ({', '.join(sorted(_RESERVED_CONTAINERS))}); "
            "route to processed, outbound or a container of your own"
        )
    return value


def _template(value: str) -> str:
    _text(value)
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValueError("has an unmatched { or }; write {{ or }} for a literal brace") from exc
    unknown: list[str] = []
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            unknown.append("{" + field + "}")
        elif spec or conversion:
            raise ValueError(f"placeholder {{{field}}} takes no format spec or conversion")
    if unknown:
        allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS[:-1]) + " or {" + PLACEHOLDERS[-1] + "}"
        noun = "placeholder" if len(unknown) == 1 else "placeholders"
        raise ValueError(f"unknown {noun} {', '.join(unknown)}; use {allowed}")
    return value


def _blob_path(value: str) -> str:
    _template(value)
    if value.startswith("/") or value.endswith("/"):
        raise ValueError("must not start or end with /")
    if "\\" in value:
        raise ValueError("must use / as the separator")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("must not contain empty, . or .. segments")
    return value


def _schedule(value: str) -> str:
    fields = value.split()
    if len(fields) not in (5, 6):
        raise ValueError(
            "must be a cron expression with 6 fields (second minute hour day month weekday, as Azure "
            "Functions timers use) or 5 fields (standard cron)"
        )
    if len(fields) == 6 and not re.fullmatch(r"[0-5]?[0-9]", fields[0]):
        raise ValueError("the seconds field must be a single number such as 0: schedules are checked once a minute")
    expression = " ".join(fields)
    seconds_first = len(fields) == 6
    if not croniter.is_valid(expression, second_at_beginning=seconds_first):
        raise ValueError("is not a valid cron expression")
    try:
        croniter(expression, datetime(2000, 1, 1), second_at_beginning=seconds_first).get_next(datetime)
    except CroniterBadDateError as exc:
        raise ValueError("never fires: no date matches it") from exc
    return expression


def _enum_value(value: Any) -> Any:
    if isinstance(value, bool):
        # YAML 1.1 turns unquoted NO, yes, on, off into booleans.
        raise ValueError("must be text; quote values such as 'NO', 'yes', 'on' or 'off'")
    if isinstance(value, int | float):
        return str(value)
    return value


_ACCEPT_ANY = frozenset(
    {"*", "any", "all", "accept", "accept-any", "autoadd", "auto-add", "none", "insecure", "ignore"}
)
_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class HostKey:
    """A pinned host key: a known_hosts line or a bare SHA256 fingerprint. Compare servers by `fingerprint`."""

    text: str
    fingerprint: str  # "SHA256:<unpadded base64>", as `ssh-keygen -l` prints it
    key_type: str | None = None  # None for a bare fingerprint
    key_base64: str | None = None
    hosts: tuple[str, ...] = ()  # host patterns of a known_hosts line

    def matches_host(self, host: str, port: int = 22) -> bool:
        """Whether a known_hosts line names this host and port (a bare fingerprint names every host)."""
        if not self.hosts:
            return True
        name = host if port == 22 else f"[{host}]:{port}"
        matched = False
        for pattern in self.hosts:
            if pattern.startswith("|1|"):
                salt_b64, _, digest_b64 = pattern[3:].partition("|")
                salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
                if hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest):
                    matched = True
            elif pattern.startswith("!"):
                if _host_pattern_match(name, pattern[1:]):
                    return False
            elif _host_pattern_match(name, pattern):
                matched = True
        return matched


def _host_pattern_match(name: str, pattern: str) -> bool:
    """OpenSSH host patterns know only * and ? (brackets in `[host]:port` are literal)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE) is not None


def parse_host_key(text: str) -> HostKey:
    """Parse `[host]:port ssh-ed25519 AAAA...`, `host ssh-rsa AAAA...` or `SHA256:...`; ValueError says why not."""
    value = " ".join(text.split())
    if value.lower() in _ACCEPT_ANY:
        raise ValueError(
            "host keys must be pinned; there is no option to accept any key. Give the server's known_hosts "
            "line (ssh-keyscan -p PORT HOST) or its SHA256 fingerprint"
        )
    if value.startswith("SHA256:"):
        encoded = value[len("SHA256:"):]
        try:
            digest = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 32:
            raise ValueError("is not a valid SHA256 fingerprint: expected SHA256: and 43 base64 characters")
        return HostKey(text=value, fingerprint="SHA256:" + base64.b64encode(digest).decode().rstrip("="))
    if value.upper().startswith("MD5:") or re.fullmatch(r"(?:[0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2}", value):
        raise ValueError(
            "MD5 fingerprints are not accepted; give the SHA256 fingerprint (ssh-keygen -l -E sha256) "
            "or a known_hosts line"
        )
    parts = value.split(" ")
    if parts[0].startswith("@"):
        raise ValueError(f"known_hosts markers such as {parts[0]} are not supported; pin the host key itself")
    if parts[0] in _KEY_TYPES:
        raise ValueError(
            "is a public key without a host; write it as a known_hosts line ('[host]:port ssh-ed25519 AAAA...') "
            "or give its SHA256 fingerprint"
        )
    if len(parts) < 3:
        raise ValueError(
            "must be a known_hosts line ('[host]:port ssh-ed25519 AAAA...' or 'host ssh-rsa AAAA...') "
            "or a SHA256 fingerprint ('SHA256:...')"
        )
    hosts, key_type, key_b64 = parts[0], parts[1], parts[2]
    if key_type not in _KEY_TYPES:
        raise ValueError(f"has an unsupported key type {key_type!r}; expected one of {', '.join(_KEY_TYPES)}")
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("has key data that is not valid base64 (was it cut short when copied?)") from exc
    fields = _ssh_fields(blob)
    if (
        fields is None
        or len(fields) < 2
        or fields[0] != key_type.encode()
        or (key_type == "ssh-ed25519" and len(fields[1]) != 32)
    ):
        raise ValueError(f"has key data that is not a {key_type} key (was it cut short when copied?)")
    patterns = tuple(hosts.split(","))
    for pattern in patterns:
        if not pattern or pattern == "!":
            raise ValueError("has an empty host pattern")
        if pattern.startswith("|1|"):
            salt_b64, _, digest_b64 = pattern[3:].partition("|")
            try:
                base64.b64decode(salt_b64, validate=True)
                base64.b64decode(digest_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("has a hashed host name that is not valid") from exc
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return HostKey(text=value, fingerprint=fingerprint, key_type=key_type, key_base64=key_b64, hosts=patterns)


def _ssh_fields(blob: bytes) -> list[bytes] | None:
    """Split an SSH public key blob into its length-prefixed fields; None unless it splits exactly."""
    fields: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return None
        length = int.from_bytes(blob[offset:offset + 4], "big")
        offset += 4
        if offset + length > len(blob):
            return None
        fields.append(blob[offset:offset + length])
        offset += length
    return fields


def _host_key(value: str) -> str:
    return parse_host_key(value).text


Text = Annotated[str, AfterValidator(_text)]
PartnerId = Annotated[str, AfterValidator(_partner_id)]
SecretName = Annotated[str, AfterValidator(_secret_name)]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
Glob = Annotated[str, AfterValidator(_glob)]
Regex = Annotated[str, AfterValidator(_regex)]
Email = Annotated[str, AfterValidator(_email)]
Schedule = Annotated[str, AfterValidator(_schedule)]
FolderPath = Annotated[str, AfterValidator(_folder)]
Template = Annotated[str, AfterValidator(_template)]
HostKeyText = Annotated[str, AfterValidator(_host_key)]
Size = Annotated[int, BeforeValidator(_size), _above(0)]
SizeOrZero = Annotated[int, BeforeValidator(_size), _at_least(0)]
Seconds = Annotated[float, _above(0)]
FileType = Literal["csv", "json", "xml", "binary"]

DEFAULT_SCHEDULE = "0 */5 * * * *"


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time strictly after `after` that a catalogue schedule (5 or 6 fields) fires."""
    expression = _schedule(schedule)
    seconds_first = len(expression.split()) == 6
    result: datetime = croniter(expression, after, second_at_beginning=seconds_first).get_next(datetime)
    return result


# ---------------------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SftpAuth(_Model):
    """Key Vault secret names for SFTP login: a private key and/or a password."""

    private_key_secret: SecretName | None = None
    password_secret: SecretName | None = None
    passphrase_secret: SecretName | None = None

    @model_validator(mode="after")
    def _check(self) -> SftpAuth:
        if not (self.private_key_secret or self.password_secret):
            raise ValueError("needs private_key_secret or password_secret (a Key Vault secret name)")
        if self.passphrase_secret and not self.private_key_secret:
            raise _Invalid((("passphrase_secret",), "only applies to a private key; set private_key_secret too"))
        return self


_ALGORITHM_GROUPS = ("ciphers", "kex", "keys", "macs", "pubkeys")


class SftpSource(_Model):
    """Where and how Wharf polls a partner's SFTP server (and, optionally, delivers to it)."""

    host: Text
    port: Annotated[int, _between(1, 65535)] = 22
    username: Text
    auth: SftpAuth
    host_keys: Annotated[list[HostKeyText], Field(min_length=1)]
    remote_dirs: Annotated[list[AbsPath], Field(min_length=1)]
    include: Annotated[list[Glob], Field(min_length=1)] = Field(default_factory=lambda: ["*"])
    exclude: list[Glob] = Field(default_factory=list)
    recursive: bool = False
    min_age_seconds: Annotated[int, _at_least(0)] = 30
    max_files_per_poll: Annotated[int, _between(1, 10000)] = 100
    max_file_size_bytes: Size = 5 * GIB
    post_action: Literal["delete", "move", "rename", "leave"] = "leave"
    move_to: AbsPath | None = None
    suffix: Text | None = None
    schedule: Schedule = DEFAULT_SCHEDULE
    connect_timeout_seconds: Seconds = 15
    operation_timeout_seconds: Seconds = 60
    disabled_algorithms: dict[str, list[Text]] = Field(default_factory=dict)
    outbound_dir: AbsPath | None = None

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value is not None and "/" in value:
            raise ValueError("must not contain /")
        return value

    @field_validator("disabled_algorithms")
    @classmethod
    def _check_algorithms(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = [key for key in value if key not in _ALGORITHM_GROUPS]
        if unknown:
            raise _Invalid(*(
                ((key,), f"unknown algorithm group; use {', '.join(_ALGORITHM_GROUPS)}") for key in unknown
            ))
        return value

    @model_validator(mode="after")
    def _check(self) -> SftpSource:
        problems: list[tuple[Loc, str]] = []
        if self.post_action == "move" and not self.move_to:
            problems.append((("move_to",), "is required when post_action is move"))
        if self.move_to and self.post_action != "move":
            problems.append((("move_to",), f"is only used when post_action is move (it is {self.post_action})"))
        if self.suffix is not None and self.post_action != "rename":
            problems.append((("suffix",), f"is only used when post_action is rename (it is {self.post_action})"))
        if self.move_to and any(
            self.move_to == d or (self.recursive and self.move_to.startswith(d.rstrip("/") + "/"))
            for d in self.remote_dirs
        ):
            problems.append((("move_to",), "is inside a polled folder, so moved files would be picked up again"))
        target = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        for index, text in enumerate(self.host_keys):
            key = parse_host_key(text)
            if not key.matches_host(self.host, self.port):
                problems.append((
                    ("host_keys", index),
                    f"is a known_hosts line for another host; this partner connects to {target}"
                    + (" (known_hosts writes a port other than 22 as [host]:port)" if self.port != 22 else ""),
                ))
        if problems:
            raise _Invalid(*problems)
        return self

    @property
    def rename_suffix(self) -> str:
        return self.suffix if self.suffix is not None else ".done"

    def pinned_host_keys(self) -> list[HostKey]:
        return [parse_host_key(text) for text in self.host_keys]

    def pinned_fingerprints(self) -> frozenset[str]:
        """SHA256 fingerprints of every pinned key: the server's key must be one of them."""
        return frozenset(key.fingerprint for key in self.pinned_host_keys())

    def wants(self, name: str) -> bool:
        """Whether a remote file name is ours to take (include/exclude, and never our own renamed files)."""
        if self.post_action == "rename" and name.endswith(self.rename_suffix):
            return False
        return any(glob_match(name, p) for p in self.include) and not any(glob_match(name, p) for p in self.exclude)


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
    max_attachment_bytes: Size = 150 * MIB
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


class ColumnSpec(_Model):
    """How one CSV column is checked."""

    type: Literal["integer", "decimal", "date", "string", "enum", "regex"] = "string"
    format: Text | None = None
    values: Annotated[list[Annotated[str, BeforeValidator(_enum_value)]], Field(min_length=1)] | None = None
    pattern: Regex | None = None
    max_length: Annotated[int, _at_least(1)] | None = None
    required: bool = False

    @model_validator(mode="after")
    def _check(self) -> ColumnSpec:
        problems: list[tuple[Loc, str]] = []
        for field, kind in (("format", "date"), ("values", "enum"), ("pattern", "regex")):
            if getattr(self, field) is not None and self.type != kind:
                problems.append(((field,), f"is only used when type is {kind} (it is {self.type})"))
            if getattr(self, field) is None and self.type == kind and kind != "date":
                problems.append(((field,), f"is required when type is {kind}"))
        if self.format is not None and self.type == "date":
            sample = datetime(2001, 12, 31, 23, 59, 58)
            try:
                datetime.strptime(sample.strftime(self.format), self.format)
            except ValueError:
                problems.append((("format",), "is not a valid strftime date format such as %Y-%m-%d"))
            if "%" not in self.format:
                problems.append((("format",), "is not a valid strftime date format such as %Y-%m-%d"))
        if problems:
            raise _Invalid(*dict.fromkeys(problems))
        return self

    @property
    def date_format(self) -> str:
        return self.format or "%Y-%m-%d"


class CsvSpec(_Model):
    """CSV dialect and column rules."""

    delimiter: Annotated[str, AfterValidator(_one_char)] = ","
    quotechar: Annotated[str, AfterValidator(_one_char)] = '"'
    header: bool = True
    required_columns: list[Text] = Field(default_factory=list)
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CsvSpec:
        if self.delimiter == self.quotechar:
            raise _Invalid((("quotechar",), "must differ from delimiter"))
        if self.required_columns and not self.header:
            raise _Invalid((("required_columns",), "needs header: true (columns are found by name)"))
        return self


class Transform(_Model):
    """A named transform (resolved by the transform registry) and its options."""

    name: Annotated[str, AfterValidator(lambda v: _match(v, _TRANSFORM_NAME, _TRANSFORM_MESSAGE))] = "passthrough"
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_inline_secrets(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems: list[tuple[Loc, str]] = [
            ((key,), _INLINE_MESSAGE) for key in value if key.lower() in _INLINE_SECRET_KEYS
        ]
        for key, item in value.items():
            if key.endswith("_secret"):  # a secret an option needs, by Key Vault name like every other
                try:
                    _secret_name(item if isinstance(item, str) else "")
                except ValueError as exc:
                    problems.append(((key,), str(exc)))
        if problems:
            raise _Invalid(*problems)
        return value


_EVENT_MESSAGE = "must be a dotted lowercase event type such as file.processed"
_TRANSFORM_MESSAGE = "must be a transform name such as csv_to_jsonl (lowercase letters, digits and underscores)"
_INLINE_MESSAGE = (
    "inline secrets are not allowed; put the value in Key Vault and give its name in a key ending in _secret"
)


def _match(value: str, pattern: re.Pattern[str], message: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(message)
    return value


class FileRule(_Model):
    """Validation and transform for files whose name matches the `match` glob; the first matching rule wins."""

    match: Glob = "*"
    type: Literal["csv", "json", "xml", "binary", "auto"] = "auto"
    min_bytes: SizeOrZero | None = None
    max_bytes: Size | None = None
    encoding: Literal["auto", "utf-8", "latin-1", "windows-1252"] = "auto"
    csv: CsvSpec | None = None
    max_errors: Annotated[int, _between(1, 1_000_000)] = 100
    json_schema: str | dict[str, Any] | None = None
    xsd: Text | None = None
    transform: Transform = Field(default_factory=Transform)

    @field_validator("json_schema", mode="before")
    @classmethod
    def _check_schema(cls, value: Any) -> Any:
        if value is None or isinstance(value, dict):
            return value
        if isinstance(value, str) and value.strip():
            return value
        raise ValueError("must be a file path or an inline JSON Schema mapping")

    @model_validator(mode="after")
    def _check(self) -> FileRule:
        problems: list[tuple[Loc, str]] = []
        for field, kind in (("csv", "csv"), ("json_schema", "json"), ("xsd", "xml")):
            if getattr(self, field) is not None and self.type not in (kind, "auto"):
                problems.append(((field,), f"only applies when type is {kind} or auto (it is {self.type})"))
        if self.min_bytes is not None and self.max_bytes is not None and self.min_bytes > self.max_bytes:
            problems.append((("max_bytes",), "must not be less than min_bytes"))
        if problems:
            raise _Invalid(*problems)
        return self


class Processing(_Model):
    """How a partner's files are validated and transformed."""

    rules: list[FileRule] = Field(default_factory=list)


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


class Partner(_Model):
    """One trading partner: its sources, processing rules and routes."""

    id: PartnerId
    name: Text
    enabled: bool = True
    sftp: SftpSource | None = None
    mailbox: Mailbox | None = None
    processing: Processing | None = None
    routes: list[Route] = Field(default_factory=list)

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, routes: list[Route]) -> list[Route]:
        problems: list[tuple[Loc, str]] = []
        seen: dict[str, int] = {}
        default: Route | None = None
        for index, route in enumerate(routes):
            if route.name in seen:
                message = f"is already used by routes[{seen[route.name]}]; route names must be unique"
                problems.append(((index, "name"), message))
            seen.setdefault(route.name, index)
            if route.default:
                if default is not None:
                    message = f"only one route can be the default; route {default.name!r} already is"
                    problems.append(((index, "default"), message))
                else:
                    default = route
        if problems:
            raise _Invalid(*problems)
        return routes

    def secret_names(self) -> list[str]:
        return sorted(set(_secret_names(self)))


def _secret_names(value: Any) -> Iterator[str]:
    if isinstance(value, BaseModel):
        for field in type(value).model_fields:
            item = getattr(value, field)
            if field.endswith("_secret") and isinstance(item, str):
                yield item
            else:
                yield from _secret_names(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secret_names(item)
    elif isinstance(value, dict):  # transform options name secrets with keys ending in _secret too
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_secret") and isinstance(item, str):
                yield item
            else:
                yield from _secret_names(item)


class Catalog(_Model):
    """Every partner Wharf knows. Build it with `load_catalog` / `parse_catalog`."""

    partners: list[Partner] = Field(default_factory=list)
    source: str = "<catalog>"

    @model_validator(mode="after")
    def _check(self) -> Catalog:
        problems: list[tuple[Loc, str]] = []
        first: dict[str, int] = {}
        for index, partner in enumerate(self.partners):
            if partner.id in first:
                problems.append((("partners", index, "id"), _duplicate_message(first[partner.id], index)))
            first.setdefault(partner.id, index)
        targets: dict[str, tuple[bool, bool]] = {}
        for p in self.partners:
            targets.setdefault(p.id, (p.sftp is not None, bool(p.sftp and p.sftp.outbound_dir)))
        destinations = [
            (("partners", p_index, *loc), dest)
            for p_index, partner in enumerate(self.partners)
            for loc, dest in _sftp_destinations(partner.routes)
        ]
        problems += _cross_check(destinations, targets)
        if problems:
            raise _Invalid(*problems)
        return self

    def get(self, partner_id: str) -> Partner:
        """The partner with this id; raises PartnerNotFoundError (a NotFoundError and a KeyError)."""
        for partner in self.partners:
            if partner.id == partner_id:
                return partner
        raise PartnerNotFoundError(partner_id, [p.id for p in self.partners])

    def __contains__(self, partner_id: object) -> bool:
        return any(p.id == partner_id for p in self.partners)

    def sftp_partners(self, *, include_disabled: bool = False) -> list[Partner]:
        return [p for p in self.partners if p.sftp is not None and (p.enabled or include_disabled)]

    def mailbox_partners(self, *, include_disabled: bool = False) -> list[Partner]:
        return [p for p in self.partners if p.mailbox is not None and (p.enabled or include_disabled)]

    def secret_names(self, *, include_disabled: bool = False) -> list[str]:
        """Every Key Vault secret name the (enabled) partners reference, sorted: what a health check resolves."""
        names: set[str] = set()
        for partner in self.partners:
            if partner.enabled or include_disabled:
                names.update(partner.secret_names())
        return sorted(names)


def _duplicate_message(first: int, index: int) -> str:
    return f"is used by more than one partner (entries {first + 1} and {index + 1}); partner ids must be unique"


def _sftp_destinations(routes: Iterable[Route]) -> Iterator[tuple[Loc, SftpDestination]]:
    for r_index, route in enumerate(routes):
        for d_index, dest in enumerate(route.destinations):
            if isinstance(dest, SftpDestination):
                yield ("routes", r_index, "destinations", d_index), dest


def _cross_check(
    destinations: Iterable[tuple[Loc, SftpDestination]], targets: Mapping[str, tuple[bool, bool]]
) -> list[tuple[Loc, str]]:
    """SFTP destinations must name a partner with an sftp block and a folder to deliver to.

    `targets` maps each partner id to (has an sftp block, has sftp.outbound_dir).
    """
    problems: list[tuple[Loc, str]] = []
    for loc, dest in destinations:
        problems += _check_sftp_destination(loc, dest, targets)
    return problems


def _check_sftp_destination(
    loc: Loc, dest: SftpDestination, targets: Mapping[str, tuple[bool, bool]]
) -> list[tuple[Loc, str]]:
    if dest.partner not in targets:
        message = f"no partner {dest.partner!r} in the catalogue"
        close = difflib.get_close_matches(dest.partner, list(targets), n=1)
        return [((*loc, "partner"), message + (f"; did you mean {close[0]!r}?" if close else ""))]
    has_sftp, has_outbound = targets[dest.partner]
    if not has_sftp:
        return [((*loc, "partner"), f"partner {dest.partner!r} has no sftp block to deliver to")]
    if dest.folder is None and not has_outbound:
        return [((*loc, "folder"), f"is required: partner {dest.partner!r} has no sftp.outbound_dir")]
    return []


# ---------------------------------------------------------------------------------------------------------
# Turning pydantic errors into one plain line per problem

_MODELS: dict[str, type[BaseModel]] = {
    cls.__name__: cls
    for cls in (
        SftpAuth, SftpSource, MailboxAuth, Mailbox, ColumnSpec, CsvSpec, Transform, FileRule, Processing,
        RouteMatch, BlobDestination, SftpDestination, EmailDestination, EventDestination, Route, Partner, Catalog,
    )
}

_MISSING_HINTS = {
    "host_keys": "is required: pin the server's host key as a known_hosts line or a SHA256 fingerprint "
    "(ssh-keyscan -p PORT HOST prints the line)",
    "auth": "is required",
}
_EMPTY_HINTS = {
    "host_keys": "must list at least one pinned host key",
    "remote_dirs": "must list at least one folder to poll",
    "destinations": "must list at least one destination",
}
_SIMPLE_MESSAGES = {
    "string_type": "must be text",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
}


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(root: type[BaseModel], loc: Loc) -> tuple[Loc, type[BaseModel] | None]:
    """Drop pydantic's union tags and labels from a location; also return the model holding its last part."""
    out: list[str | int] = []
    tp: Any = root
    parent: type[BaseModel] | None = root
    for part in loc:
        tp = _unwrap(tp)
        parent = tp if _is_model(tp) else None
        if part == "[key]":
            continue
        if _is_model(tp):
            fields = tp.model_fields
            tp = fields[part].annotation if isinstance(part, str) and part in fields else Any
        elif get_origin(tp) is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict and isinstance(part, str):
            tp = get_args(tp)[1]
        elif get_origin(tp) in (Union, types.UnionType) and isinstance(part, str):
            members = [m for m in get_args(tp) if _is_model(m) and m.model_fields.get("kind")]
            chosen = [m for m in members if m.model_fields["kind"].default == part]
            if chosen:
                tp = chosen[0]
                continue  # a discriminator tag, not a key the user wrote
            tp = Any
        else:
            tp = Any
        out.append(part)
    return tuple(out), parent


def _convert(exc: ValidationError, root: type[BaseModel], prefix: Loc = ()) -> list[tuple[Loc, str, Loc]]:
    """(location, message, scope) per error; scope is where the check ran (a model, for cross-field checks)."""
    problems: list[tuple[Loc, str, Loc]] = []
    for err in exc.errors(include_url=False):
        raw_loc: Loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        cause = ctx.get("error")
        loc, parent = _walk(root, raw_loc)
        if isinstance(cause, _Invalid):
            for sub, message in cause.items:
                problems.append((prefix + _walk(root, raw_loc + sub)[0], message, prefix + loc))
            continue
        kind = err["type"]
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        if kind in ("value_error", "assertion_error") and cause is not None:
            message = str(cause)
        elif kind == "missing":
            message = _MISSING_HINTS.get(field, "is required")
        elif kind == "extra_forbidden":
            message = _unknown_key_message(str(loc[-1]), parent)
        elif kind in _SIMPLE_MESSAGES:
            message = _SIMPLE_MESSAGES[kind]
        elif kind == "literal_error":
            message = f"must be one of {ctx['expected']}"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc += ("kind",)
            kinds = ", ".join(_DESTINATION_KINDS)
            message = f"must be one of {kinds}" if kind == "union_tag_invalid" else f"is required: one of {kinds}"
        elif kind in ("too_short", "string_too_short"):
            minimum = ctx.get("min_length", 1)
            message = _EMPTY_HINTS.get(field, "must not be empty") if minimum == 1 else f"needs {minimum} or more"
        elif kind in ("too_long", "string_too_long"):
            message = f"must have at most {ctx.get('max_length')} items"
        else:
            message = err["msg"][:1].lower() + err["msg"][1:]
        problems.append((prefix + loc, message, prefix + loc))
    return problems


def _unknown_key_message(key: str, model: type[BaseModel] | None) -> str:
    fields = list(model.model_fields) if model else []
    if key.lower() in _INLINE_SECRET_KEYS:
        replacement = f"{key}_secret"
        if replacement in fields:
            return (
                "inline secrets are not allowed; put the value in Key Vault and use "
                f"{replacement}: <secret name> instead"
            )
        return _INLINE_MESSAGE
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if not close and len(key) >= 3:
        close = [f for f in fields if key.lower() in f][:3]
    if close:
        return f"unknown key; did you mean {' or '.join(close)}?"
    return f"unknown key; expected one of {', '.join(fields)}" if fields else "unknown key"


def format_problems(error: CatalogError | ValidationError) -> list[str]:
    """One plain line per problem, for a CatalogError or a ValidationError from building these models directly."""
    if isinstance(error, CatalogError):
        return list(error.problems)
    root = _MODELS.get(error.title, Partner)
    return [f"{_format_loc(loc, None)}: {message}" if loc else message for loc, message, _ in _convert(error, root)]


# ---------------------------------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[str, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key_node.value!r} (first at line {seen[key_node.value].line + 1})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}"
        problem = exc.problem or "cannot parse this"
        if exc.context and exc.context_mark is not None:
            context = f"{exc.context} at line {exc.context_mark.line + 1}"
            if problem.startswith("but "):  # e.g. "expected a single document ..., but found another document"
                return Problem("", f"{where}: {context}, {problem}")
            return Problem("", f"{where}: {problem} ({context})")
        return Problem("", f"{where}: {problem}")
    return Problem("", f"invalid YAML: {exc}")


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise CatalogError([_yaml_problem(exc)], source=source) from exc
    finally:
        loader.dispose()
    positions: dict[Loc, int] = {}
    if node is not None:
        _record_positions(node, (), positions, set())
    return data, positions


def _record_positions(node: yaml.Node, loc: Loc, out: dict[Loc, int], active: set[int]) -> None:
    if id(node) in active:
        return  # a recursive alias; nothing to add
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                out[(*loc, key_node.value)] = key_node.start_mark.line + 1
                _record_positions(value_node, (*loc, key_node.value), out, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*loc, index)] = item.start_mark.line + 1
            _record_positions(item, (*loc, index), out, active)
    active.discard(id(node))


# ---------------------------------------------------------------------------------------------------------
# ${ENV} interpolation

_ENV_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate_text(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":  # noqa: S105 - the escape for a literal ${
            return "${"
        body = match.group(1)
        if body is None:
            errors.append("has ${ without a closing }; write $${ for a literal ${")
            return token
        name, separator, default = body.partition(":-")
        if not _ENV_NAME.fullmatch(name):
            errors.append(f"${{{body}}} is not a variable reference; use ${{NAME}} or ${{NAME:-default}}")
            return token
        found = env.get(name)
        if found is None or (separator and found == ""):
            if separator:
                return default
            errors.append(f"environment variable {name} is not set and has no default")
            return token
        return found

    return _ENV_REF.sub(replace, value), errors


def _interpolate(data: Any, env: Mapping[str, str], loc: Loc, problems: list[tuple[Loc, str]], depth: int = 0) -> Any:
    """A copy of the document with ${VAR} filled in string values; also flags inline PEM keys."""
    if depth > 64:
        raise _Invalid((loc, "is nested too deeply (a recursive YAML alias?)"))
    if isinstance(data, str):
        value, errors = _interpolate_text(data, env) if "${" in data else (data, [])
        problems.extend((loc, error) for error in errors)
        if not errors and value.lstrip().startswith(_PEM):
            problems.append((loc, _PEM_MESSAGE))
        return value
    if isinstance(data, Mapping):
        return {key: _interpolate(value, env, (*loc, key), problems, depth + 1) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_interpolate(value, env, (*loc, i), problems, depth + 1) for i, value in enumerate(data)]
    return data


# ---------------------------------------------------------------------------------------------------------
# Loader

_TOP_LEVEL = ("partners", "defaults")
_DEFAULT_BLOCKS: dict[str, type[BaseModel]] = {"sftp": SftpSource, "mailbox": Mailbox}
# Fields that only make sense together: a partner setting one of them inherits none of the others.
_DEFAULT_GROUPS: dict[str, tuple[frozenset[str], ...]] = {
    "sftp": (frozenset({"post_action", "move_to", "suffix"}),),
    "mailbox": (frozenset({"after_action", "move_to"}),),
}


def load_catalog(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Catalog:
    """Read and validate a catalogue file. Raises CatalogError listing every problem found."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CatalogError(["file not found"], source=source) from exc
    except UnicodeDecodeError as exc:
        raise CatalogError([f"is not UTF-8 text (bad byte at offset {exc.start})"], source=source) from exc
    except OSError as exc:
        raise CatalogError([f"cannot read the file: {exc.strerror or exc}"], source=source) from exc
    return parse_catalog(text, source=source, env=env)


def parse_catalog(
    document: str | Mapping[str, Any], *, source: str = "<catalog>", env: Mapping[str, str] | None = None
) -> Catalog:
    """Validate a catalogue given as YAML text or an already-parsed mapping.

    `${NAME}` and `${NAME:-default}` in string values are filled from `env` (default: os.environ) first.
    """
    positions: dict[Loc, int] = {}
    if isinstance(document, str):
        raw, positions = _load_yaml(document, source)
    else:
        raw = document
    if raw is None:
        raise CatalogError(["the catalogue is empty; it needs a top-level partners: list"], source=source)
    if not isinstance(raw, Mapping):
        raise CatalogError(["the top level must be a mapping with a partners: list"], source=source)

    pre: list[tuple[Loc, str]] = []  # found before validation (env, inline keys): they hide what follows from them
    problems: list[tuple[Loc, str, Loc]] = []  # (where, message, scope of the check that found it)

    def note(loc: Loc, message: str) -> None:
        problems.append((loc, message, loc))

    try:
        data = _interpolate(raw, os.environ if env is None else env, (), pre)
    except _Invalid as exc:
        raise CatalogError([_problem(loc, msg, raw, positions) for loc, msg in exc.items], source=source) from exc

    for key in data:
        if key not in _TOP_LEVEL:
            close = difflib.get_close_matches(str(key), _TOP_LEVEL, n=1)
            note((key,), f"unknown key; {f'did you mean {close[0]}?' if close else 'use partners and defaults'}")
    partners_raw = data.get("partners")
    if "partners" not in data:
        note(("partners",), "is required (a list of partners)")
    elif partners_raw is not None and not isinstance(partners_raw, list):
        note(("partners",), "must be a list of partners")
    if not isinstance(partners_raw, list):
        partners_raw = []

    provenance = _apply_defaults(data, partners_raw, note)

    validated: list[Partner] = []
    destinations: list[tuple[Loc, SftpDestination]] = []
    for index, item in enumerate(partners_raw):
        if not isinstance(item, Mapping):
            note(("partners", index), "must be a mapping with id, name and the partner's settings")
            continue
        try:
            partner = Partner.model_validate(item)
        except ValidationError as exc:
            problems += _convert(exc, Partner, ("partners", index))
            found_here = _raw_sftp_destinations(item.get("routes"))
        else:
            validated.append(partner)
            found_here = list(_sftp_destinations(partner.routes))
        destinations += [(("partners", index, *loc), dest) for loc, dest in found_here]

    first: dict[str, int] = {}
    targets: dict[str, tuple[bool, bool]] = {}
    for index, item in enumerate(partners_raw):
        partner_id = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(partner_id, str):
            continue
        if partner_id in first:
            note(("partners", index, "id"), _duplicate_message(first[partner_id], index))
        else:
            first[partner_id] = index
            sftp = item.get("sftp")
            has_sftp = isinstance(sftp, Mapping)
            targets[partner_id] = (has_sftp, has_sftp and bool(sftp.get("outbound_dir")))
    for loc, message in _cross_check(destinations, targets):
        note(loc, message)

    found = _report(pre, problems, provenance, data, positions)
    if found:
        raise CatalogError(found, source=source)
    return Catalog(partners=validated, source=source)


_DESTINATION_ADAPTER: TypeAdapter[Destination] = TypeAdapter(Destination)


def _raw_sftp_destinations(raw_routes: Any) -> list[tuple[Loc, SftpDestination]]:
    """SFTP destinations of a partner that failed validation which are valid on their own, to cross-check."""
    found: list[tuple[Loc, SftpDestination]] = []
    for r_index, route in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        raw_destinations = route.get("destinations") if isinstance(route, Mapping) else None
        for d_index, raw in enumerate(raw_destinations if isinstance(raw_destinations, list) else []):
            try:
                dest = _DESTINATION_ADAPTER.validate_python(raw)
            except ValidationError:
                continue  # its own errors are already reported
            if isinstance(dest, SftpDestination):
                found.append((("routes", r_index, "destinations", d_index), dest))
    return found


def _report(
    pre: list[tuple[Loc, str]],
    problems: list[tuple[Loc, str, Loc]],
    provenance: Mapping[Loc, Loc],
    data: Any,
    positions: Mapping[Loc, int],
) -> list[Problem]:
    """Final list: defaults mapped to where they are written, consequences of earlier problems dropped, sorted."""

    def origin(loc: Loc) -> Loc:
        return provenance.get(loc[:4], loc[:4]) + loc[4:]

    def under(loc: Loc, base: Loc) -> bool:
        return loc[: len(base)] == base

    blocked = [loc for loc, _ in pre]
    kept: list[tuple[Loc, str]] = list(pre)
    for loc, message, scope in problems:
        loc, scope = origin(loc), origin(scope)
        # A bad ${VAR} or pasted key explains errors at that value and cross-field checks around it.
        if any(under(loc, b) or under(b, scope) for b in blocked):
            continue
        kept.append((loc, message))
    found = [_problem(loc, message, data, positions) for loc, message in dict.fromkeys(kept)]
    found.sort(key=lambda p: (bool(p.path), p.line or 0))
    return found


def _apply_defaults(
    data: Mapping[str, Any], partners: list[Any], note: Callable[[Loc, str], None]
) -> dict[Loc, Loc]:
    """Merge `defaults.sftp` / `defaults.mailbox` under each partner's block; map inherited keys to their origin."""
    defaults = data.get("defaults")
    provenance: dict[Loc, Loc] = {}
    if defaults is None:
        return provenance
    if not isinstance(defaults, Mapping):
        note(("defaults",), "must be a mapping with sftp and/or mailbox defaults")
        return provenance
    usable: dict[str, dict[str, Any]] = {}
    for block, value in defaults.items():
        model = _DEFAULT_BLOCKS.get(block)
        if model is None:
            note(("defaults", block), "unknown key; defaults can hold sftp and mailbox")
            continue
        if not isinstance(value, Mapping):
            note(("defaults", block), "must be a mapping of keys to values")
            continue
        usable[block] = {}
        for key, item in value.items():
            if key in model.model_fields:
                usable[block][key] = item
            else:
                note(("defaults", block, key), _unknown_key_message(str(key), model))
    for index, partner in enumerate(partners):
        if not isinstance(partner, dict):
            continue
        for block, values in usable.items():
            own = partner.get(block)
            if not isinstance(own, dict):
                continue
            taken = {key for group in _DEFAULT_GROUPS[block] if group & own.keys() for key in group}
            inherited = {k: v for k, v in values.items() if k not in own and k not in taken}
            partner[block] = {**own, **inherited}
            for key in inherited:
                provenance[("partners", index, block, key)] = ("defaults", block, key)
    return provenance


def _problem(loc: Loc, message: str, data: Any, positions: Mapping[Loc, int]) -> Problem:
    line = next((positions[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in positions), None)
    return Problem(_format_loc(loc, data), message, line)


def _format_loc(loc: Loc, data: Any) -> str:
    text = ""
    for position, part in enumerate(loc):
        if isinstance(part, int):
            label: str | int = part
            if position == 1 and loc[0] == "partners":
                label = _partner_label(data, part)
            text += f"[{label}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _partner_label(data: Any, index: int) -> str | int:
    """A partner's id when it has a usable one, else its index in the list."""
    try:
        partner_id = data["partners"][index]["id"]
    except (KeyError, IndexError, TypeError):
        return index
    if isinstance(partner_id, str) and 0 < len(partner_id.strip()) <= 60 and not re.search(r"[\[\]\n]", partner_id):
        return partner_id.strip()
    return index
