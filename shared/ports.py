"""Ports: what services need from the outside world. Adapters implement them; fakes do too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from shared.domain.jobs import FileTransfer, Job, JobEvent, LogEntry, NewJob
from shared.domain.ledger import BreakerRecord, LedgerEntry
from shared.domain.remote import RemoteFile


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
        overwrite: bool = True, content_type: str | None = None, before_commit: Callable[[], None] | None = None,
    ) -> BlobInfo:
        """Stream chunks into staged blocks, compute sha256 on the way, commit once (a body that fits in one
        block goes up in a single Put Blob). `before_commit` runs once every byte has been read and before
        anything becomes visible; if it raises, nothing is committed."""
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

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[str]:
        """Create many new jobs at once, each with its first events (seq 0, 1, ...), FileTransfer rows and log
        lines, and its projection. Jobs sharing a partition (`job_partition`) are written in table transactions.
        A job that already exists is left untouched (none of its rows written): its id is returned, so the
        caller can record it the one-by-one way. Returns the ids that already existed."""
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


# --- Mailbox (mail ingestion through Microsoft Graph) ------------------------------------------------


@dataclass(frozen=True)
class MailMessage:
    """A message in a polled folder. `id` is Graph's and changes when the message moves;
    `internet_message_id` (RFC 5322 Message-ID) does not."""

    id: str
    internet_message_id: str
    sender: str  # the From address, lowercased
    subject: str
    received_at: datetime
    is_read: bool = False
    has_attachments: bool = False


@dataclass(frozen=True)
class MailAttachment:
    """An attachment's metadata (never its content). `kind` is file, item (an attached message) or reference."""

    id: str
    name: str
    content_type: str
    size: int
    kind: str = "file"
    is_inline: bool = False


@runtime_checkable
class Mailbox(Protocol):
    """A mail service (Microsoft Graph) seen as folders of messages with attachments.

    `mailbox` is a user id or address. Errors: NotFoundError when a folder, message or attachment
    is gone; DependencyUnavailableError when the service fails or throttles past the retry budget;
    ConfigurationError when credentials or permissions are wrong.
    """

    def resolve_folder(self, mailbox: str, path: str) -> str:
        """Folder id for `Inbox/Partners/Acme` (first part: a well-known name or a top-level folder)."""
        ...

    def list_messages(
        self, mailbox: str, folder_id: str, *, unread_only: bool = False, with_attachments: bool = False,
        received_after: datetime | None = None, page_size: int = 50,
    ) -> Iterator[MailMessage]:
        """Messages in the folder (oldest first when `received_after` is given), following every page."""
        ...

    def list_attachments(self, mailbox: str, message_id: str) -> list[MailAttachment]:
        """Metadata of every attachment, inline ones included; never their content."""
        ...

    def open_attachment(self, mailbox: str, message_id: str, attachment_id: str) -> Iterator[bytes]:
        """The attachment's raw bytes (MIME for an item attachment) in chunks; memory stays flat."""
        ...

    def mark_read(self, mailbox: str, message_id: str) -> None: ...

    def move(self, mailbox: str, message_id: str, folder_id: str) -> str:
        """Move the message; returns its new id."""
        ...


# --- File sources (SFTP), the ingestion ledger and circuit breakers ---------------------------------


@runtime_checkable
class FileSource(Protocol):
    """One open session to a partner's file server.

    Paths are absolute str; bytes that are not UTF-8 travel as surrogate escapes. Errors:
    RemoteFileError (callers branch on `.errno`: ENOENT is a normal outcome) for one file,
    SourceUnavailableError when the connection fails (transient). `close()` is always safe.
    """

    host: str
    port: int

    def list_files(self, directory: str, *, recursive: bool = False,
                   skip_dirs: Iterable[str] = ()) -> list[RemoteFile]:
        """Regular files in `directory` (and below it when recursive, except `skip_dirs`)."""
        ...

    def stat(self, path: str) -> RemoteFile: ...

    def read_chunks(self, path: str, *, expected: RemoteFile | None = None) -> Iterator[bytes]:
        """The file's bytes in order, pipelined, memory bounded. With `expected`, raises
        RemoteFileChangedError (before the last chunk is yielded) if the file is not that version."""
        ...

    def remove(self, path: str) -> None:
        """Succeeds when already absent."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Rename (replacing `target`); creates the target folder when missing."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FileSourceFactory(Protocol):
    """Opens sessions from a partner's catalogue source block (credentials resolved through Secrets)."""

    def open(self, partner_id: str, config: Any) -> FileSource:
        """Connected and authenticated; raises HostKeyMismatchError, SourceAuthError, SourceUnavailableError."""
        ...


@runtime_checkable
class Ledger(Protocol):
    """Exactly-once ingestion records (PK partner, RK ledger key). Instances agree through insert-if-absent
    and ETags; every write returns the entry with its new `etag`."""

    def ensure_table(self) -> None: ...

    def get(self, partner: str, key: str) -> LedgerEntry:
        """Raises NotFoundError when absent."""
        ...

    def get_many(self, partner: str, keys: Iterable[str]) -> dict[str, LedgerEntry]:
        """The entries that exist among `keys`, by key."""
        ...

    def create(self, entry: LedgerEntry) -> LedgerEntry:
        """Insert-if-absent; raises ConflictError when the key exists (someone else has it)."""
        ...

    def create_many(self, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        """All-or-nothing insert of up to 100 entries of one partner; ConflictError when any key exists."""
        ...

    def update(self, entry: LedgerEntry) -> LedgerEntry:
        """Replace if the stored ETag is still `entry.etag`; ConflictError when it moved, NotFoundError when gone."""
        ...

    def update_many(self, entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
        """All-or-nothing `update` of up to 100 entries of one partner; ConflictError when any ETag moved."""
        ...

    def entries(self, partner: str, *, state: str | None = None) -> list[LedgerEntry]:
        """Every entry of a partner (optionally in one state), for operators and tests."""
        ...


@runtime_checkable
class Breakers(Protocol):
    """Circuit-breaker records (PK channel, RK partner), shared by all instances through ETags."""

    def ensure_table(self) -> None: ...

    def get(self, channel: str, partner: str) -> BreakerRecord:
        """The stored record, or a new CLOSED one (empty etag) when there is none."""
        ...

    def save(self, record: BreakerRecord) -> BreakerRecord:
        """Insert when `record.etag` is empty, else replace if unchanged; ConflictError when another
        instance wrote first."""
        ...


@runtime_checkable
class MailboxFactory(Protocol):
    """Opens a Mailbox from a partner's catalogue mailbox block (app credential resolved through Secrets)."""

    def open(self, partner_id: str, config: Any) -> Mailbox: ...
