"""The lean `$batch` body against real Azurite and against the SDK: same rows stored, same results, same errors,
and the response parser agreeing with the SDK's own parser on the very same response bytes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared.adapters import table_batch

pytestmark = pytest.mark.azurite


@pytest.fixture
def tables(azurite: str) -> Iterator[tuple[TableClient, TableClient]]:
    """Two fresh tables: one written by the SDK, one by the lean body."""
    service = TableServiceClient.from_connection_string(azurite)
    run = uuid.uuid4().hex[:10]
    pair = (service.create_table(f"sdk{run}"), service.create_table(f"lean{run}"))
    yield pair
    for table in pair:
        service.delete_table(table.table_name)


def _entity(pk: str, rk: str, **extra: Any) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": rk, "Text": "quote \" and é, 𝄞", "Small": 7,
            "Big": EntityProperty(5 * 2**31, EdmType.INT64), "At": datetime(2026, 12, 1, 8, 30, 5, 123456, tzinfo=UTC),
            "Flag": True, "Empty": "", **extra}


def _stored(table: TableClient) -> list[dict[str, Any]]:
    return [{k: (v.value, v.edm_type) if isinstance(v, EntityProperty) else v for k, v in row.items()}
            for row in sorted(table.list_entities(), key=lambda r: r["RowKey"])]


class _Capture:
    """The raw `$batch` responses the HTTP transport receives (for the SDK's own parser to have read them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from azure.core.pipeline.transport import RequestsTransport

        self.responses: list[tuple[str, bytes]] = []
        send = RequestsTransport.send

        def capturing(transport: RequestsTransport, request: Any, **kwargs: Any) -> Any:
            response = send(transport, request, **kwargs)
            if request.url.endswith("/$batch"):
                response.read()
                self.responses.append((response.headers["Content-Type"], response.body()))
            return response

        monkeypatch.setattr(RequestsTransport, "send", capturing)


def test_each_operation_kind_stores_what_the_sdk_stores(tables: tuple[TableClient, TableClient]) -> None:
    sdk, lean = tables
    pk = "job-20261201083005123456"  # keys with a quote and characters a URL must encode
    rows = [_entity(pk, "a1'b"), _entity(pk, "a2 é%+ &"), _entity(pk, "a3")]
    results: dict[str, list[Any]] = {}
    for name, table, submit in (("sdk", sdk, sdk.submit_transaction),
                                ("lean", lean, lambda ops: table_batch.submit_transaction(lean, ops))):
        created = submit([("create", r) for r in rows])
        upserted = submit([("upsert", _entity(pk, "a3", Text="replaced", Extra=1), {"mode": UpdateMode.REPLACE}),
                           ("upsert", _entity(pk, "a4"), {"mode": UpdateMode.REPLACE})])
        updated = submit([("update", _entity(pk, r["RowKey"], Text=f"v2 {i}"),
                           {"mode": UpdateMode.REPLACE, "etag": meta["etag"],
                            "match_condition": MatchConditions.IfNotModified})
                          for i, (r, meta) in enumerate(zip(rows[:2], created[:2], strict=True))])
        results[name] = [created, upserted, updated]
        # Each returned ETag is the one stored: a conditional update with it succeeds.
        current = {row["RowKey"]: row.metadata["etag"] for row in table.list_entities()}
        assert [m["etag"] for m in updated] == [current["a1'b"], current["a2 é%+ &"]]
        assert upserted[1]["etag"] == current["a4"]
    assert _stored(sdk) == _stored(lean)
    assert [[len(r) for r in step] for step in results["sdk"]] == [[1, 1, 1], [1, 1], [1, 1]]
    assert [[len(r) for r in step] for step in results["lean"]] == [[1, 1, 1], [1, 1], [1, 1]]
    assert [row["Text"] for row in _stored(lean)] == ["v2 0", "v2 1", "replaced", "quote \" and é, 𝄞"]


def _error(submit: Any, ops: list[Any]) -> TableTransactionError:
    with pytest.raises(TableTransactionError) as caught:
        submit(ops)
    return caught.value


def _same_error(a: TableTransactionError, b: TableTransactionError) -> None:
    assert (type(a), a.status_code, a.error_code, a.index) == (type(b), b.status_code, b.error_code, b.index)
    assert a.message.split("\n", 1)[0] == b.message.split("\n", 1)[0]


def test_errors_are_the_sdks_errors(tables: tuple[TableClient, TableClient]) -> None:
    sdk, lean = tables
    errors: dict[str, list[TableTransactionError]] = {}
    for name, table, submit in (("sdk", sdk, sdk.submit_transaction),
                                ("lean", lean, lambda ops: table_batch.submit_transaction(lean, ops))):
        (meta,) = submit([("create", _entity("p", "a"))])
        submit([("update", _entity("p", "a", Text="moved"), {"mode": UpdateMode.REPLACE, "etag": meta["etag"],
                                                             "match_condition": MatchConditions.IfNotModified})])
        errors[name] = [
            _error(submit, [("create", _entity("p", "b")), ("create", _entity("p", "a"))]),  # exists, at index 1
            _error(submit, [("update", _entity("p", "a"), {"mode": UpdateMode.REPLACE, "etag": meta["etag"],
                                                           "match_condition": MatchConditions.IfNotModified})]),
            _error(submit, [("update", _entity("p", "zz"), {"mode": UpdateMode.REPLACE, "etag": meta["etag"],
                                                            "match_condition": MatchConditions.IfNotModified})]),
        ]
        assert [row["RowKey"] for row in table.list_entities()] == ["a"]  # a failed transaction wrote nothing
    for ours, theirs in zip(errors["lean"], errors["sdk"], strict=True):
        _same_error(ours, theirs)
    assert [(e.status_code, e.index) for e in errors["lean"]][:2] == [(409, 1), (412, 0)]
    assert errors["lean"][0].error_code == "EntityAlreadyExists"
    with pytest.raises(ValueError, match="Partition Keys"):
        table_batch.submit_transaction(lean, [("create", _entity("p", "c")), ("create", _entity("q", "c"))])


def test_the_parser_agrees_with_the_sdks_parser_on_the_same_response(tables: tuple[TableClient, TableClient],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sdk, _ = tables
    capture = _Capture(monkeypatch)
    created = sdk.submit_transaction([("create", _entity("p", f"r{i}")) for i in range(5)])
    upserted = sdk.submit_transaction([("upsert", _entity("p", "r0"), {"mode": UpdateMode.REPLACE})])
    sdk_error = _error(sdk.submit_transaction, [("create", _entity("p", "new")), ("create", _entity("p", "r3"))])
    (ok, ok2, failed) = capture.responses
    for (content_type, body), expected in ((ok, created), (ok2, upserted)):
        parts = table_batch.parse(content_type, body)
        assert [s for s, _, _ in parts] == ([201] * 5 if expected is created else [204])
        assert [{"etag": h["etag"]} for _, h, _ in parts] == expected
    (status, _, raw), *rest = table_batch.parse(*failed)
    assert status == 409 and rest == []
    from azure.core.rest import HttpRequest

    _same_error(table_batch._part_error(HttpRequest("POST", "http://x/$batch"), raw), sdk_error)


def test_another_operation_kind_goes_through_the_sdk(tables: tuple[TableClient, TableClient],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _, lean = tables
    calls: list[int] = []
    submit = TableClient.submit_transaction

    def counted(self: TableClient, ops: Any, **kwargs: Any) -> Any:
        calls.append(len(ops))
        return submit(self, ops, **kwargs)

    monkeypatch.setattr(TableClient, "submit_transaction", counted)
    table_batch.submit_transaction(lean, [("create", _entity("p", "a"))])
    assert calls == []
    table_batch.submit_transaction(lean, [("upsert", _entity("p", "a", Text="merged"))])  # MERGE: not ours
    table_batch.submit_transaction(lean, [("delete", _entity("p", "a"))])
    assert calls == [1, 1] and list(lean.list_entities()) == []
