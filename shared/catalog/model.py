"""A partner and the whole catalogue, with the checks that span partners (SFTP deliveries between them)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator

from shared.catalog.common import PartnerId, Text, _Model
from shared.catalog.errors import Loc, PartnerNotFoundError, _Invalid
from shared.catalog.expect import Expectation
from shared.catalog.mailbox import Mailbox
from shared.catalog.processing import Processing
from shared.catalog.routes import EmailDestination, Route, SftpDestination
from shared.catalog.sftp import SftpSource


def check_routes(routes: list[Route]) -> list[Route]:
    """Route names are unique, and at most one route is the default."""
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


class Outbound(_Model):
    """Files an internal system hands over for this partner (outbound/{partner}/{name}, `wharf send`): the routes
    they take (the same route model and destination kinds as inbound routes; the first matching route, else the
    default; `wharf send --route NAME` names one). No validation or transform unless `processing` has a rule
    whose glob matches the file; otherwise the handed-over file itself is delivered, unchanged."""

    processing: Processing | None = None
    routes: Annotated[list[Route], Field(min_length=1)]

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, routes: list[Route]) -> list[Route]:
        return check_routes(routes)


class Partner(_Model):
    """One trading partner: its sources, processing rules and routes."""

    id: PartnerId
    name: Text
    enabled: bool = True
    sftp: SftpSource | None = None
    mailbox: Mailbox | None = None
    processing: Processing | None = None
    routes: list[Route] = Field(default_factory=list)
    outbound: Outbound | None = None
    expect: list[Expectation] = Field(default_factory=list)

    @field_validator("expect")
    @classmethod
    def _check_expect(cls, expect: list[Expectation]) -> list[Expectation]:
        seen: dict[str, int] = {}
        problems: list[tuple[Loc, str]] = []
        for index, item in enumerate(expect):
            if item.key in seen:
                field = "id" if item.id else "name"
                problems.append(((index, field), f"is already used by expect[{seen[item.key]}]; give each "
                                                 "expectation a different name or an id"))
            seen.setdefault(item.key, index)
        if problems:
            raise _Invalid(*problems)
        return expect

    @field_validator("routes")
    @classmethod
    def _check_routes(cls, routes: list[Route]) -> list[Route]:
        return check_routes(routes)

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
            for loc, dest in partner_sftp_destinations(partner)
        ]
        problems += _cross_check(destinations, targets)
        problems += _check_senders(self.partners)
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
        """Partners whose SFTP server Wharf polls (an sftp block with remote_dirs)."""
        return [p for p in self.partners if p.sftp is not None and p.sftp.polled and (p.enabled or include_disabled)]

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


def _sftp_destinations(routes: Iterable[Route], prefix: Loc = ()) -> Iterator[tuple[Loc, SftpDestination]]:
    for r_index, route in enumerate(routes):
        for d_index, dest in enumerate(route.destinations):
            if isinstance(dest, SftpDestination):
                yield (*prefix, "routes", r_index, "destinations", d_index), dest


def partner_sftp_destinations(partner: Partner) -> Iterator[tuple[Loc, SftpDestination]]:
    """A partner's SFTP destinations, inbound and outbound routes, with where each is written."""
    yield from _sftp_destinations(partner.routes)
    if partner.outbound is not None:
        yield from _sftp_destinations(partner.outbound.routes, ("outbound",))


def sender_auth(partners: Iterable[Partner], dest: EmailDestination) -> Any:
    """The app registration an email destination sends with: its own `auth`, else that of the (first) partner
    whose mailbox block reads the same mailbox; None when there is neither."""
    if dest.auth is not None:
        return dest.auth
    for partner in partners:
        if partner.mailbox is not None and partner.mailbox.mailbox.lower() == dest.mailbox.lower():
            return partner.mailbox.auth
    return None


def email_destinations(partners: Iterable[Partner]) -> Iterator[tuple[Partner, Loc, EmailDestination]]:
    for partner in partners:
        for r_index, route in enumerate(partner.routes):
            for d_index, dest in enumerate(route.destinations):
                if isinstance(dest, EmailDestination):
                    yield partner, ("routes", r_index, "destinations", d_index), dest


def _check_senders(partners: list[Partner], indexes: list[int] | None = None) -> list[tuple[Loc, str]]:
    """Every email destination has an app registration to send with (`indexes`: each partner's place in the
    catalogue file, when some entries did not validate)."""
    places = indexes if indexes is not None else list(range(len(partners)))
    index = {id(p): places[i] for i, p in enumerate(partners)}
    return [(("partners", index[id(partner)], *loc, "auth"),
             f"is required: no partner's mailbox block reads {dest.mailbox}, so there is no app registration to "
             "send from it (give tenant_id, client_id and client_secret_secret or certificate_secret)")
            for partner, loc, dest in email_destinations(partners) if sender_auth(partners, dest) is None]


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
