"""Blob Storage adapter: staged blocks committed once, sha256 on the way, memory flat."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    IncompleteReadError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ResourceNotModifiedError,
    ServiceResponseError,
    map_error,
)
from azure.core.rest import HttpRequest
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from shared.adapters.http import StorageLimits, storage_options
from shared.domain.errors import ConflictError, DependencyUnavailableError, NotFoundError
from shared.observability.redaction import redact, register_secret
from shared.observability.tracing import span
from shared.ports import BlobInfo, DownloadLink
from shared.resources import CONTAINERS

DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
DEFAULT_COPY_TIMEOUT = 600.0  # seconds a server-side copy may stay pending before it is aborted
#: Bytes asked for per streamed GET (`open_stream`): the body is read as it arrives, so this bounds no memory,
#: only how much one request covers.
STREAM_RANGE = 64 * 1024 * 1024
# Error codes of a copy whose source blob is gone (the other 404s, e.g. ContainerNotFound, are not "gone").
_SOURCE_GONE = frozenset({"BlobNotFound", "CannotVerifyCopySource"})
# What the SDK's generated Put Blob maps before `process_storage_error` refines it by error code.
_PUT_ERRORS = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError,
               304: ResourceNotModifiedError}


def public_url(url: str) -> str:
    """A blob's URL without its query string: a client built from a SAS connection string puts the SAS there,
    and a BlobInfo's URL is recorded and published (job events, `file.processed`). Never a credential."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _stored_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Metadata as written: values redacted (a reason may quote an error)."""
    return {k: redact(v) for k, v in (metadata or {}).items()}


def _rebuffer(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut arbitrary chunks into blocks of `size` bytes (the last one may be shorter).

    Each block is allocated once (`bytes.join` over views of the chunks): no growing buffer copied and cut
    per block, which keeps the peak memory of a large upload low and steady."""
    parts: list[memoryview] = []
    have = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view.nbytes and have + view.nbytes >= size:
            take = size - have
            parts.append(view[:take])
            yield b"".join(parts)
            parts, have = [], 0
            view = view[take:]
        if view.nbytes:
            parts.append(view)
            have += view.nbytes
    if parts:
        yield b"".join(parts)


def _when(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _blob_url(service: BlobServiceClient, container: str, path: str) -> str:
    """The blob's URL exactly as `get_blob_client(container, path).url` has it (the SAS query too, if any)."""
    from azure.storage.blob._blob_client_helpers import _format_url

    return _format_url(container_name=container, scheme=service.scheme, blob_name=path,
                       query_str=getattr(service, "_query_str", ""), hostname=service.primary_hostname)


def put_blob(service: BlobServiceClient, container: str, path: str, data: bytes, *, metadata: Mapping[str, str],
             content_type: str | None = None, overwrite: bool = True) -> tuple[str, dict[str, Any]]:
    """One Put Blob of a body held in memory: the blob's URL and its response headers (etag, last_modified).

    What `BlobClient.upload_blob(data, overwrite=..., metadata=..., content_settings=..., length=len(data))`
    sends for a body under its single-put size, without making a BlobClient for the one call and without the
    generated operation's argument handling (~15 % of the call's CPU, plus ~10 % for the client): the same
    headers, sent through the service client's own pipeline, so its authentication (shared key, a SAS, or a
    bearer token in Azure), retries, logging and tracing policies all apply. Errors are the SDK's too: mapped
    as the generated operation maps them, then refined by `process_storage_error` (ResourceExistsError for
    BlobAlreadyExists, ResourceModifiedError for a failed condition, ...)."""
    from azure.storage.blob._shared.request_handlers import add_metadata_headers
    from azure.storage.blob._shared.response_handlers import process_storage_error

    url = _blob_url(service, container, path)
    headers = {"x-ms-blob-type": "BlockBlob", "Content-Length": str(len(data)),
               **add_metadata_headers(dict(metadata)), "x-ms-version": service.api_version,
               "Content-Type": "application/octet-stream", "Accept": "application/xml"}
    if content_type:
        headers["x-ms-blob-content-type"] = content_type
    if not overwrite:
        headers["If-None-Match"] = "*"
    request = HttpRequest("PUT", url, headers=headers, content=data)
    try:
        response = service._pipeline.run(request, stream=False, data_stream_total=len(data),
                                         upload_stream_current=0).http_response
        if response.status_code != 201:
            map_error(status_code=response.status_code, response=response, error_map=_PUT_ERRORS)
            raise HttpResponseError(response=response)
    except HttpResponseError as exc:
        process_storage_error(exc)
    modified = response.headers.get("Last-Modified")
    return url, {"etag": response.headers.get("ETag"),
                 "last_modified": parsedate_to_datetime(modified) if modified else None}


def _chain_blocks(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """`head` then `rest`, holding no reference to a block once it is handed out (memory stays flat)."""
    while head:
        yield head.pop(0)
    yield from rest


class BlobStoreClient:
    """BlobStore over azure-storage-blob. Uploads stage blocks in parallel and commit once."""

    def __init__(self, service: BlobServiceClient, *, block_size: int = DEFAULT_BLOCK_SIZE,
                 max_concurrency: int = 4, copy_timeout: float = DEFAULT_COPY_TIMEOUT) -> None:
        self._service = service
        self._block_size = block_size
        self._max_concurrency = max_concurrency
        self._copy_timeout = copy_timeout

    @classmethod
    def from_connection_string(cls, conn: str, *, limits: StorageLimits | None = None,
                               **kwargs: Any) -> BlobStoreClient:
        return cls(BlobServiceClient.from_connection_string(conn, **storage_options("blob", limits)), **kwargs)

    def ensure_containers(self, names: Iterable[str] = CONTAINERS) -> None:
        for name in names:
            try:
                self._service.create_container(name)
            except ResourceExistsError:
                pass

    def upload_stream(
        self, container: str, path: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str] | None = None,
        overwrite: bool = True, content_type: str | None = None, before_commit: Callable[[], None] | None = None,
    ) -> BlobInfo:
        if not overwrite and self._service.get_blob_client(container, path).exists():
            # Cheap early refusal; the commit below is what decides (If-None-Match: *), atomically.
            raise ConflictError(f"blob {container}/{path} already exists")
        # overwrite=False: the commit is conditional, so a blob another writer committed meanwhile is never replaced.
        condition: dict[str, Any] = {} if overwrite else {"match_condition": MatchConditions.IfMissing}
        digest = hashlib.sha256()
        size = 0
        block_ids: list[str] = []
        # Unique block id prefix per upload: a retried upload never mixes with a crashed one's blocks.
        prefix = uuid.uuid4().hex[:16]
        in_flight: set[Future[Any]] = set()
        settings = ContentSettings(content_type=content_type) if content_type else None
        blocks = _rebuffer(chunks, self._block_size)
        with span("blob.upload", {"wharf.container": container, "wharf.blob_path": path}) as s:
            first = next(blocks, b"")
            second = next(blocks, None)
            if second is None:
                # The whole body fits in one block: one Put Blob request instead of Put Block + Put Block List.
                # Same guarantee: the blob appears whole or not at all.
                sha = hashlib.sha256(first).hexdigest()
                meta = {**_stored_metadata(metadata), "sha256": sha}
                if before_commit is not None:
                    before_commit()
                try:
                    url, put = put_blob(self._service, container, path, first, metadata=meta,
                                        content_type=content_type, overwrite=overwrite)
                except (ResourceExistsError, ResourceModifiedError) as exc:
                    raise ConflictError(f"blob {container}/{path} already exists") from exc
                s.set_attribute("file.size", len(first))
                s.set_attribute("wharf.single_put", True)
                return BlobInfo(container=container, path=path, size=len(first), sha256=sha, metadata=meta,
                                url=public_url(url), etag=str(put.get("etag") or ""),
                                last_modified=_when(put.get("last_modified")))
            blob = self._service.get_blob_client(container, path)
            all_blocks = _chain_blocks([first, second], blocks)
            del first, second  # the chain hands them out; keeping them here would pin two blocks for the upload
            with ThreadPoolExecutor(max_workers=self._max_concurrency, thread_name_prefix="blob-stage") as pool:
                for index, block in enumerate(all_blocks):
                    digest.update(block)
                    size += len(block)
                    block_id = base64.b64encode(f"{prefix}-{index:08d}".encode()).decode()
                    block_ids.append(block_id)
                    # Bound the blocks held in memory: at most max_concurrency in flight.
                    while len(in_flight) >= self._max_concurrency:
                        done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                        for fut in done:
                            fut.result()
                    in_flight.add(pool.submit(blob.stage_block, block_id, block, length=len(block)))
                for fut in in_flight:
                    fut.result()
            sha = digest.hexdigest()
            meta = {**_stored_metadata(metadata), "sha256": sha}
            if before_commit is not None:
                before_commit()  # may raise: the staged blocks are then never committed (nothing visible)
            try:
                committed = blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids], metadata=meta,
                                                   content_settings=settings, **condition)
            except (ResourceExistsError, ResourceModifiedError) as exc:
                # Nothing is committed; the service drops the staged blocks after a week.
                raise ConflictError(f"blob {container}/{path} already exists") from exc
            s.set_attribute("file.size", size)
        return BlobInfo(container=container, path=path, size=size, sha256=sha, metadata=meta,
                        url=public_url(blob.url),
                        etag=str(committed.get("etag") or ""), last_modified=_when(committed.get("last_modified")))

    def open_read(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        blob = self._service.get_blob_client(container, path)
        try:
            downloader = blob.download_blob(max_concurrency=1)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{path} not found") from exc
        return downloader.chunks()

    def open_ranges(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        """The blob as ranged GETs of at most `chunk_size` bytes, every one conditional on the first one's ETag
        (a blob replaced midway fails the read). Memory: one range. `open_read`'s SDK downloader fetches its first
        range at the client's max_single_get_size (32 MiB by default) and holds it."""
        blob = self._service.get_blob_client(container, path)
        try:
            first = blob.download_blob(offset=0, length=chunk_size, max_concurrency=1)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{path} not found") from exc
        except HttpResponseError as exc:
            if exc.status_code == 416:  # an empty blob has no byte 0
                return iter(())
            raise
        return self._ranges(blob, first, chunk_size, f"{container}/{path}")

    @staticmethod
    def _ranges(blob: Any, first: Any, chunk_size: int, where: str) -> Iterator[bytes]:
        # A ranged download's properties.size is the range's; the blob's is after the / of its Content-Range.
        content_range = str(getattr(first.properties, "content_range", "") or "")
        total = int(content_range.rpartition("/")[2]) if "/" in content_range else int(first.properties.size)
        etag = first.properties.etag
        data = first.readall()
        del first  # the downloader keeps its range's bytes: not held while the later ranges are read
        offset = len(data)
        yield data
        while offset < total:
            try:
                data = blob.download_blob(offset=offset, length=min(chunk_size, total - offset), max_concurrency=1,
                                          etag=etag, match_condition=MatchConditions.IfNotModified).readall()
            except ResourceModifiedError as exc:
                raise ConflictError(f"blob {where} changed while it was read") from exc
            if not data:
                raise DependencyUnavailableError("storage", f"blob {where}: no bytes at offset {offset} of {total}")
            offset += len(data)
            yield data

    def open_stream(self, container: str, path: str, *, range_size: int = STREAM_RANGE) -> Iterator[bytes]:
        """The blob's bytes as they arrive, in the transport's read blocks (256 KiB), from streamed GETs of up to
        `range_size` bytes, each after the first conditional on its ETag (a blob replaced midway fails the read
        with ConflictError). Memory: a block. `open_read`'s downloader reads whole 4 MiB ranges, one request at
        a time (and a first 32 MiB range it holds): per request Azurite spends ~15 ms, and the SDK copies each
        range twice; here a 512 MiB blob is 8 requests (benchmarks/README.md, SFTP delivery).

        The SDK has no public streaming read: this calls its generated `download` operation (what the
        downloader itself calls) with `stream` left on, through the client's pipeline and retry policy."""
        from azure.storage.blob._generated.models import ModifiedAccessConditions

        blob = self._service.get_blob_client(container, path)
        where = f"{container}/{path}"

        def get(offset: int, length: int, etag: str | None) -> tuple[Iterator[bytes], Mapping[str, Any]]:
            conditions = ModifiedAccessConditions(if_match=etag) if etag else None
            try:
                body, headers = blob._client.blob.download(
                    range=f"bytes={offset}-{offset + length - 1}", modified_access_conditions=conditions,
                    decompress=False,  # the stored bytes, as the sha256 recorded for them; offsets stay true
                    cls=lambda _response, body, headers: (body, headers))
            except ResourceNotFoundError as exc:
                raise NotFoundError(f"blob {where} not found") from exc
            return body, headers

        try:
            first = get(0, range_size, None)
        except HttpResponseError as exc:
            if exc.status_code == 416:  # an empty blob has no byte 0
                return iter(())
            raise
        return self._streamed(first, get, range_size, where)

    @staticmethod
    def _streamed(first: tuple[Iterator[bytes], Mapping[str, Any]],
                  get: Callable[[int, int, str | None], tuple[Iterator[bytes], Mapping[str, Any]]],
                  range_size: int, where: str) -> Iterator[bytes]:
        body, headers = first
        content_range = str(headers.get("Content-Range") or "")
        total = int(content_range.rpartition("/")[2]) if "/" in content_range \
            else int(headers.get("Content-Length") or 0)
        etag = str(headers.get("ETag") or "")
        offset = 0
        while True:
            try:
                for block in body:
                    offset += len(block)
                    yield block
            except (ServiceResponseError, IncompleteReadError, DecodeError) as exc:
                raise DependencyUnavailableError("storage", f"blob {where}: the read broke off at byte {offset} "
                                                            f"of {total}: {exc}") from exc
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()  # a consumer that stops early frees the connection
            if offset >= total:
                return
            try:
                body, _ = get(offset, min(range_size, total - offset), etag)
            except ResourceModifiedError as exc:
                raise ConflictError(f"blob {where} changed while it was read") from exc
            except HttpResponseError as exc:
                if exc.status_code == 412:
                    raise ConflictError(f"blob {where} changed while it was read") from exc
                raise

    def get_info(self, container: str, path: str) -> BlobInfo:
        blob = self._service.get_blob_client(container, path)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{path} not found") from exc
        meta = dict(props.metadata or {})
        return BlobInfo(container=container, path=path, size=props.size, sha256=meta.get("sha256", ""),
                        metadata=meta, url=public_url(blob.url), etag=str(props.etag or ""),
                        last_modified=props.last_modified)

    def copy(self, source_container: str, source_path: str, container: str, path: str, *, source_etag: str,
             metadata: Mapping[str, str] | None = None) -> BlobInfo:
        """Copy Blob, server side (within the account the source is authorised by this client's own
        credential) and pinned to `source_etag`; waits while the copy is pending (aborting it after
        `copy_timeout`), then reads the copy once for its sha256 and stores it in the copy's metadata."""
        source = self._service.get_blob_client(source_container, source_path)
        target = self._service.get_blob_client(container, path)
        meta = _stored_metadata(metadata)
        where = f"{source_container}/{source_path} -> {container}/{path}"
        with span("blob.copy", {"wharf.container": container, "wharf.blob_path": path,
                                "wharf.source": f"{source_container}/{source_path}"}) as s:
            try:
                started = target.start_copy_from_url(source.url, metadata=meta, source_etag=source_etag,
                                                     source_match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError as exc:
                raise ConflictError(f"blob {source_container}/{source_path} changed since version {source_etag}; "
                                    "not copied") from exc
            except ResourceNotFoundError as exc:
                if str(getattr(exc, "error_code", "") or "") in _SOURCE_GONE:
                    raise NotFoundError(f"blob {source_container}/{source_path} not found; not copied") from exc
                raise
            self._wait_for_copy(target, str(started.get("copy_status") or ""), str(started.get("copy_id") or ""),
                                where)
            digest = hashlib.sha256()
            size = 0
            for chunk in target.download_blob(max_concurrency=1).chunks():
                digest.update(chunk)
                size += len(chunk)
            meta["sha256"] = sha = digest.hexdigest()
            stamped = target.set_blob_metadata(meta)
            s.set_attribute("file.size", size)
        return BlobInfo(container=container, path=path, size=size, sha256=sha, metadata=meta,
                        url=public_url(target.url),
                        etag=str(stamped.get("etag") or ""), last_modified=_when(stamped.get("last_modified")))

    def _wait_for_copy(self, target: Any, status: str, copy_id: str, where: str) -> None:
        """Same-account copies of block blobs usually end at once; a pending one is polled with back-off."""
        deadline = time.monotonic() + self._copy_timeout
        delay = 0.1
        description = ""
        while status == "pending":
            if time.monotonic() > deadline:
                try:
                    target.abort_copy(copy_id)
                except ResourceNotFoundError:
                    pass
                raise DependencyUnavailableError("blob copy", f"{where} still pending after "
                                                              f"{self._copy_timeout:.0f} s; aborted")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            props = target.get_blob_properties()
            status, description = str(props.copy.status or ""), str(props.copy.status_description or "")
        if status != "success":
            raise DependencyUnavailableError("blob copy", f"{where} ended {status or 'without a status'}"
                                                          + (f": {description}" if description else ""))

    def download_link(self, container: str, path: str, *, expires_in: timedelta) -> DownloadLink:
        """A read-only SAS URL: a user delegation SAS when the client signs in with Entra ID (Azure), else a service
        SAS signed with the account key (Azurite, which has no user delegation keys: the local stand-in)."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        now = datetime.now(UTC)
        start, expiry = now - timedelta(minutes=5), now + expires_in
        blob = self._service.get_blob_client(container, path)
        credential = self._service.credential
        account_key = getattr(credential, "account_key", None)
        hours = expires_in / timedelta(hours=1)
        with span("blob.download_link", {"wharf.container": container, "wharf.sas.hours": hours}):
            if account_key:
                kind = "service-sas"
                token = generate_blob_sas(self._service.account_name or "", container, path, account_key=account_key,
                                          permission=BlobSasPermissions(read=True), start=start, expiry=expiry)
            else:
                kind = "user-delegation-sas"
                key = self._service.get_user_delegation_key(start, expiry)
                token = generate_blob_sas(self._service.account_name or "", container, path, user_delegation_key=key,
                                          permission=BlobSasPermissions(read=True), start=start, expiry=expiry)
        register_secret(token)
        return DownloadLink(url=f"{public_url(blob.url)}?{token}", expires_at=expiry, kind=kind)

    def exists(self, container: str, path: str) -> bool:
        return bool(self._service.get_blob_client(container, path).exists())

    def list_blobs(self, container: str, prefix: str = "") -> list[BlobInfo]:
        client = self._service.get_container_client(container)
        return [
            BlobInfo(container=container, path=b.name, size=b.size, sha256=(b.metadata or {}).get("sha256", ""),
                     metadata=dict(b.metadata or {}))
            for b in client.list_blobs(name_starts_with=prefix or None, include=["metadata"])
        ]

    def delete(self, container: str, path: str, *, etag: str | None = None) -> None:
        blob = self._service.get_blob_client(container, path)
        try:
            if etag is None:
                blob.delete_blob()
            else:
                blob.delete_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        except ResourceNotFoundError:
            pass
        except ResourceModifiedError as exc:
            if blob.exists():  # the condition fails on an absent blob too (Azurite): absent is success
                raise ConflictError(f"blob {container}/{path} changed since version {etag}; not deleted") from exc

    def ping(self) -> None:
        """Cheap call that fails when storage is unreachable (used by /api/health)."""
        self._service.get_service_properties()
