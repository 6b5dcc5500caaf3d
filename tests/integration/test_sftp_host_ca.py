"""Host CA verification (`@cert-authority`) is not offered, and why (decision 160): a private sshd presents an
OpenSSH host certificate signed by a host CA. paramiko accepts that certificate without checking anything a CA
line would rely on (an untrusted CA, an expired certificate, another host's principal: the handshake succeeds),
so Wharf refuses `@cert-authority` lines in the catalogue with a clear error and keeps host keys pinned; a
server that presents a host certificate still connects through its pinned host key."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from paramiko.hostkeys import HostKeyEntry

from shared.adapters.secrets import LocalSecrets, env_name
from shared.adapters.sftp import SftpConnector
from shared.catalog import CatalogError, parse_catalog
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.sshd, pytest.mark.timeout(120)]


def _keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def cert_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SshdServer, Path]]:
    """An sshd whose host key carries a certificate by a throwaway host CA: EXPIRED, and for another host."""
    root = tmp_path_factory.mktemp("sshd-hostca")
    ca = root / "host_ca"
    _keygen("-t", "ed25519", "-N", "", "-f", str(ca), "-C", "wharf-test-host-ca")
    server = SshdServer(root / "server")
    _keygen("-s", str(ca), "-h", "-I", "wharf-test-host", "-n", "not-this-host.example", "-V",
            "20200101:20200102", f"{server.host_key}.pub")
    server.config.write_text(server.config.read_text().replace(
        f"HostKey {server.host_key}\n", f"HostKey {server.host_key}\nHostCertificate {server.host_key}-cert.pub\n"))
    server.start()
    try:
        yield server, ca
    finally:
        server.stop()


def _catalog(host_keys: list[str], sshd: SshdServer | None = None) -> object:
    return parse_catalog({"partners": [{"id": "hostca", "name": "H", "sftp": {
        "host": sshd.host if sshd else "sftp.bank.example", "port": sshd.port if sshd else 22,
        "username": sshd.username if sshd else "wharf", "host_keys": host_keys,
        "auth": {"private_key_secret": "hostca-key"}, "remote_dirs": ["/"], "connect_timeout_seconds": 5}}]},
        env={})


def test_a_cert_authority_line_fails_the_catalogue_saying_why(cert_sshd: tuple[SshdServer, Path]) -> None:
    sshd, ca = cert_sshd
    ca_kind, ca_blob = Path(f"{ca}.pub").read_text().split()[:2]
    for line in (f"@cert-authority *.bank.example {ca_kind} {ca_blob}",
                 f"@cert-authority [{sshd.host}]:{sshd.port} {ca_kind} {ca_blob}"):
        with pytest.raises(CatalogError) as caught:
            _catalog([line])
        text = str(caught.value)
        assert "@cert-authority" in text and "host certificates cannot be verified" in text
        assert "Pin the server's host key itself" in text and "host_keys" in text
    with pytest.raises(CatalogError, match="markers such as @revoked are not supported"):
        _catalog([f"@revoked * {ca_kind} {ca_blob}"])
    # Next to a pinned key it fails as well: never silently dropped.
    with pytest.raises(CatalogError, match="@cert-authority"):
        _catalog([sshd.known_hosts_line, f"@cert-authority * {ca_kind} {ca_blob}"])


def test_paramiko_accepts_a_host_certificate_it_cannot_have_verified(cert_sshd: tuple[SshdServer, Path]) -> None:
    """The evidence for decision 160, against the real thing: asked for the certificate host key type, paramiko
    completes the handshake with an expired certificate for another host, signed by a CA nobody gave it."""
    sshd, _ = cert_sshd
    with socket.create_connection((sshd.host, sshd.port), timeout=5) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.get_security_options().key_types = ("ssh-ed25519-cert-v01@openssh.com",)
            transport.start_client(timeout=5)
            assert transport.host_key_type == "ssh-ed25519-cert-v01@openssh.com"
            key = transport.get_remote_server_key()
            assert key.public_blob is not None and key.public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"
        finally:
            transport.close()
    # And its known_hosts parser drops a CA line without a word: nothing to build host CA trust on.
    ca_line = "@cert-authority * " + Path(f"{sshd.host_key}.pub").read_text().split(" ", 1)[1]
    assert HostKeyEntry.from_line(ca_line.strip()) is None


def test_a_server_with_a_host_certificate_connects_through_its_pinned_key(
        cert_sshd: tuple[SshdServer, Path]) -> None:
    sshd, _ = cert_sshd
    secrets = LocalSecrets(env={env_name("hostca-key"): sshd.client_key.text})
    for pin in (sshd.known_hosts_line, sshd.fingerprint):
        catalog = _catalog([pin], sshd)
        client = SftpConnector(secrets).open("hostca", catalog.get("hostca").sftp)  # type: ignore[attr-defined]
        try:
            client.list_files(str(sshd.data))
        finally:
            client.close()
