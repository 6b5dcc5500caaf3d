"""The SFTP write options: WHARF_SFTP_LEAN_WRITE reaches the delivery connector, and paramiko's path gets its
writes as whole requests whatever the chunk sizes (the lean path itself: tests/integration/test_sftp_lean.py)."""

from __future__ import annotations

import pytest

from shared.adapters.secrets import LocalSecrets
from shared.adapters.sftp import _requests
from shared.bootstrap import build_services
from shared.settings import Settings


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("false", False), ("true", True)])
def test_the_lean_write_setting_reaches_the_delivery_connector(monkeypatch: pytest.MonkeyPatch, value: str | None,
                                                               expected: bool) -> None:
    if value is None:
        monkeypatch.delenv("WHARF_SFTP_LEAN_WRITE", raising=False)
    else:
        monkeypatch.setenv("WHARF_SFTP_LEAN_WRITE", value)
    services = build_services(Settings(), secrets=LocalSecrets(env={}))
    assert services.settings.sftp_lean_write is expected
    assert services.file_sinks._options == {"lean_write": expected}  # type: ignore[attr-defined]


@pytest.mark.parametrize("sizes", [[], [10], [20], [25], [5, 5, 5], [9, 1], [11, 9], [3] * 7, [1, 30, 2], [0, 4, 0]])
def test_paramikos_path_gets_whole_requests_whatever_the_chunks(sizes: list[int]) -> None:
    chunks = [bytes([i]) * n for i, n in enumerate(sizes)]
    pieces = list(_requests(chunks, 10))
    assert b"".join(pieces) == b"".join(chunks)
    assert all(len(p) == 10 for p in pieces[:-1]) and all(0 < len(p) <= 10 for p in pieces)
    assert all(type(p) is bytes for p in pieces)  # paramiko's Message takes bytes, not memoryviews
