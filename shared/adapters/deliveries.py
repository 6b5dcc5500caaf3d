"""Deliveries over Azure Tables (PK job group, RK job suffix + destination index): insert-if-absent, ETags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.ledger import _etag, _int, _int64, _TablesAdapter, _when
from shared.domain.delivery import Delivery, DeliveryState, DeliveryStep, delivery_keys
from shared.domain.errors import NotFoundError
from shared.domain.ids import job_partition
from shared.domain.sanitize import decode_original, encode_original
from shared.observability.redaction import redact
from shared.resources import DELIVERIES_TABLE

_MAX_ERROR_CHARS = 2000


def _now() -> datetime:
    return datetime.now(UTC)


def _entity(d: Delivery) -> dict[str, Any]:
    pk, rk = d.keys
    entity: dict[str, Any] = {
        "PartitionKey": pk, "RowKey": rk, "JobId": d.job_id, "DestinationIndex": d.index, "Partner": d.partner,
        "Kind": d.kind, "Target": d.target, "Route": d.route, "State": d.state.value, "Step": d.step.value,
        "RemotePath": encode_original(d.remote_path), "TempPath": encode_original(d.temp_path),
        "Bytes": _int64(d.bytes), "Sha256": d.sha256, "Attempts": d.attempts,
        "Error": redact(d.error)[:_MAX_ERROR_CHARS], "Verified": d.verified,
        "CreatedAt": d.created_at or _now(), "UpdatedAt": _now(),
    }
    if d.sent_at is not None:
        entity["SentAt"] = d.sent_at
    if d.redelivery_of is not None:
        entity["RedeliveryOf"] = d.redelivery_of
    if d.kind == "email" or d.message_id:  # SFTP rows keep their shape
        entity.update({"MessageId": d.message_id, "DraftId": d.draft_id, "StatusCode": d.status_code,
                       "StatusDetail": redact(d.status_detail)[:_MAX_ERROR_CHARS]})
        if d.status_at is not None:
            entity["StatusAt"] = d.status_at
    return entity


def _delivery(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
        job_id=row["JobId"], index=_int(row.get("DestinationIndex", 0)), partner=row.get("Partner", ""),
        kind=row.get("Kind", ""), target=row.get("Target", ""), route=row.get("Route", ""),
        state=DeliveryState(row.get("State", "PENDING")), step=DeliveryStep(row.get("Step", "")),
        remote_path=decode_original(row.get("RemotePath", "")), temp_path=decode_original(row.get("TempPath", "")),
        bytes=_int(row.get("Bytes", 0)), sha256=row.get("Sha256", ""), attempts=_int(row.get("Attempts", 0)),
        error=row.get("Error", ""), verified=row.get("Verified", ""), created_at=_when(row.get("CreatedAt")),
        updated_at=_when(row.get("UpdatedAt")), sent_at=_when(row.get("SentAt")),
        redelivery_of=_int(row["RedeliveryOf"]) if row.get("RedeliveryOf") is not None else None,
        message_id=row.get("MessageId", ""), draft_id=row.get("DraftId", ""), status_code=row.get("StatusCode", ""),
        status_detail=row.get("StatusDetail", ""), status_at=_when(row.get("StatusAt")),
        etag=str(getattr(row, "metadata", {}).get("etag", "")),
    )


def _stored(d: Delivery, etag: str) -> Delivery:
    return replace(d, etag=etag, updated_at=_now(), error=redact(d.error)[:_MAX_ERROR_CHARS],
                   created_at=d.created_at or _now())


class DeliveriesClient(_TablesAdapter):
    """Deliveries over Azure Tables. A job's deliveries share its partition: one query reads them all."""

    table = DELIVERIES_TABLE

    def get(self, job_id: str, index: int) -> Delivery:
        pk, rk = delivery_keys(job_id, index)
        try:
            return _delivery(self._client().get_entity(pk, rk))
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"delivery {index} of job {job_id} not found") from exc

    def create(self, delivery: Delivery) -> Delivery:
        meta = self._insert(_entity(delivery), f"delivery {delivery.index} of job {delivery.job_id}")
        return _stored(delivery, _etag(meta))

    def update(self, delivery: Delivery) -> Delivery:
        if not delivery.etag:
            raise ValueError("update needs the delivery's etag (read it first)")
        meta = self._replace(_entity(delivery), delivery.etag, f"delivery {delivery.index} of job {delivery.job_id}")
        return _stored(delivery, _etag(meta))

    def for_job(self, job_id: str) -> list[Delivery]:
        group, _ = job_partition(job_id)
        query = "PartitionKey eq @pk and JobId eq @job"
        rows = self._client().query_entities(query, parameters={"pk": group, "job": job_id})
        return sorted((_delivery(r) for r in rows), key=lambda d: d.index)

    def list_deliveries(self, *, state: str | None = None, partner: str | None = None,
                        limit: int = 100) -> list[Delivery]:
        """Most recently updated first (a scan: for operators, not for hot paths)."""
        clauses, params = [], {}
        if state:
            clauses.append("State eq @state")
            params["state"] = str(state)
        if partner:
            clauses.append("Partner eq @partner")
            params["partner"] = str(partner)
        rows = self._client().query_entities(" and ".join(clauses), parameters=params) if clauses \
            else self._client().list_entities()
        found = [_delivery(r) for r in rows]
        found.sort(key=lambda d: d.updated_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return found[:limit]


__all__ = ["DELIVERIES_TABLE", "DeliveriesClient"]
