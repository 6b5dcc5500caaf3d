"""A lean `$batch` body for the table transactions on the landing hot path (create_jobs, ledger update_many).

azure-core builds a transaction's multipart body and parses the response with the `email` package: about
0.6 ms of CPU per entity, a third of the small-file benchmark's CPU. This module writes the same body with
string joins and reads the response's part statuses and ETags with byte splits. Entities are converted by
`entity_json`, the SDK's `_add_entity_properties` (the Edm types) for the plain values the hot path writes and
the SDK's own function for anything else. Everything else is the SDK's: the pipeline (shared-key or token auth,
retries, logging, tracing) through the client's own `send_request`, and every error, decoded from the failing
part by the SDK's `_decode_error` into the same `TableTransactionError` `submit_transaction` raises.

Only three operation kinds are written here, in the SDK's tuple form: `("create", entity)`, `("upsert",
entity, {"mode": UpdateMode.REPLACE})` and `("update", entity, {"mode": UpdateMode.REPLACE, "etag": ...,
"match_condition": MatchConditions.IfNotModified})`. Any other transaction goes to `TableClient.
submit_transaction` unchanged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, EntityProperty, TableClient, TableTransactionError, UpdateMode

_CRLF = "\r\n"
_API_VERSION = "2019-02-02"  # what the SDK's generated operations send (x-ms-version of each part)


def _key(value: str) -> str:
    """A key in an entity URL, as the SDK writes it (quotes doubled, then percent-encoded)."""
    return quote(value.replace("'", "''"), safe="")


def _kind(operation: Sequence[Any]) -> tuple[str, Mapping[str, Any], str | None] | None:
    """(HTTP method, entity, If-Match) of an operation this module writes; None for anything else."""
    if len(operation) not in (2, 3):
        return None
    name, entity = str(operation[0]).lower(), operation[1]
    options: Mapping[str, Any] = operation[2] if len(operation) == 3 else {}
    if name == "create" and not options:
        return "POST", entity, None
    if name == "upsert" and set(options) == {"mode"} and options["mode"] == UpdateMode.REPLACE:
        return "PUT", entity, None
    if (name == "update" and set(options) == {"mode", "etag", "match_condition"}
            and options["mode"] == UpdateMode.REPLACE and options["etag"]
            and options["match_condition"] == MatchConditions.IfNotModified):
        return "PUT", entity, str(options["etag"])
    return None


_INT32 = 2**31
_INT64 = 2**63


def entity_json(entity: Mapping[str, Any]) -> dict[str, Any]:
    """`_add_entity_properties(entity)`, the SDK's conversion of an entity to its JSON properties, for the value
    types the landing path writes (str, bool, int, an aware datetime, an Int64 EntityProperty; None is left out),
    at about a third of its CPU; any other value (an Enum, a float, bytes, a naive datetime, ...) hands the whole
    entity to the SDK's own conversion. The same dict, key for key and in the same order."""
    from azure.data.tables._serialize import _add_entity_properties

    out: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str:
            out[name] = value
            out[name + "@odata.type"] = "Edm.String"
        elif value is None:
            continue
        elif kind is bool:
            out[name] = value
        elif kind is int and -_INT32 <= value < _INT32:
            out[name] = value
        elif kind is datetime and value.tzinfo is not None and (utc := value.astimezone(UTC)).year >= 1000:
            out[name] = utc.isoformat(timespec="microseconds")[:-6] + "Z"  # the SDK's %Y-%m-%dT%H:%M:%S.%fZ
            out[name + "@odata.type"] = "Edm.DateTime"
        elif (kind is EntityProperty and value.edm_type is EdmType.INT64 and type(value.value) is int
              and -_INT64 <= value.value < _INT64):
            out[name] = str(value.value)
            out[name + "@odata.type"] = "Edm.Int64"
        else:
            return _add_entity_properties(entity)
    return out


def encode(base_url: str, table_name: str, operations: Sequence[Sequence[Any]], *, batch: str, changeset: str,
           date: str) -> str | None:
    """The multipart body of one transaction (None when an operation is not one of the three kinds)."""
    parts: list[str] = []
    table_url = f"{base_url}/{quote(table_name, safe='')}"
    partition = None
    for index, operation in enumerate(operations):
        kind = _kind(operation)
        if kind is None:
            return None
        method, entity, if_match = kind
        if partition is None:
            partition = entity["PartitionKey"]
        elif entity["PartitionKey"] != partition:
            raise ValueError("Partition Keys in the batch must all be the same.")
        body = json.dumps(entity_json(entity))
        if method == "POST":
            url, accept = table_url, "application/json;odata=minimalmetadata"
        else:
            url = f"{table_url}(PartitionKey='{_key(entity['PartitionKey'])}',RowKey='{_key(entity['RowKey'])}')"
            accept = "application/json"
        headers = ["Content-Type: application/json", f"Content-Length: {len(body.encode('utf-8'))}",
                   f"x-ms-version: {_API_VERSION}", "DataServiceVersion: 3.0", f"Accept: {accept}"]
        if if_match is not None:
            headers.append(f"If-Match: {if_match}")
        headers += [f"x-ms-date: {date}", f"Date: {date}"]
        parts.append(f"--{changeset}{_CRLF}Content-Type: application/http{_CRLF}Content-Transfer-Encoding: binary"
                     f"{_CRLF}Content-ID: {index}{_CRLF}{_CRLF}{method} {url} HTTP/1.1{_CRLF}"
                     f"{_CRLF.join(headers)}{_CRLF}{_CRLF}{body}{_CRLF}")
    return (f"--{batch}{_CRLF}Content-Type: multipart/mixed; boundary={changeset}{_CRLF}{_CRLF}"
            f"{''.join(parts)}--{changeset}--{_CRLF}{_CRLF}--{batch}--{_CRLF}")


def _boundary(content_type: str) -> bytes:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"').encode("ascii")
    raise ValueError(f"a multipart response without a boundary: {content_type!r}")


def _split(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between `--boundary` lines (preamble and epilogue dropped)."""
    marker = b"--" + boundary
    pieces = body.split(marker)[1:]
    out = []
    for piece in pieces:
        if piece.startswith(b"--"):
            break
        piece = piece[2:] if piece.startswith(b"\r\n") else piece
        out.append(piece[:-2] if piece.endswith(b"\r\n") else piece)  # that CRLF belongs to the delimiter
    return out


def _headers(block: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep:
            out[name.strip().decode("latin-1").lower()] = value.strip().decode("latin-1")
    return out


def parse(content_type: str, body: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The sub-responses of a `$batch` response, in order: (status, headers lower-cased, the raw HTTP response)."""
    responses: list[tuple[int, dict[str, str], bytes]] = []
    for part in _split(body, _boundary(content_type)):
        head, _, payload = part.partition(b"\r\n\r\n")
        part_type = _headers(head).get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            responses += parse(part_type, payload)
            continue
        if not part_type.lower().startswith("application/http"):
            raise ValueError(f"a batch response part of type {part_type!r}")
        status_line, _, rest = payload.partition(b"\r\n")
        fields = status_line.split(b" ", 2)
        if len(fields) < 2 or not fields[0].startswith(b"HTTP/"):
            raise ValueError(f"a batch response part without an HTTP status line: {status_line[:80]!r}")
        head_block = rest.partition(b"\r\n\r\n")[0]
        responses.append((int(fields[1]), _headers(head_block), payload))
    return responses


def _part_error(request: HttpRequest, raw: bytes) -> TableTransactionError:
    """The SDK's own error for a failed part: its HTTP response rebuilt and decoded exactly as
    `submit_transaction` does."""
    from http.client import HTTPResponse

    from azure.core.rest._http_response_impl import RestHttpClientTransportResponse
    from azure.core.utils._pipeline_transport_rest_shared import BytesIOSocket
    from azure.data.tables._error import _decode_error

    internal = HTTPResponse(BytesIOSocket(raw), method=request.method)  # type: ignore[arg-type]
    internal.begin()
    response = RestHttpClientTransportResponse(request=request, internal_response=internal)
    error: TableTransactionError = _decode_error(response=response, error_type=TableTransactionError)
    return error


def submit_transaction(table: TableClient, operations: Sequence[Sequence[Any]]) -> list[Mapping[str, Any]]:
    """`table.submit_transaction(operations)` with the lean body; the same results (each part's `etag`) and
    the same errors. Falls back to the SDK for an operation kind this module does not write."""
    from azure.data.tables._error import RequestTooLargeError, _decode_error, _validate_tablename_error

    ops = list(operations)
    base_url = f"{table.scheme}://{table._primary_hostname}"  # what the SDK's batch uses
    batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
    body = encode(base_url, table.table_name, ops, batch=batch, changeset=changeset,
                  date=formatdate(usegmt=True)) if ops else None
    if body is None:
        return table.submit_transaction(ops)  # type: ignore[arg-type]
    request = HttpRequest("POST", f"{base_url}/$batch", headers={
        "x-ms-version": table.api_version, "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
        "Content-Type": f"multipart/mixed; boundary={batch}", "Accept": "application/json"},
        content=body.encode("utf-8"))
    response = table._client.send_request(request, stream=True)  # not decoded by the pipeline: read below
    if response.status_code == 413:
        raise _decode_error(response, error_message="The transaction request was too large",
                            error_type=RequestTooLargeError)
    if response.status_code != 202:
        decoded = _decode_error(response)
        _validate_tablename_error(decoded, table.table_name)
        raise decoded
    parts = parse(response.headers.get("Content-Type", ""), response.read())
    failed = next(((status, raw) for status, _, raw in parts if not 200 <= status < 300), None)
    if failed is not None:
        if failed[0] == 413:
            raise _decode_error(response, error_message="The transaction request was too large",
                                error_type=RequestTooLargeError)
        error = _part_error(request, failed[1])
        _validate_tablename_error(error, table.table_name)
        raise error
    return [{"etag": headers["etag"]} if "etag" in headers else {} for _, headers, _ in parts]
