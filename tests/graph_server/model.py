"""In-memory mailbox model behind the Graph test server: users, folders, messages, attachments."""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# Blocks of synthetic content are always generated at this size, so a seed gives one byte stream
# however the reader chunks it.
SYNTH_BLOCK = 1024 * 1024

WELL_KNOWN = ("msgfolderroot", "inbox", "archive", "deleteditems", "drafts", "sentitems", "junkemail", "outbox")
_DISPLAY = {"msgfolderroot": "Top of Information Store", "inbox": "Inbox", "archive": "Archive",
            "deleteditems": "Deleted Items", "drafts": "Drafts", "sentitems": "Sent Items",
            "junkemail": "Junk Email", "outbox": "Outbox"}


def graph_id(prefix: str = "AAMkAD") -> str:
    """An opaque id shaped like Graph's: base64 with '=' padding, '-' and '_' (must be URL-encoded)."""
    raw = uuid.uuid4().bytes + uuid.uuid4().bytes[:7]
    return prefix + base64.urlsafe_b64encode(raw).decode()


def synthetic_chunks(size: int, seed: int) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes, generated block by block (memory stays flat)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        block = rng.randbytes(min(SYNTH_BLOCK, left))
        left -= len(block)
        yield block


def synthetic_sha256(size: int, seed: int) -> str:
    digest = hashlib.sha256()
    for block in synthetic_chunks(size, seed):
        digest.update(block)
    return digest.hexdigest()


@dataclass
class Attachment:
    name: str
    content_type: str = "application/octet-stream"
    kind: str = "file"  # file | item | reference
    is_inline: bool = False
    data: bytes | None = None
    seed: int | None = None  # synthetic content of `size` bytes instead of `data`
    size: int = 0
    content_id: str | None = None
    id: str = field(default_factory=lambda: graph_id("AAMkAGAtt"))
    last_modified: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.data is not None:
            self.size = len(self.data)
        elif self.seed is None:
            self.data = b""
            self.size = 0

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            for i in range(0, len(self.data), SYNTH_BLOCK):
                yield self.data[i:i + SYNTH_BLOCK]
        else:
            assert self.seed is not None
            yield from synthetic_chunks(self.size, self.seed)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()

    @property
    def odata_type(self) -> str:
        return {"file": "#microsoft.graph.fileAttachment", "item": "#microsoft.graph.itemAttachment",
                "reference": "#microsoft.graph.referenceAttachment"}[self.kind]


def file_attachment(name: str, data: bytes | None = None, *, size: int | None = None, seed: int | None = None,
                    content_type: str = "application/octet-stream", inline: bool = False) -> Attachment:
    """A fileAttachment with literal bytes, or `size` synthetic bytes from `seed`."""
    if data is None and size is None:
        raise ValueError("give data or size")
    if data is None:
        return Attachment(name=name, content_type=content_type, is_inline=inline,
                          seed=seed if seed is not None else random.randrange(1 << 30), size=int(size or 0))
    return Attachment(name=name, content_type=content_type, is_inline=inline, data=data,
                      content_id=f"{uuid.uuid4().hex}@test" if inline else None)


def item_attachment(name: str, mime: bytes) -> Attachment:
    """An itemAttachment (an attached message); its `$value` is the MIME text."""
    return Attachment(name=name, content_type="message/rfc822", kind="item", data=mime)


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None


@dataclass
class Message:
    id: str
    folder_id: str
    subject: str
    sender: str
    sender_name: str
    received: datetime
    internet_message_id: str
    is_read: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    body: str = ""
    change_key: int = 1
    is_draft: bool = False
    body_type: str = "text"
    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    receipt_requested: bool = False
    mime: bytes | None = None  # the raw MIME source (`$value`) of a seeded message, e.g. a delivery report

    @property
    def has_attachments(self) -> bool:
        # As in Graph: inline attachments do not count.
        return any(not a.is_inline for a in self.attachments)


class User:
    """One mailbox: folders (with the well-known ones) and messages."""

    def __init__(self, address: str, lock: threading.RLock) -> None:
        self.id = str(uuid.uuid4())
        self.address = address.lower()
        self._lock = lock
        self.folders: dict[str, Folder] = {}
        self.messages: dict[str, Message] = {}
        root = Folder(graph_id("AAMkAGFold"), _DISPLAY["msgfolderroot"], None, "msgfolderroot")
        self.folders[root.id] = root
        for name in WELL_KNOWN[1:]:
            f = Folder(graph_id("AAMkAGFold"), _DISPLAY[name], root.id, name)
            self.folders[f.id] = f

    # --- folders -----------------------------------------------------------------------------

    def folder(self, ref: str) -> Folder | None:
        """By id or well-known name (case-insensitive, as Graph accepts)."""
        with self._lock:
            if ref in self.folders:
                return self.folders[ref]
            for f in self.folders.values():
                if f.well_known and f.well_known == ref.lower():
                    return f
        return None

    def children(self, folder_id: str) -> list[Folder]:
        with self._lock:
            return sorted((f for f in self.folders.values() if f.parent_id == folder_id),
                          key=lambda f: f.display_name.lower())

    def folder_path(self, path: str, *, create: bool = True) -> Folder:
        """`Inbox/Partners/Acme`: the first part is a well-known name or a top-level folder."""
        with self._lock:
            parts = [p for p in path.split("/") if p]
            if not parts:
                raise ValueError("empty folder path")
            root = self.folder("msgfolderroot")
            assert root is not None
            current = self.folder(parts[0]) or self._child(root, parts[0], create)
            for part in parts[1:]:
                current = self._child(current, part, create)
            return current

    def _child(self, parent: Folder, name: str, create: bool) -> Folder:
        for f in self.children(parent.id):
            if f.display_name.lower() == name.lower():
                return f
        if not create:
            raise KeyError(name)
        f = Folder(graph_id("AAMkAGFold"), name, parent.id)
        self.folders[f.id] = f
        return f

    # --- messages ----------------------------------------------------------------------------

    def add_message(self, folder: str | Folder = "Inbox", *, subject: str = "", sender: str = "partner@example.com",
                    attachments: list[Attachment] | None = None, received: datetime | None = None,
                    is_read: bool = False, internet_message_id: str | None = None, body: str = "",
                    sender_name: str = "") -> Message:
        with self._lock:
            f = folder if isinstance(folder, Folder) else self.folder_path(folder)
            if received is None:
                # Strictly increasing, so ordering by receivedDateTime is deterministic.
                latest = max((m.received for m in self.messages.values()), default=None)
                received = datetime.now(UTC).replace(microsecond=0)
                if latest is not None and received <= latest:
                    received = latest + timedelta(seconds=1)
            msg = Message(
                id=graph_id(), folder_id=f.id, subject=subject, sender=sender, sender_name=sender_name or sender,
                received=received, is_read=is_read, attachments=list(attachments or []), body=body,
                internet_message_id=internet_message_id or f"<{uuid.uuid4().hex}@mail.example.com>",
            )
            self.messages[msg.id] = msg
            return msg

    def add_mime(self, mime: bytes, folder: str = "Inbox", *, received: datetime | None = None) -> Message:
        """A received message from its MIME source (a delivery report, say): subject, From and Message-ID are
        read from its headers, `$value` serves it byte for byte."""
        from email import message_from_bytes, policy
        from email.utils import parseaddr

        head = message_from_bytes(mime, policy=policy.compat32)
        msg = self.add_message(folder, subject=str(head.get("Subject", "")),
                               sender=parseaddr(str(head.get("From", "")))[1] or "postmaster@example.com",
                               received=received, internet_message_id=str(head.get("Message-ID", "")) or None)
        msg.mime = mime
        return msg

    def in_folder(self, folder: str | Folder) -> list[Message]:
        with self._lock:
            f = folder if isinstance(folder, Folder) else self.folder_path(folder, create=False)
            return sorted((m for m in self.messages.values() if m.folder_id == f.id), key=lambda m: m.received)

    def move(self, message_id: str, folder_id: str) -> Message:
        """As in Graph, a moved message gets a new id."""
        with self._lock:
            msg = self.messages.pop(message_id)
            msg.id = graph_id()
            msg.folder_id = folder_id
            msg.change_key += 1
            self.messages[msg.id] = msg
            return msg


class GraphModel:
    """All mailboxes of the test tenant, addressed by user id or address (as Graph allows)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._users: dict[str, User] = {}

    def add_user(self, address: str) -> User:
        with self.lock:
            user = User(address, self.lock)
            self._users[user.id] = user
            self._users[user.address] = user
            return user

    def user(self, ref: str) -> User | None:
        with self.lock:
            return self._users.get(ref) or self._users.get(ref.lower())
