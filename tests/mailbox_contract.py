"""Contract tests every Mailbox implementation passes: FakeMailbox and GraphMailClient (against the test server).

Subclass `MailboxContract` and provide the fixtures `mailbox` (the implementation) and `user`
(a fresh `tests.graph_server.model.User` it can see).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from shared.domain.errors import NotFoundError
from shared.ports import Mailbox
from tests.graph_server.model import User, file_attachment, item_attachment


class MailboxContract:
    def test_resolve_well_known_and_nested_folders(self, mailbox: Mailbox, user: User) -> None:
        nested = user.folder_path("Inbox/Partners/Acme")
        top = user.folder_path("Wharf Drop")
        inbox = user.folder("inbox")
        assert inbox is not None
        assert mailbox.resolve_folder(user.address, "Inbox") == inbox.id
        assert mailbox.resolve_folder(user.address, "inbox/partners/ACME") == nested.id
        assert mailbox.resolve_folder(user.address, "Wharf Drop") == top.id

    def test_resolve_missing_folder_is_not_found(self, mailbox: Mailbox, user: User) -> None:
        user.folder_path("Inbox/Partners")
        with pytest.raises(NotFoundError):
            mailbox.resolve_folder(user.address, "Inbox/Partners/Nobody")
        with pytest.raises(NotFoundError):
            mailbox.resolve_folder(user.address, "No Such Top")

    def test_folder_names_with_quotes_and_spaces(self, mailbox: Mailbox, user: User) -> None:
        folder = user.folder_path("Inbox/O'Brien & Sons")
        assert mailbox.resolve_folder(user.address, "Inbox/O'Brien & Sons") == folder.id

    def test_lists_every_message_across_pages(self, mailbox: Mailbox, user: User) -> None:
        sent = [user.add_message("Inbox/P", subject=f"m{i:02d}", sender="A@Acme.com") for i in range(23)]
        folder_id = mailbox.resolve_folder(user.address, "Inbox/P")
        got = list(mailbox.list_messages(user.address, folder_id, page_size=5))
        assert sorted(m.id for m in got) == sorted(m.id for m in sent)
        first = next(m for m in got if m.id == sent[0].id)
        assert first.sender == "a@acme.com"
        assert first.internet_message_id == sent[0].internet_message_id
        assert first.subject == "m00" and not first.is_read

    def test_filters_unread_attachments_and_received_after(self, mailbox: Mailbox, user: User) -> None:
        read = user.add_message("Inbox/F", subject="read", is_read=True, attachments=[file_attachment("a", b"1")])
        bare = user.add_message("Inbox/F", subject="no attachments")
        inline_only = user.add_message("Inbox/F", subject="inline only",
                                       attachments=[file_attachment("logo.png", b"png", inline=True)])
        wanted = user.add_message("Inbox/F", subject="wanted", attachments=[file_attachment("a.csv", b"1")])
        folder_id = mailbox.resolve_folder(user.address, "Inbox/F")

        unread = {m.id for m in mailbox.list_messages(user.address, folder_id, unread_only=True)}
        assert unread == {bare.id, inline_only.id, wanted.id}
        with_att = {m.id for m in mailbox.list_messages(user.address, folder_id, with_attachments=True)}
        assert with_att == {read.id, wanted.id}  # as in Graph, inline attachments do not count
        after = list(mailbox.list_messages(user.address, folder_id, received_after=inline_only.received))
        assert [m.id for m in after] == [inline_only.id, wanted.id]  # oldest first
        both = {m.id for m in mailbox.list_messages(user.address, folder_id, unread_only=True, with_attachments=True,
                                                    received_after=read.received - timedelta(days=1))}
        assert both == {wanted.id}

    def test_attachment_metadata(self, mailbox: Mailbox, user: User) -> None:
        msg = user.add_message("Inbox", subject="s", attachments=[
            file_attachment("data.csv", b"a,b\n1,2\n", content_type="text/csv"),
            file_attachment("logo.png", b"\x89PNG", content_type="image/png", inline=True),
            item_attachment("Fwd: original", b"Subject: original\r\n\r\nhello\r\n"),
        ])
        atts = mailbox.list_attachments(user.address, msg.id)
        by_name = {a.name: a for a in atts}
        assert set(by_name) == {"data.csv", "logo.png", "Fwd: original"}
        assert (by_name["data.csv"].kind, by_name["data.csv"].size, by_name["data.csv"].is_inline) == ("file", 8, False)
        assert by_name["data.csv"].content_type == "text/csv"
        assert by_name["logo.png"].is_inline
        assert by_name["Fwd: original"].kind == "item"

    def test_open_attachment_streams_exact_bytes(self, mailbox: Mailbox, user: User) -> None:
        big = file_attachment("big.bin", size=3 * 1024 * 1024 + 17, seed=11)
        item = item_attachment("fwd", b"Subject: x\r\n\r\nbody\r\n")
        msg = user.add_message("Inbox", attachments=[big, item])
        digest = hashlib.sha256()
        chunks = 0
        for chunk in mailbox.open_attachment(user.address, msg.id, big.id):
            digest.update(chunk)
            chunks += 1
        assert digest.hexdigest() == big.sha256()
        assert chunks > 1
        assert b"".join(mailbox.open_attachment(user.address, msg.id, item.id)) == b"Subject: x\r\n\r\nbody\r\n"

    def test_missing_message_or_attachment_is_not_found(self, mailbox: Mailbox, user: User) -> None:
        msg = user.add_message("Inbox", attachments=[file_attachment("a", b"1")])
        with pytest.raises(NotFoundError):
            mailbox.list_attachments(user.address, "AAMkADnope=")
        with pytest.raises(NotFoundError):
            list(mailbox.open_attachment(user.address, msg.id, "AAMkAGAttnope="))
        with pytest.raises(NotFoundError):
            mailbox.mark_read(user.address, "AAMkADnope=")

    def test_mark_read_and_move(self, mailbox: Mailbox, user: User) -> None:
        a = user.add_message("Inbox/M", subject="a")
        b = user.add_message("Inbox/M", subject="b")
        done = user.folder_path("Inbox/M/Done")
        folder_id = mailbox.resolve_folder(user.address, "Inbox/M")
        mailbox.mark_read(user.address, a.id)
        assert [m.subject for m in mailbox.list_messages(user.address, folder_id, unread_only=True)] == ["b"]
        old_id = b.id
        new_id = mailbox.move(user.address, old_id, mailbox.resolve_folder(user.address, "Inbox/M/Done"))
        assert new_id != old_id  # as in Graph: a moved message has a new id
        assert [m.subject for m in user.in_folder(done)] == ["b"]
        assert [m.subject for m in mailbox.list_messages(user.address, folder_id)] == ["a"]
        with pytest.raises(NotFoundError):
            mailbox.mark_read(user.address, old_id)
