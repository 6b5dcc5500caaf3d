"""FakeMailbox passes the Mailbox contract (the same tests GraphMailClient passes against the test server)."""

from __future__ import annotations

import uuid

import pytest

from tests.fake_mailbox import FakeMailbox
from tests.graph_server.model import User
from tests.mailbox_contract import MailboxContract


@pytest.fixture
def mailbox() -> FakeMailbox:
    return FakeMailbox(chunk_size=256 * 1024)


@pytest.fixture
def user(mailbox: FakeMailbox) -> User:
    return mailbox.add_user(f"u{uuid.uuid4().hex[:8]}@wharf.test")


class TestFakeMailbox(MailboxContract):
    pass
