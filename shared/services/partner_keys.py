"""Partner API keys: create (shown once), list, revoke, and check a presented key for one partner."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.jobs import utcnow
from shared.domain.partner_keys import MAX_ACTIVE_KEYS, PartnerKey, new_key, split_key, verify
from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)


class PartnerKeyStore(Protocol):
    def ensure_table(self) -> None: ...

    def get(self, partner: str, key_id: str) -> PartnerKey:
        """NotFoundError when absent."""
        ...

    def list(self, partner: str | None = None) -> list[PartnerKey]: ...

    def create(self, key: PartnerKey) -> PartnerKey: ...

    def revoke(self, partner: str, key_id: str, at: Any) -> PartnerKey:
        """NotFoundError when absent; revoking twice keeps the first time."""
        ...


def create_key(services: Services, partner: str, *, created_by: str) -> tuple[str, PartnerKey]:
    """A new key for a catalogue partner; ConflictError when it already has MAX_ACTIVE_KEYS active ones."""
    with span("keys.create", {"wharf.partner": partner}):
        services.catalog.get(partner)  # NotFoundError for a partner the catalogue does not know
        store = services.partner_keys
        active = [k for k in store.list(partner) if k.active]
        if len(active) >= MAX_ACTIVE_KEYS:
            raise ConflictError(f"partner {partner} already has {len(active)} active keys "
                                f"({', '.join(k.key_id for k in active)}); revoke one first")
        value, row = new_key(partner, utcnow(), created_by)
        store.create(row)
        log.info("partner key created", extra=log_fields(partner=partner, key_id=row.key_id, by=created_by))
        return value, row


def revoke_key(services: Services, partner: str, key_id: str) -> PartnerKey:
    with span("keys.revoke", {"wharf.partner": partner}):
        key = services.partner_keys.revoke(partner, key_id, utcnow())
        log.info("partner key revoked", extra=log_fields(partner=partner, key_id=key_id))
        return key


def check_key(services: Services, partner: str, value: str) -> PartnerKey | None:
    """The active key of `partner` that `value` is, else None (a key of another partner is None too)."""
    parts = split_key(value)
    if parts is None:
        return None
    try:
        row = services.partner_keys.get(partner, parts[0])
    except NotFoundError:
        return None
    return row if verify(row, parts[1]) else None
