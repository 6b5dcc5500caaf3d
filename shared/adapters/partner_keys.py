"""PartnerKeys over Azure Tables (PK partner, RK key id): salted hashes of partner API keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.adapters.ledger import _TablesAdapter, _when
from shared.domain.errors import NotFoundError
from shared.domain.partner_keys import PartnerKey
from shared.resources import PARTNER_KEYS_TABLE


def _entity(k: PartnerKey) -> dict[str, Any]:
    e: dict[str, Any] = {"PartitionKey": k.partner, "RowKey": k.key_id, "Salt": k.salt, "Digest": k.digest,
                         "CreatedAt": k.created_at, "CreatedBy": k.created_by}
    if k.revoked_at is not None:
        e["RevokedAt"] = k.revoked_at
    return e


def _key(row: Mapping[str, Any]) -> PartnerKey:
    return PartnerKey(partner=row["PartitionKey"], key_id=row["RowKey"], salt=row["Salt"], digest=row["Digest"],
                      created_at=_when(row.get("CreatedAt")) or datetime.min, created_by=row.get("CreatedBy", ""),
                      revoked_at=_when(row.get("RevokedAt")))


class PartnerKeysClient(_TablesAdapter):
    table = PARTNER_KEYS_TABLE

    def get(self, partner: str, key_id: str) -> PartnerKey:
        try:
            return _key(self._client().get_entity(partner, key_id))
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"key {key_id} of partner {partner} not found") from exc

    def list(self, partner: str | None = None) -> list[PartnerKey]:
        rows = (self._client().query_entities("PartitionKey eq @pk", parameters={"pk": partner}) if partner
                else self._client().list_entities())
        return sorted((_key(r) for r in rows), key=lambda k: (k.partner, k.created_at))

    def create(self, key: PartnerKey) -> PartnerKey:
        self._insert(_entity(key), f"key {key.key_id}")
        return key

    def revoke(self, partner: str, key_id: str, at: datetime) -> PartnerKey:
        try:
            row = self._client().get_entity(partner, key_id)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"key {key_id} of partner {partner} not found") from exc
        old = _key(row)
        key = replace(old, revoked_at=old.revoked_at or at)
        self._client().update_entity(_entity(key), mode=UpdateMode.REPLACE, etag=row.metadata["etag"],
                                     match_condition=MatchConditions.IfNotModified)
        return key
