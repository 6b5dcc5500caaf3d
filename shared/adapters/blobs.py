"""Blob Storage adapter: staged blocks committed once, sha256 on the way, memory flat."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings

from shared.adapters.http import transport_options
from shared.domain.errors import ConflictError, NotFoundError
from shared.observability.tracing import span
from shared.ports import BlobInfo

DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024
CONTAINERS = ("inbound", "drop", "processed", "quarantine", "archive", "outbound", "reports", "staging")


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


def _chain_blocks(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """`head` then `rest`, holding no reference to a block once it is handed out (memory stays flat)."""
    while head:
        yield head.pop(0)
    yield from rest


class BlobStoreClient:
    """BlobStore over azure-storage-blob. Uploads stage blocks in parallel and commit once."""

    def __init__(self, service: BlobServiceClient, *, block_size: int = DEFAULT_BLOCK_SIZE,
                 max_concurrency: int = 4) -> None:
        self._service = service
        self._block_size = block_size
        self._max_concurrency = max_concurrency

    @classmethod
    def from_connection_string(cls, conn: str, **kwargs: Any) -> BlobStoreClient:
        return cls(BlobServiceClient.from_connection_string(conn, **transport_options()), **kwargs)

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
        blob = self._service.get_blob_client(container, path)
        if not overwrite and blob.exists():
            raise ConflictError(f"blob {container}/{path} already exists")
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
                meta = {**(metadata or {}), "sha256": sha}
                if before_commit is not None:
                    before_commit()
                blob.upload_blob(first, overwrite=True, metadata=meta, content_settings=settings,
                                 length=len(first))
                s.set_attribute("file.size", len(first))
                s.set_attribute("wharf.single_put", True)
                return BlobInfo(container=container, path=path, size=len(first), sha256=sha, metadata=meta,
                                url=blob.url)
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
            meta = {**(metadata or {}), "sha256": sha}
            if before_commit is not None:
                before_commit()  # may raise: the staged blocks are then never committed (nothing visible)
            blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids], metadata=meta,
                                   content_settings=settings)
            s.set_attribute("file.size", size)
        return BlobInfo(container=container, path=path, size=size, sha256=sha, metadata=meta, url=blob.url)

    def open_read(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        blob = self._service.get_blob_client(container, path)
        try:
            downloader = blob.download_blob(max_concurrency=1)
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{path} not found") from exc
        return downloader.chunks()

    def get_info(self, container: str, path: str) -> BlobInfo:
        blob = self._service.get_blob_client(container, path)
        try:
            props = blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"blob {container}/{path} not found") from exc
        meta = dict(props.metadata or {})
        return BlobInfo(container=container, path=path, size=props.size, sha256=meta.get("sha256", ""),
                        metadata=meta, url=blob.url)

    def exists(self, container: str, path: str) -> bool:
        return bool(self._service.get_blob_client(container, path).exists())

    def list_blobs(self, container: str, prefix: str = "") -> list[BlobInfo]:
        client = self._service.get_container_client(container)
        return [
            BlobInfo(container=container, path=b.name, size=b.size, sha256=(b.metadata or {}).get("sha256", ""),
                     metadata=dict(b.metadata or {}))
            for b in client.list_blobs(name_starts_with=prefix or None, include=["metadata"])
        ]

    def delete(self, container: str, path: str) -> None:
        try:
            self._service.get_blob_client(container, path).delete_blob()
        except ResourceNotFoundError:
            pass

    def ping(self) -> None:
        """Cheap call that fails when storage is unreachable (used by /api/health)."""
        self._service.get_service_properties()
