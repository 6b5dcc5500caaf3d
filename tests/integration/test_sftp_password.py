"""Password login against the local stack's OpenSSH (its SFTP-only `wharfpw` account).

The account exists where the stack was started with WHARF_SFTP_PASSWORD_USER=1 (as root): `.ci/run` does
that, so CI runs these; elsewhere they are skipped, and say why.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.adapters.sftp import SftpClient
from shared.cli.common import parse_env_file
from shared.domain.remote import SftpAuthError

pytestmark = pytest.mark.sshd


def _stack() -> dict[str, str]:
    path = Path(os.environ.get("WHARF_STACK_ENV", Path(__file__).resolve().parents[2] / ".local" / "stack.env"))
    return parse_env_file(path.read_text()) if path.is_file() else {}


STACK = _stack()
needs_password_user = pytest.mark.skipif(
    not STACK.get("SFTP_PASSWORD_USER"),
    reason="the local stack has no password account (start it as root with WHARF_SFTP_PASSWORD_USER=1)")


def _client(password: str) -> SftpClient:
    known_host = Path(STACK["SFTP_KNOWN_HOSTS"]).read_text().splitlines()[0]
    return SftpClient(STACK["SFTP_HOST"], STACK["SFTP_PASSWORD_USER"], port=int(STACK["SFTP_PORT"]),
                      password=password, host_keys=[known_host], connect_timeout=10)


@needs_password_user
def test_password_login_lists_the_home_folder() -> None:
    password = Path(STACK["SFTP_PASSWORD_FILE"]).read_text().strip()
    home = STACK.get("SFTP_PASSWORD_USER_HOME") or "/"
    marker = Path(home) / "password-login-check.csv"
    marker.write_bytes(b"a,b\n1,2\n")
    try:
        with _client(password).connect() as client:
            names = [f.name for f in client.list_files(home)]
        assert "password-login-check.csv" in names
    finally:
        marker.unlink(missing_ok=True)


@needs_password_user
def test_wrong_password_is_an_auth_error_that_never_shows_the_password() -> None:
    with pytest.raises(SftpAuthError) as info:
        _client("not-the-password-123").connect()
    assert "not-the-password-123" not in str(info.value)
    assert STACK["SFTP_PASSWORD_USER"] in str(info.value)
