"""Field types and validators every catalogue block shares, the frozen model base and schedule times."""

from __future__ import annotations

import re
import string
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from croniter import CroniterBadDateError, croniter
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

# Validators raise ValueError with the plain-English message a user sees (no input values: a mistyped
# field may hold a real secret).

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])")
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@" + _DOMAIN)
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
_PEM = "-----BEGIN"
_RESERVED_CONTAINERS = frozenset({"drop", "inbound", "quarantine", "archive", "outbound", "locks"})

#: Placeholders accepted in blob path and email subject templates.
PLACEHOLDERS = ("partner", "yyyy", "MM", "dd", "name", "job_id", "stem", "ext")

#: Keys that, when not a known field, are someone pasting a secret into the catalogue.
_INLINE_SECRET_KEYS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "private_key", "privatekey", "secret",
    "client_secret", "certificate", "cert", "token", "access_token", "api_key", "apikey",
    "connection_string", "sas_token",
})
_INLINE_MESSAGE = (
    "inline secrets are not allowed; put the value in Key Vault and give its name in a key ending in _secret"
)


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


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "kb": 10**3, "kib": KIB, "mb": 10**6, "mib": MIB, "gb": 10**9, "gib": GIB, "tb": 10**12, "tib": 1024 * GIB,
}


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # YAML reads yes, no, on, off, true and false as booleans
        raise ValueError("must be a number, not true or false")
    return value


#: Ahead of every numeric field: pydantic would otherwise read true as 1.
Number = BeforeValidator(_not_bool)


def _size(value: Any) -> Any:
    """Bytes as an integer or a string with a unit: `5368709120`, `"5 GiB"`, `"150 MB"`."""
    _not_bool(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if not match:
            raise ValueError('must be a size in bytes, such as 1048576 or "1 MiB"')
        try:  # Decimal: exact for any number of digits (a float of 400 nines is infinity)
            number = Decimal(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
        except InvalidOperation as exc:
            raise ValueError('must be a size in bytes, such as 1048576 or "1 MiB"') from exc
        if number != number.to_integral_value():
            raise ValueError("must be a whole number of bytes")
        return int(number)
    return value


def _bytes_text(value: int) -> str:
    for unit, size in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def _size_between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be at least {low} byte{'' if low == 1 else 's'}")
        if value > high:
            raise ValueError(f"must be at most {_bytes_text(high)}")
        return value

    return AfterValidator(check)


def _seconds(high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not 0 < value <= high:  # also refuses NaN, which compares false with everything
            raise ValueError(f"must be more than 0 and at most {high:g} seconds")
        return value

    return AfterValidator(check)


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


def _container(value: str) -> str:
    if not _CONTAINER.fullmatch(value):
        raise ValueError(
            "must be a blob container name: 3-63 lowercase letters, digits and single dashes, "
            "starting and ending with a letter or digit"
        )
    if value in _RESERVED_CONTAINERS:
        raise ValueError(
            f"is reserved for Wharf's own use ({', '.join(sorted(_RESERVED_CONTAINERS))}); "
            "route to processed or a container of your own (outbound/ is where files are handed over to be sent)"
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


def _match(value: str, pattern: re.Pattern[str], message: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(message)
    return value


Text = Annotated[str, AfterValidator(_text)]
PartnerId = Annotated[str, AfterValidator(_partner_id)]
SecretName = Annotated[str, AfterValidator(_secret_name)]
AbsPath = Annotated[str, AfterValidator(_abs_path)]
Glob = Annotated[str, AfterValidator(_glob)]
Regex = Annotated[str, AfterValidator(_regex)]
Email = Annotated[str, AfterValidator(_email)]
Schedule = Annotated[str, AfterValidator(_schedule)]
Template = Annotated[str, AfterValidator(_template)]
# Every number in the catalogue is bounded: .inf, .nan, negative and absurdly large values are refused.
Size = Annotated[int, BeforeValidator(_size), _size_between(1, TIB)]
SizeOrZero = Annotated[int, BeforeValidator(_size), _size_between(0, TIB)]
AttachmentSize = Annotated[int, BeforeValidator(_size), _size_between(1, GIB)]
Seconds = Annotated[float, Number, _seconds(3600)]
ConnectSeconds = Annotated[float, Number, _seconds(300)]

DEFAULT_SCHEDULE = "0 */5 * * * *"


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time strictly after `after` that a catalogue schedule (5 or 6 fields) fires."""
    expression = _schedule(schedule)
    seconds_first = len(expression.split()) == 6
    result: datetime = croniter(expression, after, second_at_beginning=seconds_first).get_next(datetime)
    return result


class _Model(BaseModel):
    """Every catalogue block: unknown keys are errors, and a loaded catalogue never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
