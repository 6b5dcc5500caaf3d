"""Ledger, Breakers and LastPolls over Azure Tables: insert-if-absent claims, ETag-conditional updates, batches."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from shared.adapters import table_batch
from shared.adapters.http import StorageLimits, storage_options
from shared.domain.errors import ConflictError, NotFoundError
from shared.domain.ledger import LAST_POLL_FILES, BreakerRecord, BreakerState, LastPoll, LedgerEntry, LedgerState
from shared.domain.sanitize import decode_original, encode_original
from shared.observability.redaction import redact
from shared.observability.tracing import span
from shared.resources import BREAKERS_TABLE, LAST_POLLS_TABLE, LEDGER_TABLE

MAX_BATCH = 100  # entity group transaction limit (one partition)
_KEYS_PER_QUERY = 15  # a table $filter allows at most 15 discrete comparisons
_SCAN_PAGE = 1000  # rows per page of a partition read (the service's most)
_QUERIES_PER_PAGE = 16  # keyed queries a lookup must need before it reads one page of the partition instead
_MAX_ERROR_CHARS = 2000
_ENTRY_INDEX = re.compile(r"^\d+:")


def _int64(value: int) -> EntityProperty:
    return EntityProperty(int(value), EdmType.INT64)


def _int(value: Any) -> int:
    return int(value.value if isinstance(value, EntityProperty) else value)


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value.timestamp(), UTC) if isinstance(value, datetime) else None


def _odata(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _now() -> datetime:
    return datetime.now(UTC)


def _ledger_entity(e: LedgerEntry) -> dict[str, Any]:
    return {
        "PartitionKey": e.partner, "RowKey": e.key, "Channel": e.channel, "Path": encode_original(e.path),
        "Size": _int64(e.size), "Mtime": _int64(e.mtime), "State": e.state.value, "Owner": e.owner,
        "ClaimedAt": e.claimed_at, "JobId": e.job_id, "TransferId": e.transfer_id, "Container": e.container,
        "BlobPath": e.blob_path, "Attempts": e.attempts, "Sha256": e.sha256,
        "Error": redact(e.error)[:_MAX_ERROR_CHARS], "UpdatedAt": _now(),
    }


def _ledger_entry(row: Mapping[str, Any], etag: str | None = None) -> LedgerEntry:
    claimed = _when(row.get("ClaimedAt"))
    assert claimed is not None
    return LedgerEntry(
        partner=row["PartitionKey"], key=row["RowKey"], channel=row.get("Channel", ""),
        path=decode_original(row.get("Path", "")), size=_int(row.get("Size", 0)), mtime=_int(row.get("Mtime", 0)),
        state=LedgerState(row["State"]), owner=row.get("Owner", ""), claimed_at=claimed,
        job_id=row.get("JobId", ""), transfer_id=row.get("TransferId", ""), container=row.get("Container", ""),
        blob_path=row.get("BlobPath", ""), attempts=_int(row.get("Attempts", 1)), sha256=row.get("Sha256", ""),
        error=row.get("Error", ""), updated_at=_when(row.get("UpdatedAt")),
        etag=etag if etag is not None else str(getattr(row, "metadata", {}).get("etag", "")),
    )


def _etag(metadata: Mapping[str, Any] | None) -> str:
    return str((metadata or {}).get("etag", ""))


class _TablesAdapter:
    table: str

    def __init__(self, service: TableServiceClient, *, prefix: str = "") -> None:
        self._service = service
        self._prefix = prefix
        self._table_client: TableClient | None = None

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "", limits: StorageLimits | None = None) -> Any:
        return cls(TableServiceClient.from_connection_string(conn, **storage_options("table", limits)), prefix=prefix)

    @property
    def table_name(self) -> str:
        return f"{self._prefix}{self.table}"

    def _client(self) -> TableClient:
        if self._table_client is None:
            self._table_client = self._service.get_table_client(self.table_name)
        return self._table_client

    def ensure_table(self) -> None:
        self._service.create_table_if_not_exists(self.table_name)

    def _insert(self, entity: dict[str, Any], what: str) -> Mapping[str, Any]:
        """Insert-if-absent: ConflictError naming `what` when the row exists."""
        try:
            return self._client().create_entity(entity)
        except ResourceExistsError as exc:
            raise ConflictError(f"{what} already exists") from exc

    def _replace(self, entity: dict[str, Any], etag: str, what: str) -> Mapping[str, Any]:
        """Replace the row if its ETag is still `etag`: NotFoundError when it is gone, ConflictError when another
        instance wrote it since (the service says 412, or a modified / existing resource)."""
        try:
            return self._client().update_entity(entity, mode=UpdateMode.REPLACE, etag=etag,
                                                match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"{what} not found") from exc
        except (ResourceModifiedError, ResourceExistsError) as exc:
            raise ConflictError(f"{what} was changed by another instance") from exc
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise ConflictError(f"{what} was changed by another instance") from exc
            raise


class LedgerStorageError(AzureError):
    """Table storage refused a ledger transaction for a reason other than a concurrent write: an entity it will
    not store (400), throttling or an outage (503). A storage error like any other AzureError, not a conflict."""

    def __init__(self, message: str, *, status_code: int | None, error_code: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code


def _transaction_error(exc: TableTransactionError, what: str) -> Exception:
    code = str(getattr(exc, "error_code", "") or "")
    status = exc.status_code
    if status == 404 or "NotFound" in code:
        return NotFoundError(f"{what}: an entry is gone")
    if status in (409, 412):  # an entity already exists, or an ETag no longer matches
        return ConflictError(f"{what}: another instance wrote first ({code or status})")
    index = getattr(exc, "index", None)
    where = f" at entry {index + 1}" if isinstance(index, int) else ""
    # The service's own first line ("1:The property value exceeds ..."), without the entry index it starts with.
    detail = _ENTRY_INDEX.sub("", str(getattr(exc, "message", "") or "").split("\n", 1)[0]).strip()
    message = f"{what}: table storage refused it: HTTP {status} {code or '(no error code)'}{where}"
    return LedgerStorageError(f"{message}: {detail[:300]}" if detail else message, status_code=status,
                              error_code=code)


class LedgerClient(_TablesAdapter):
    """Ledger over Azure Tables (PK partner, RK ledger key)."""

    table = LEDGER_TABLE

    def get(self, partner: str, key: str) -> LedgerEntry:
        try:
            row = self._client().get_entity(partner, key)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"ledger entry {partner}/{key} not found") from exc
        return _ledger_entry(row)

    def get_many(self, partner: str, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """The entries of these keys that exist. Keyed queries of 14 keys each; a lookup that would need 16 or
        more of them first reads the partition itself in RowKey order, up to one page of 1000 rows per 16 queries
        it replaces: a partition that ends within that is answered whole (a new partner, or one whose files stay
        on the source, in a page or a few instead of one query per 14 files), and a larger one costs at most
        that read more, whose rows still answer every key up to the last one read; the keys after it are
        queried by key."""
        wanted = sorted(set(keys))
        found: dict[str, LedgerEntry] = {}
        client = self._client()
        with span("ledger.get_many", {"wharf.partner": partner, "wharf.keys": len(wanted)}) as s:
            pages = -(-len(wanted) // (_KEYS_PER_QUERY - 1)) // _QUERIES_PER_PAGE
            if pages:
                wanted = self._scan(client, partner, set(wanted), pages, found)
                s.set_attribute("wharf.scanned", True)
            for start in range(0, len(wanted), _KEYS_PER_QUERY - 1):
                chunk = wanted[start:start + _KEYS_PER_QUERY - 1]
                keys_filter = " or ".join(f"RowKey eq {_odata(key)}" for key in chunk)
                for row in client.query_entities(f"PartitionKey eq {_odata(partner)} and ({keys_filter})"):
                    entry = _ledger_entry(row)
                    found[entry.key] = entry
        return found

    @staticmethod
    def _scan(client: TableClient, partner: str, wanted: set[str], pages: int,
              found: dict[str, LedgerEntry]) -> list[str]:
        """Read up to `pages` pages of the partition into `found` (wanted keys only); the keys it did not reach."""
        last = ""
        pager: Any = client.query_entities(f"PartitionKey eq {_odata(partner)}", results_per_page=_SCAN_PAGE).by_page()
        for page in pager:
            for row in page:
                last = row["RowKey"]
                if last in wanted:
                    found[last] = _ledger_entry(row)
            pages -= 1
            if pages == 0 and pager.continuation_token:
                # Rows come in RowKey order: every key up to `last` is answered, the rest are queried by key.
                return sorted(k for k in wanted if k > last)
        return []  # the whole partition was read: a key not found does not exist

    def create(self, entry: LedgerEntry) -> LedgerEntry:
        meta = self._insert(_ledger_entity(entry), f"ledger entry {entry.partner}/{entry.key}")
        return _with_etag(entry, _etag(meta))

    def create_many(self, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        batch = list(entries)
        if not batch:
            return []
        _check_batch(batch)
        try:
            results = table_batch.submit_transaction(self._client(), [("create", _ledger_entity(e)) for e in batch])
        except TableTransactionError as exc:
            raise _transaction_error(exc, f"ledger batch of {len(batch)} for {batch[0].partner}") from exc
        return [_with_etag(e, _etag(r)) for e, r in zip(batch, results, strict=True)]

    def update(self, entry: LedgerEntry) -> LedgerEntry:
        if not entry.etag:
            raise ValueError("update needs the entry's etag (read it first)")
        meta = self._replace(_ledger_entity(entry), entry.etag, f"ledger entry {entry.partner}/{entry.key}")
        return _with_etag(entry, _etag(meta))

    def update_many(self, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        batch = list(entries)
        if not batch:
            return []
        _check_batch(batch)
        if not all(e.etag for e in batch):
            raise ValueError("update needs the entry's etag (read it first)")
        operations: list[Any] = [
            ("update", _ledger_entity(e), {"mode": UpdateMode.REPLACE, "etag": e.etag,
                                           "match_condition": MatchConditions.IfNotModified})
            for e in batch]
        try:
            results = table_batch.submit_transaction(self._client(), operations)  # the lean $batch body
        except TableTransactionError as exc:
            raise _transaction_error(exc, f"ledger batch update of {len(batch)} for {batch[0].partner}") from exc
        return [_with_etag(e, _etag(r)) for e, r in zip(batch, results, strict=True)]

    def entries(self, partner: str, *, state: str | None = None) -> list[LedgerEntry]:
        query = "PartitionKey eq @pk" + (" and State eq @state" if state else "")
        params = {"pk": partner, **({"state": str(state)} if state else {})}
        return [_ledger_entry(row) for row in self._client().query_entities(query, parameters=params)]


def _check_batch(batch: list[LedgerEntry]) -> None:
    if len(batch) > MAX_BATCH:
        raise ValueError(f"at most {MAX_BATCH} ledger entries per batch, got {len(batch)}")
    if len({e.partner for e in batch}) != 1:
        raise ValueError("a ledger batch holds entries of one partner only")
    if len({e.key for e in batch}) != len(batch):
        raise ValueError("a ledger batch must not repeat a key")


def _with_etag(entry: LedgerEntry, etag: str) -> LedgerEntry:
    """The entry as stored: new ETag, its error redacted (errors come from exceptions; no secret is stored)."""
    return replace(entry, etag=etag, updated_at=_now(), error=redact(entry.error))


def _breaker_entity(r: BreakerRecord) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": r.channel, "RowKey": r.partner, "State": r.state.value, "Failures": r.failures,
        "LastError": r.last_error[:_MAX_ERROR_CHARS], "UpdatedAt": _now(),
    }
    if r.opened_at is not None:
        entity["OpenedAt"] = r.opened_at
    if r.probe_at is not None:
        entity["ProbeAt"] = r.probe_at
    return entity


def _breaker_record(row: Mapping[str, Any]) -> BreakerRecord:
    return BreakerRecord(
        channel=row["PartitionKey"], partner=row["RowKey"], state=BreakerState(row.get("State", "CLOSED")),
        failures=_int(row.get("Failures", 0)), opened_at=_when(row.get("OpenedAt")),
        probe_at=_when(row.get("ProbeAt")), last_error=row.get("LastError", ""),
        updated_at=_when(row.get("UpdatedAt")), etag=str(getattr(row, "metadata", {}).get("etag", "")),
    )


class BreakersClient(_TablesAdapter):
    """Breakers over Azure Tables (PK channel, RK partner)."""

    table = BREAKERS_TABLE

    def get(self, channel: str, partner: str) -> BreakerRecord:
        try:
            return _breaker_record(self._client().get_entity(channel, partner))
        except ResourceNotFoundError:
            return BreakerRecord(channel=channel, partner=partner)

    def save(self, record: BreakerRecord) -> BreakerRecord:
        client = self._client()
        try:
            if not record.etag:
                meta = client.create_entity(_breaker_entity(record))
            else:
                meta = client.update_entity(_breaker_entity(record), mode=UpdateMode.REPLACE, etag=record.etag,
                                            match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConflictError(f"breaker {record.channel}/{record.partner} was changed by another instance") from exc
        return replace(record, etag=_etag(meta), updated_at=_now())


def _last_poll_entity(p: LastPoll) -> dict[str, Any]:
    return {
        "PartitionKey": p.channel, "RowKey": p.partner, "Status": p.status, "StartedAt": p.started_at,
        "FinishedAt": p.finished_at, "RequestedBy": redact(p.requested_by)[:200], "Listed": p.listed,
        "Landed": p.landed, "Skipped": p.skipped, "Failed": p.failed, "Queued": p.queued, "Bytes": _int64(p.bytes),
        "Error": redact(p.error)[:_MAX_ERROR_CHARS],
        "Files": json.dumps([encode_original(f)[:400] for f in p.files[:LAST_POLL_FILES]]),
    }


def _last_poll(row: Mapping[str, Any]) -> LastPoll:
    started, finished = _when(row.get("StartedAt")), _when(row.get("FinishedAt"))
    assert started is not None and finished is not None
    try:
        files = tuple(decode_original(str(f)) for f in json.loads(row.get("Files") or "[]"))
    except ValueError:
        files = ()
    return LastPoll(
        channel=row["PartitionKey"], partner=row["RowKey"], status=row.get("Status", ""), started_at=started,
        finished_at=finished, requested_by=row.get("RequestedBy", ""), listed=_int(row.get("Listed", 0)),
        landed=_int(row.get("Landed", 0)), skipped=_int(row.get("Skipped", 0)), failed=_int(row.get("Failed", 0)),
        queued=_int(row.get("Queued", 0)), bytes=_int(row.get("Bytes", 0)), error=row.get("Error", ""), files=files)


class LastPollsClient(_TablesAdapter):
    """LastPolls over Azure Tables (PK channel, RK partner): one upsert per poll, one point read per channel."""

    table = LAST_POLLS_TABLE

    def record(self, poll: LastPoll) -> None:
        with span("lastpolls.record", {"wharf.partner": poll.partner, "wharf.channel": poll.channel}):
            self._client().upsert_entity(_last_poll_entity(poll), mode=UpdateMode.REPLACE)

    def get(self, channel: str, partner: str) -> LastPoll | None:
        try:
            return _last_poll(self._client().get_entity(channel, partner))
        except ResourceNotFoundError:
            return None


class InProcessLastPolls:
    """LastPolls within this process: what Services uses when its breakers are an in-memory fake (tests, tools
    without storage), as slots fall back to InProcessSlots; the same contract as LastPollsClient."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], LastPoll] = {}
        self._lock = threading.Lock()

    def ensure_table(self) -> None:
        pass

    def record(self, poll: LastPoll) -> None:
        with self._lock:
            self._rows[(poll.channel, poll.partner)] = replace(poll, files=poll.files[:LAST_POLL_FILES],
                                                               error=redact(poll.error)[:_MAX_ERROR_CHARS])

    def get(self, channel: str, partner: str) -> LastPoll | None:
        with self._lock:
            return self._rows.get((channel, partner))
