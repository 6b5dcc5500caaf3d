"""LedgerClient.get_many against Azurite: a large lookup reads a small partition in pages instead of one query
per 14 keys, a partition past its page budget is finished by keyed queries, and the answer is the same."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import pytest
from azure.core.pipeline.transport import RequestsTransport

from shared.adapters import ledger as ledger_module
from shared.adapters.ledger import LedgerClient
from shared.domain.ledger import LedgerState
from tests.integration.test_contracts import entry, same
from tests.table_stores import drop_tables

pytestmark = [pytest.mark.azurite]


@pytest.fixture
def ledger(azurite: str, table_prefix: str) -> Iterator[LedgerClient]:
    client = LedgerClient.from_connection_string(azurite, prefix=table_prefix)
    client.ensure_table()
    yield client
    drop_tables(azurite, table_prefix)


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The $filter of every table query sent."""
    sent: list[str] = []
    original = RequestsTransport.send

    def send(self: RequestsTransport, request: Any, **kwargs: Any) -> Any:
        if request.method == "GET" and "$filter=" in request.url:
            sent.append(unquote(request.url.split("$filter=", 1)[1].split("&", 1)[0]))
        return original(self, request, **kwargs)

    monkeypatch.setattr(RequestsTransport, "send", send)
    return sent


def _stored(ledger: LedgerClient, partner: str, count: int) -> list[Any]:
    entries = [entry(partner, n=i) for i in range(count)]
    for start in range(0, count, 100):
        ledger.create_many(entries[start:start + 100])
    return entries


def test_a_large_lookup_in_a_small_partition_is_one_partition_read(ledger: LedgerClient,
                                                                  queries: list[str]) -> None:
    stored = _stored(ledger, "acme", 150)
    _stored(ledger, "other", 20)  # another partner's rows are never read
    listed = [entry("acme", n=i).key for i in range(0, 600, 2)]  # 300 keys: 22 keyed queries' worth
    ledger.update(replace(ledger.get("acme", stored[4].key), state=LedgerState.DONE))
    queries.clear()
    found = ledger.get_many("acme", listed)
    assert set(found) == {e.key for e in stored[::2]} and found[stored[4].key].state is LedgerState.DONE
    assert all(same(found[e.key], e) for e in stored[::2] if e is not stored[4])
    assert all(found[e.key].etag for e in stored[::2])  # usable for the ETag-conditional updates that follow
    assert queries == ["PartitionKey eq 'acme'"]
    assert ledger.get_many("fresh", listed) == {}  # a new partner: one empty page


def test_a_partition_past_the_page_budget_is_finished_by_key(ledger: LedgerClient, queries: list[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger_module, "_SCAN_PAGE", 20)  # pages of 20 rows, one page per 2 keyed queries
    monkeypatch.setattr(ledger_module, "_QUERIES_PER_PAGE", 2)
    stored = _stored(ledger, "acme", 200)
    listed = [e.key for e in stored[:56]] + [entry("acme", n=i).key for i in range(1000, 1010)]  # 66 keys, 5 queries
    queries.clear()
    found = ledger.get_many("acme", listed)
    assert set(found) == {e.key for e in stored[:56]}
    assert all(same(found[e.key], e) for e in stored[:56])
    scans = [q for q in queries if q == "PartitionKey eq 'acme'"]
    keyed = [q for q in queries if q != "PartitionKey eq 'acme'"]
    assert len(scans) == 2  # the budget: 5 queries // 2 = 2 pages, 40 of the 200 rows
    # The keys the pages answered are not asked again: only those after the last row read.
    last = sorted(e.key for e in stored)[39]
    asked = {part.split("'")[1] for q in keyed for part in q.split("RowKey eq ")[1:]}
    assert asked == {k for k in listed if k > last} and len(keyed) == -(-len(asked) // 14)


def test_a_small_lookup_stays_keyed(ledger: LedgerClient, queries: list[str]) -> None:
    stored = _stored(ledger, "acme", 30)
    queries.clear()
    found = ledger.get_many("acme", [e.key for e in stored])
    assert set(found) == {e.key for e in stored}
    assert len(queries) == 3 and all("RowKey eq" in q for q in queries)  # 30 keys: 3 queries, no partition read
