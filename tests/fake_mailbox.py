"""FakeMailbox: the Mailbox port over the Graph test server's in-memory model, without HTTP.

It passes the same contract tests as GraphMailClient (tests/mailbox_contract.py), so service
tests can use it with confidence. Failures are injected per operation for the service tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from shared.domain.errors import DependencyUnavailableError, NotFoundError, WharfError
from shared.ports import MailAttachment, Mailbox, MailMessage
from tests.graph_server.model import Folder, GraphModel, Message, User


@dataclass
class _Failure:
    op: str
    key: str | None  # attachment id, message id, or None for any
    error: WharfError
    after_bytes: int | None = None  # for downloads: fail after this many bytes were yielded
    times: int = 1


@dataclass
class FakeMailbox(Mailbox):
    """In-memory mailboxes. Seed through `model` (or `add_user`), as for the Graph test server."""

    model: GraphModel = field(default_factory=GraphModel)
    chunk_size: int = 64 * 1024
    calls: list[tuple[str, ...]] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)

    def add_user(self, address: str) -> User:
        return self.model.add_user(address)

    def open(self, partner_id: str, config: object) -> FakeMailbox:
        """MailboxFactory too: every partner's mailbox lives in this one model."""
        self.calls.append(("open", partner_id))
        return self

    # --- failure injection ---------------------------------------------------------------------

    def fail(self, op: str, *, key: str | None = None, error: WharfError | None = None, times: int = 1,
             after_bytes: int | None = None) -> None:
        """Make the next `times` calls of `op` (resolve_folder, list_messages, list_attachments,
        open_attachment, mark_read, move) fail; `key` narrows to one message or attachment id."""
        self._failures.append(_Failure(op, key, error or DependencyUnavailableError("graph", f"{op}: injected"),
                                       after_bytes, times))

    def _failure(self, op: str, *keys: str) -> _Failure | None:
        for f in self._failures:
            if f.op == op and f.times > 0 and (f.key is None or f.key in keys):
                f.times -= 1
                return f
        return None

    def _check(self, op: str, *keys: str) -> None:
        self.calls.append((op, *keys))
        f = self._failure(op, *keys)
        if f is not None:
            raise f.error

    # --- lookups ---------------------------------------------------------------------------------

    def _user(self, mailbox: str) -> User:
        user = self.model.user(mailbox)
        if user is None:
            raise NotFoundError(f"mailbox {mailbox}: not found")
        return user

    def _message(self, user: User, message_id: str) -> Message:
        with self.model.lock:
            msg = user.messages.get(message_id)
        if msg is None:
            raise NotFoundError(f"message {message_id}: not found")
        return msg

    # --- Mailbox ---------------------------------------------------------------------------------

    def resolve_folder(self, mailbox: str, path: str) -> str:
        self._check("resolve_folder", path)
        user = self._user(mailbox)
        try:
            return user.folder_path(path, create=False).id
        except (KeyError, ValueError) as exc:
            raise NotFoundError(f"mail folder {path!r} not found") from exc

    def list_messages(
        self, mailbox: str, folder_id: str, *, unread_only: bool = False, with_attachments: bool = False,
        received_after: datetime | None = None, page_size: int = 50,
    ) -> Iterator[MailMessage]:
        self._check("list_messages", folder_id)
        user = self._user(mailbox)
        folder: Folder | None = user.folder(folder_id)
        if folder is None:
            raise NotFoundError(f"folder {folder_id}: not found")
        for m in user.in_folder(folder):
            if unread_only and m.is_read:
                continue
            if with_attachments and not m.has_attachments:
                continue
            if received_after is not None and m.received < received_after:
                continue
            yield MailMessage(id=m.id, internet_message_id=m.internet_message_id, sender=m.sender.lower(),
                              subject=m.subject, received_at=m.received, is_read=m.is_read,
                              has_attachments=m.has_attachments)

    def list_attachments(self, mailbox: str, message_id: str) -> list[MailAttachment]:
        self._check("list_attachments", message_id)
        msg = self._message(self._user(mailbox), message_id)
        return [MailAttachment(id=a.id, name=a.name, content_type=a.content_type, size=a.size, kind=a.kind,
                               is_inline=a.is_inline) for a in msg.attachments]

    def open_attachment(self, mailbox: str, message_id: str, attachment_id: str) -> Iterator[bytes]:
        self.calls.append(("open_attachment", message_id, attachment_id))
        msg = self._message(self._user(mailbox), message_id)
        att = next((a for a in msg.attachments if a.id == attachment_id), None)
        if att is None:
            raise NotFoundError(f"attachment {attachment_id}: not found")
        return self._stream(att.chunks(), self._failure("open_attachment", message_id, attachment_id))

    def _stream(self, blocks: Iterator[bytes], failure: _Failure | None) -> Iterator[bytes]:
        if failure is not None and failure.after_bytes is None:
            raise failure.error
        sent = 0
        for block in blocks:
            for i in range(0, len(block), self.chunk_size):
                piece = block[i:i + self.chunk_size]
                if failure is not None and failure.after_bytes is not None and sent + len(piece) > failure.after_bytes:
                    yield piece[:failure.after_bytes - sent]
                    raise failure.error
                sent += len(piece)
                yield piece

    def mark_read(self, mailbox: str, message_id: str) -> None:
        self._check("mark_read", message_id)
        user = self._user(mailbox)
        msg = self._message(user, message_id)
        with self.model.lock:
            msg.is_read = True

    def move(self, mailbox: str, message_id: str, folder_id: str) -> str:
        self._check("move", message_id)
        user = self._user(mailbox)
        self._message(user, message_id)
        folder = user.folder(folder_id)
        if folder is None:
            raise NotFoundError(f"folder {folder_id}: not found")
        return user.move(message_id, folder.id).id
