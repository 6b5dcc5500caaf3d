"""Ports: what services need from the outside world. Adapters implement them; fakes do too."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from shared.domain.delivery import Delivery
from shared.domain.job_index import JobPage, JobQuery
from shared.domain.jobs import FileTransfer, Job, JobEvent, LogEntry, NewJob
from shared.domain.ledger import BreakerRecord, LastPoll, LedgerEntry
from shared.domain.remote import RemoteFile
from shared.domain.sla import SlaWindow


@dataclass(frozen=True)
class BlobInfo:
    container: str
    path: str
    size: int
    sha256: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    url: str = ""  # no query string: never a SAS (it is recorded and published)
    etag: str = ""  # the version: every write (metadata included) gives a new one; "" when not known
    last_modified: datetime | None = None


@dataclass(frozen=True)
class DownloadLink:
    """A time-limited read URL for one blob. `kind`: user-delegation-sas (Azure, Entra ID) or service-sas (the
    local stand-in, signed with the account key). The URL is a credential: never logged or stored."""

    url: str
    expires_at: datetime
    kind: str


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
        anything becomes visible; if it raises, nothing is committed. `overwrite=False` is create-if-absent,
        decided atomically at the commit (If-None-Match: *): ConflictError when a blob is at the path, even one
        another writer committed while this upload was running; nothing of this upload is then visible."""
        ...

    def open_read(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        """Chunks of an existing blob; raises NotFoundError when absent."""
        ...

    def get_info(self, container: str, path: str) -> BlobInfo:
        """Size, metadata, ETag and last-modified time; raises NotFoundError when absent."""
        ...

    def copy(self, source_container: str, source_path: str, container: str, path: str, *, source_etag: str,
             metadata: Mapping[str, str] | None = None) -> BlobInfo:
        """Server-side copy of exactly the version `source_etag` of a blob to `container/path` (replacing
        what is there), with `metadata` (not the source's) plus the copy's sha256, from one streamed read
        of the copy (memory stays flat). Raises ConflictError when the source is no longer that version and
        NotFoundError when it is gone; nothing is written then."""
        ...

    def exists(self, container: str, path: str) -> bool: ...

    def open_ranges(self, container: str, path: str, *, chunk_size: int = 4 * 1024 * 1024) -> Iterator[bytes]:
        """The blob's bytes as ranged reads of at most `chunk_size` (memory: one range, from the first byte on)."""
        ...

    def open_stream(self, container: str, path: str) -> Iterator[bytes]:
        """The blob's bytes as they arrive, in blocks of any size (memory: a block); few, long requests. Raises
        NotFoundError when absent, ConflictError when the blob is replaced while it is read."""
        ...

    def download_link(self, container: str, path: str, *, expires_in: timedelta) -> DownloadLink:
        """A read-only URL for the blob, valid for `expires_in`."""
        ...

    def list_blobs(self, container: str, prefix: str = "") -> list[BlobInfo]: ...

    def delete(self, container: str, path: str, *, etag: str | None = None) -> None:
        """Succeeds when already absent. With `etag`, deletes only that version of the blob: ConflictError
        when it has been written since (a newer upload under the same name is never lost)."""
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

    def query_jobs(self, query: JobQuery, *, limit: int = 50, cursor: str | None = None,
                   now: datetime | None = None) -> JobPage:
        """Newest first (creation time), filtered; `cursor` is a page's `next_cursor` (key-seek, no offset).
        ValueError when the cursor is not one."""
        ...

    def rebuild(self, job_id: str | None = None) -> int:
        """Re-fold IntegrationJob from JobEvents (one job or all); returns how many were rebuilt."""
        ...

    def ensure_projection(self, job_id: str) -> Job | None:
        """Re-fold and write the job's projection when it is missing or behind its events (a crash between
        the two); returns it, None when the job has no events."""
        ...

    def repair_projections(self, *, since: datetime) -> list[str]:
        """`ensure_projection` for the jobs created since `since` (drop jobs aside); returns the ids repaired."""
        ...

    def landed_between(self, partner: str, since: datetime, until: datetime) -> list[Job]:
        """The partner's jobs whose id time (claim or drop time) is in `[since, until)` and that landed a file
        (a blob path), replays aside: what an SLA window counts. Range reads on the partner's projections."""
        ...

    def add_transfer(self, transfer: FileTransfer) -> None: ...

    def transfers(self, job_id: str) -> list[FileTransfer]: ...

    def log(self, job_id: str, level: str, message: str, *, trace_id: str = "") -> None: ...

    def logs(self, job_id: str) -> list[LogEntry]: ...


@dataclass(frozen=True)
class QueuedMessage:
    """One message as it sits in a queue. `body` is what a trigger would be handed: the content base64-decoded
    (or, for content that is not base64, its text as UTF-8, as the host's own poison copies may be).
    `pop_receipt` is set only by `receive`: it is what `delete` and `release` need."""

    id: str
    body: bytes
    inserted_at: datetime | None = None
    dequeue_count: int = 0
    pop_receipt: str = ""


@runtime_checkable
class MessageQueue(Protocol):
    """Storage queues as the Functions host sees them (base64 text messages)."""

    def ensure_queues(self, names: Iterable[str]) -> None: ...

    def send(self, queue: str, message: Mapping[str, Any], *, visibility_timeout: int | None = None) -> None:
        """JSON-encode and enqueue (base64, as the host expects)."""
        ...

    def peek(self, queue: str, max_messages: int = 32) -> list[dict[str, Any]]: ...

    def send_raw(self, queue: str, body: bytes) -> str:
        """Enqueue `body` exactly (base64, as the host expects); returns the new message's id."""
        ...

    def peek_raw(self, queue: str, max_messages: int = 32) -> list[QueuedMessage]:
        """The first visible messages (at most 32: the service's limit), untouched; [] when the queue is absent."""
        ...

    def receive(self, queue: str, *, max_messages: int = 32, visibility_timeout: int = 30) -> list[QueuedMessage]:
        """Take up to `max_messages` (at most 32) visible messages, each hidden for `visibility_timeout` seconds
        and its dequeue count raised; [] when the queue is absent. Each must then be deleted or released."""
        ...

    def delete(self, queue: str, message_id: str, pop_receipt: str) -> None:
        """Delete a received message; NotFoundError when it is gone or its receipt is stale (received since)."""
        ...

    def release(self, queue: str, message_id: str, pop_receipt: str) -> None:
        """Make a received message visible again now; NotFoundError when it is gone or its receipt is stale."""
        ...

    def depth(self, queue: str) -> int:
        """Approximate number of messages (visible or not); 0 when the queue is absent."""
        ...


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


@dataclass(frozen=True)
class OutgoingMail:
    """A message Wharf sends. `internet_message_id` is generated by Wharf and stored before sending: what a
    retry looks for in Sent Items. `html` says `body` is HTML."""

    internet_message_id: str
    subject: str
    body: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    html: bool = False
    receipt: bool = False  # isDeliveryReceiptRequested


@dataclass(frozen=True)
class FileToAttach:
    """A file attachment: its name, type and size, and its bytes as chunks (read once, forward only)."""

    name: str
    content_type: str
    size: int
    chunks: Iterable[bytes]


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


@runtime_checkable
class MailSender(Mailbox, Protocol):
    """Sending from a mailbox through Graph (Mail.Send, and Mail.ReadWrite for drafts and Sent Items); the
    Mailbox reads are what the delivery status checks use on the sender's inbox."""

    def send_mail(self, mailbox: str, mail: OutgoingMail, attachment: FileToAttach | None = None) -> None:
        """sendMail, the attachment (small: read into the request) inline; saved to Sent Items."""
        ...

    def create_draft(self, mailbox: str, mail: OutgoingMail) -> str:
        """A draft in Drafts; returns its Graph id."""
        ...

    def upload_attachment(self, mailbox: str, draft_id: str, attachment: FileToAttach, *,
                          chunk_size: int) -> int:
        """An attachment upload session on the draft, the chunks PUT in order; returns the bytes uploaded."""
        ...

    def send_draft(self, mailbox: str, draft_id: str) -> None: ...

    def find_by_internet_message_id(self, mailbox: str, folder: str, internet_message_id: str) -> list[MailMessage]:
        """Messages of a folder (a well-known name: sentitems, drafts) with this internetMessageId."""
        ...

    def delete_message(self, mailbox: str, message_id: str) -> None: ...

    def open_mime(self, mailbox: str, message_id: str) -> Iterator[bytes]:
        """A message's MIME source (`$value`), streamed."""
        ...


class MailSenderFactory(Protocol):
    """Opens the sender for a mailbox with its app registration (catalogue `auth`)."""

    def open(self, mailbox: str, auth: Any) -> MailSender: ...


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
        """Rename, never replacing: RemoteFileError with errno EEXIST (its path the target) when `target`
        exists, ENOENT when `source` does not. Creates the target folder when missing."""
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
class LastPolls(Protocol):
    """The latest poll's summary per channel and partner (PK channel, RK partner), overwritten by each poll."""

    def ensure_table(self) -> None: ...

    def record(self, poll: LastPoll) -> None:
        """Store `poll` as the latest of its channel and partner (replaces the previous one)."""
        ...

    def get(self, channel: str, partner: str) -> LastPoll | None:
        """The latest recorded poll, None when none is."""
        ...


class SlaWindows(Protocol):
    """Evaluated SLA windows (PK partner, RK expectation + window opening): insert-if-absent, then ETags."""

    def ensure_table(self) -> None: ...

    def windows(self, partner: str, expectation: str, *, since: datetime) -> list[SlaWindow]:
        """The expectation's recorded windows that opened at `since` or later, oldest first."""
        ...

    def recent(self, *, partner: str | None = None, since: datetime) -> list[SlaWindow]:
        """Every recorded window (of one partner, or all) that opened at `since` or later."""
        ...

    def create(self, window: SlaWindow) -> SlaWindow | None:
        """Record a window; None when it is recorded already (another instance or an earlier run won)."""
        ...

    def update(self, window: SlaWindow) -> SlaWindow | None:
        """Replace the window if unchanged since `window.etag` was read; None when another instance wrote first."""
        ...


@runtime_checkable
class MailboxFactory(Protocol):
    """Opens a Mailbox from a partner's catalogue mailbox block (app credential resolved through Secrets)."""

    def open(self, partner_id: str, config: Any) -> Mailbox: ...


# --- Outbound delivery: file sinks (SFTP) and the Deliveries records ---------------------------------


@runtime_checkable
class FileSink(Protocol):
    """One open session to a partner's file server, for writing (the SFTP adapter is a FileSource too).

    Errors as FileSource: RemoteFileError (branch on `.errno`) for one path, SourceUnavailableError when the
    connection fails. `close()` is always safe."""

    host: str
    port: int

    @property
    def atomic_replace(self) -> bool:
        """Whether `replace` is one atomic rename (the server offers posix-rename@openssh.com)."""
        ...

    def checksum_algorithms(self) -> frozenset[str]:
        """Hash algorithms the server computes for `checksum` (its check-file extension); empty when none."""
        ...

    def write_chunks(self, path: str, chunks: Iterable[bytes]) -> int:
        """Create or truncate `path` (its folder made when missing) and write the chunks (of any size) in order,
        pipelined, memory bounded; returns the bytes written. Every write is acknowledged when this returns."""
        ...

    def stat(self, path: str) -> RemoteFile:
        """RemoteFileError ENOENT when absent."""
        ...

    def checksum(self, path: str, algorithm: str) -> str | None:
        """The server's hex digest of the file, or None when the server does not offer `algorithm`."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Rename, never replacing: EEXIST (its path the target) when `target` exists, ENOENT when `source`
        does not. Creates the target folder when missing."""
        ...

    def replace(self, source: str, target: str) -> None:
        """Rename, replacing `target` when it exists (atomically where `atomic_replace`)."""
        ...

    def remove(self, path: str) -> None:
        """Succeeds when already absent."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FileSinkFactory(Protocol):
    """Opens writing sessions from a partner's catalogue sftp block (credentials resolved through Secrets)."""

    def open(self, partner_id: str, config: Any) -> FileSink:
        """Connected and authenticated; raises HostKeyMismatchError, SourceAuthError, SourceUnavailableError."""
        ...


@runtime_checkable
class Deliveries(Protocol):
    """One record per (job, destination index) (PK job group, RK job suffix + index), shared by instances
    through insert-if-absent and ETags; every write returns the record with its new `etag`."""

    def ensure_table(self) -> None: ...

    def get(self, job_id: str, index: int) -> Delivery:
        """Raises NotFoundError when absent."""
        ...

    def create(self, delivery: Delivery) -> Delivery:
        """Insert-if-absent; ConflictError when the record exists."""
        ...

    def update(self, delivery: Delivery) -> Delivery:
        """Replace if the stored ETag is still `delivery.etag`; ConflictError when it moved, NotFoundError when
        gone."""
        ...

    def for_job(self, job_id: str) -> list[Delivery]:
        """A job's deliveries by destination index."""
        ...

    def list_deliveries(self, *, state: str | None = None, partner: str | None = None,
                        limit: int = 100) -> list[Delivery]:
        """The most recently updated deliveries (optionally in one state, of one job partner), for operators."""
        ...


class SlotsBusyError(Exception):
    """Every slot of a limited resource stayed taken for the whole wait (e.g. all of a partner's SFTP sessions)."""


@runtime_checkable
class Slot(Protocol):
    """One held slot of a limited resource; `release()` frees it (safe to call twice)."""

    index: int

    def release(self) -> None: ...


@runtime_checkable
class Slots(Protocol):
    """Counting semaphores shared by every process and instance (blob leases in Azure and Azurite).

    At most `limit` holders of `name` at once; a holder that dies without releasing frees its slot within the
    lease time."""

    def acquire(self, name: str, limit: int, *, wait_seconds: float) -> Slot:
        """A free slot of `name` (0 .. limit-1), waiting up to `wait_seconds` (0: try once); SlotsBusyError when
        none freed in time."""
        ...
