"""SSH user certificates against a private sshd with `TrustedUserCAKeys`: a certificate signed by the CA for the
login's principal logs in with a key the server does not list in authorized_keys; an expired or not yet valid
certificate fails with a message that says so and when, before any connection; a wrong principal is refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.adapters.secrets import LocalSecrets, env_name
from shared.adapters.sftp import CertificateValidityError, SftpConnector, check_user_certificate
from shared.catalog import parse_catalog
from shared.domain.remote import SftpAuthError
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def _keygen(path: Path, *args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def ca_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshdServer, Path]]:
    root = tmp_path_factory.mktemp("sshd-ca")
    ca = root / "user_ca"
    _keygen(ca, "-t", "ed25519", "-N", "", "-f", str(ca), "-C", "wharf-test-user-ca")
    server = SshdServer(root / "server")
    server.config.write_text(server.config.read_text().replace(
        "Subsystem sftp", f"TrustedUserCAKeys {ca}.pub\nSubsystem sftp"))
    server.start()
    try:
        yield server, ca
    finally:
        server.stop()


def _certified_key(tmp_path: Path, ca: Path, principal: str, validity: str) -> tuple[str, str]:
    key = tmp_path / "user_key"
    _keygen(key, "-t", "ed25519", "-N", "", "-f", str(key), "-C", "certified")  # not in authorized_keys
    _keygen(key, "-s", str(ca), "-I", "wharf-test", "-n", principal, "-V", validity, f"{key}.pub")
    return key.read_text(), Path(f"{key}-cert.pub").read_text()


def _connect(sshd: SshdServer, key: str, cert: str) -> None:
    catalog = parse_catalog({"partners": [{"id": "certified", "name": "C", "sftp": {
        "host": sshd.host, "port": sshd.port, "username": sshd.username, "host_keys": [sshd.fingerprint],
        "auth": {"private_key_secret": "cert-key", "certificate_secret": "cert-cert"}, "remote_dirs": ["/"],
        "connect_timeout_seconds": 5, "operation_timeout_seconds": 10}}]}, env={})
    secrets = LocalSecrets(env={env_name("cert-key"): key, env_name("cert-cert"): cert})
    client = SftpConnector(secrets).open("certified", catalog.get("certified").sftp)
    try:
        client.list_files(str(sshd.data))  # logged in, and SFTP works
    finally:
        client.close()


def test_a_user_certificate_signed_by_the_trusted_ca_logs_in(ca_sshd: tuple[SshdServer, Path],
                                                             tmp_path: Path) -> None:
    sshd, ca = ca_sshd
    key, cert = _certified_key(tmp_path, ca, sshd.username, "-5m:+1h")
    assert cert.startswith("ssh-ed25519-cert-v01@openssh.com ")
    _connect(sshd, key, cert)
    # Without the certificate the same key is refused: it is not in authorized_keys.
    with pytest.raises(SftpAuthError, match="login refused"):
        _connect_plain(sshd, key)


def _connect_plain(sshd: SshdServer, key: str) -> None:
    catalog = parse_catalog({"partners": [{"id": "plain", "name": "P", "sftp": {
        "host": sshd.host, "port": sshd.port, "username": sshd.username, "host_keys": [sshd.fingerprint],
        "auth": {"private_key_secret": "plain-key"}, "remote_dirs": ["/"], "connect_timeout_seconds": 5}}]},
        env={})
    SftpConnector(LocalSecrets(env={env_name("plain-key"): key})).open("plain", catalog.get("plain").sftp)


def test_an_expired_certificate_fails_saying_when(ca_sshd: tuple[SshdServer, Path], tmp_path: Path) -> None:
    sshd, ca = ca_sshd
    key, cert = _certified_key(tmp_path, ca, sshd.username, "20200101:20200102")
    with pytest.raises(CertificateValidityError) as caught:
        _connect(sshd, key, cert)
    assert "expired at 2020-01-02" in str(caught.value) and "cert-cert" in str(caught.value)


def test_a_certificate_not_valid_yet_fails_saying_from_when(ca_sshd: tuple[SshdServer, Path],
                                                            tmp_path: Path) -> None:
    sshd, ca = ca_sshd
    key, cert = _certified_key(tmp_path, ca, sshd.username, "20990101:20990201")
    with pytest.raises(CertificateValidityError, match="not valid yet: valid from 2099-01-01"):
        _connect(sshd, key, cert)
    (tmp_path / "3d").mkdir()
    until = check_user_certificate(_certified_key(tmp_path / "3d", ca, "x", "-1m:+3d")[1])
    assert 2 <= (until - datetime.now(UTC)).days <= 3  # the expiry read from the certificate


def test_a_certificate_for_another_principal_is_refused(ca_sshd: tuple[SshdServer, Path], tmp_path: Path) -> None:
    sshd, ca = ca_sshd
    key, cert = _certified_key(tmp_path, ca, "someone-else", "-5m:+1h")
    with pytest.raises(SftpAuthError, match="login refused"):
        _connect(sshd, key, cert)


def test_a_certificate_of_another_key_or_a_plain_public_key_is_a_clear_error(
        ca_sshd: tuple[SshdServer, Path], tmp_path: Path) -> None:
    sshd, ca = ca_sshd
    key, _ = _certified_key(tmp_path, ca, sshd.username, "-5m:+1h")
    (tmp_path / "other").mkdir()
    _, other_cert = _certified_key(tmp_path / "other", ca, sshd.username, "-5m:+1h")
    with pytest.raises(SftpAuthError, match="does not certify the key"):
        _connect(sshd, key, other_cert)
    with pytest.raises(SftpAuthError, match="not an OpenSSH certificate"):
        _connect(sshd, key, Path(f"{ca}.pub").read_text())
