"""Ports: what services need from the outside world. Adapters implement them; fakes do too."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from shared.domain.jobs import FileTransfer, Job, JobEvent, LogEntry


@dataclass(frozen=True)
class BlobInfo:
    container: str
    path: str
    size: int
    sha256: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    url: str = ""


@runtime_checkable
class BlobStore(Protocol):
    """Blob storage. Writes stage blocks and commit once: nothing is visible until whole."""

    def ensure_containers(self, names: Iterable[str]) -> None: ...

    def upload_stream(
        self, container: str, path: str, chunks: Iterable[bytes], *, metadata: Mapping[str, str] | None = None,
        overwrite: bool = True,
    ) -> BlobInfo:
        """Stream chunks into staged blocks, compute sha256 on the way, commit once."""
        ...

    def open_read(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        """Chunks of an existing blob; raises NotFoundError when absent."""
        ...

    def get_info(self, container: str, path: str) -> BlobInfo:
        """Size and metadata; raises NotFoundError when absent."""
        ...

    def exists(self, container: str, path: str) -> bool: ...

    def list_blobs(self, container: str, prefix: str = "") -> list[BlobInfo]: ...

    def delete(self, container: str, path: str) -> None:
        """Succeeds when already absent."""
        ...


@runtime_checkable
class JobStore(Protocol):
    """Jobs, transfers and logs. JobEvents is the source of truth; IntegrationJob its projection."""

    def ensure_tables(self) -> None: ...

    def append(self, job_id: str, event_type: str, data: Mapping[str, Any] | None = None) -> JobEvent:
        """Append an event (next sequence number, insert-if-absent) and update the projection."""
        ...

    def events(self, job_id: str) -> list[JobEvent]: ...

    def get_job(self, job_id: str) -> Job:
        """Raises NotFoundError when absent."""
        ...

    def list_jobs(self, *, partner: str | None = None, status: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first."""
        ...

    def rebuild(self, job_id: str | None = None) -> int:
        """Re-fold IntegrationJob from JobEvents (one job or all); returns how many were rebuilt."""
        ...

    def add_transfer(self, transfer: FileTransfer) -> None: ...

    def transfers(self, job_id: str) -> list[FileTransfer]: ...

    def log(self, job_id: str, level: str, message: str, *, trace_id: str = "") -> None: ...

    def logs(self, job_id: str) -> list[LogEntry]: ...


@runtime_checkable
class MessageQueue(Protocol):
    """Storage queues as the Functions host sees them (base64 text messages)."""

    def ensure_queues(self, names: Iterable[str]) -> None: ...

    def send(self, queue: str, message: Mapping[str, Any], *, visibility_timeout: int | None = None) -> None:
        """JSON-encode and enqueue (base64, as the host expects)."""
        ...

    def peek(self, queue: str, max_messages: int = 32) -> list[dict[str, Any]]: ...


@runtime_checkable
class Publisher(Protocol):
    """Events to other systems (file.processed, job.failed, ...)."""

    def publish(self, event_type: str, data: Mapping[str, Any], *, subject: str = "") -> None: ...


@runtime_checkable
class Secrets(Protocol):
    """Secret values by name (Key Vault secret names). Values never reach logs, spans or errors."""

    def get(self, name: str) -> str:
        """Raises NotFoundError naming the secret (never its value) when absent."""
        ...
