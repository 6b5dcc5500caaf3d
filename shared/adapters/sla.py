"""SlaWindows over Azure Tables: one row per evaluated window, insert-if-absent, then ETag-conditional."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import UpdateMode

from shared.adapters.ledger import _etag, _odata, _TablesAdapter, _when
from shared.domain.sla import SlaWindow, WindowState, expectation_prefix, parse_row_key, window_row_key
from shared.resources import SLA_TABLE


def _entity(w: SlaWindow) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": w.partner, "RowKey": w.row_key, "Expectation": w.expectation, "Opens": w.opens,
        "Closes": w.closes, "State": w.state.value, "Count": w.count, "MinCount": w.min_count,
        "LateCount": w.late_count, "EvaluatedAt": w.evaluated_at,
    }
    if w.recovered_at is not None:
        entity["RecoveredAt"] = w.recovered_at
    return entity


def _window(row: Mapping[str, Any]) -> SlaWindow:
    expectation, opens = parse_row_key(row["RowKey"])
    closes, evaluated = _when(row.get("Closes")), _when(row.get("EvaluatedAt"))
    return SlaWindow(
        partner=row["PartitionKey"], expectation=expectation, opens=opens, closes=closes or opens,
        state=WindowState(row.get("State", "met")), count=int(row.get("Count", 0)),
        min_count=int(row.get("MinCount", 1)), late_count=int(row.get("LateCount", 0)),
        evaluated_at=evaluated or opens, recovered_at=_when(row.get("RecoveredAt")),
        etag=str(getattr(row, "metadata", {}).get("etag", "")),
    )


class SlaWindowsClient(_TablesAdapter):
    """SlaWindows (PK partner, RK `<expectation>|<opening>`)."""

    table = SLA_TABLE

    def windows(self, partner: str, expectation: str, *, since: datetime) -> list[SlaWindow]:
        prefix = expectation_prefix(expectation)
        low = window_row_key(expectation, since.astimezone(UTC))
        query = f"PartitionKey eq {_odata(partner)} and RowKey ge {_odata(low)} and RowKey lt {_odata(prefix + '~')}"
        return sorted((_window(r) for r in self._client().query_entities(query)), key=lambda w: w.opens)

    def recent(self, *, partner: str | None = None, since: datetime) -> list[SlaWindow]:
        query = f"Opens ge datetime'{since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}'"
        if partner:
            query = f"PartitionKey eq {_odata(partner)} and {query}"
        rows = self._client().query_entities(query)
        return sorted((_window(r) for r in rows), key=lambda w: (w.partner, w.expectation, w.opens))

    def create(self, window: SlaWindow) -> SlaWindow | None:
        try:
            meta = self._client().create_entity(_entity(window))
        except ResourceExistsError:
            return None
        return _stored(window, _etag(meta))

    def update(self, window: SlaWindow) -> SlaWindow | None:
        try:
            meta = self._client().update_entity(_entity(window), mode=UpdateMode.REPLACE, etag=window.etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        return _stored(window, _etag(meta))


def _stored(window: SlaWindow, etag: str) -> SlaWindow:
    return replace(window, etag=etag)
