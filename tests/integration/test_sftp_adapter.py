"""SftpClient against a real OpenSSH server: pinned host keys, logins, errno mapping, streaming reads."""

from __future__ import annotations

import errno
import hashlib
import os
import tracemalloc
from pathlib import Path

import pytest

from shared.adapters.secrets import LocalSecrets
from shared.adapters.sftp import SftpClient, SftpConnector, load_private_key
from shared.catalog import parse_catalog
from shared.domain.remote import (
    HostKeyMismatchError,
    RemoteFile,
    RemoteFileChangedError,
    RemoteFileError,
    SftpAuthError,
    SourceConfigurationError,
    SourceUnavailableError,
)
from shared.domain.sanitize import remote_bytes, remote_text
from tests.integration.sshd_server import KEY_PASSPHRASE, SshdServer, free_port

pytestmark = pytest.mark.sshd

MIB = 1024 * 1024


def client(sshd: SshdServer, **kwargs: object) -> SftpClient:
    options: dict[str, object] = {"port": sshd.port, "pkey": load_private_key(sshd.client_key.text),
                                  "host_keys": [sshd.known_hosts_line], "connect_timeout": 5.0, "op_timeout": 10.0}
    options.update(kwargs)
    return SftpClient(sshd.host, str(options.pop("username", sshd.username)), **options)  # type: ignore[arg-type]


def write(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, MIB))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
    return digest.hexdigest()


@pytest.mark.parametrize("pin", ["known_hosts", "fingerprint"])
def test_a_pinned_host_key_connects(sshd_server: SshdServer, pin: str) -> None:
    key = sshd_server.known_hosts_line if pin == "known_hosts" else sshd_server.fingerprint
    with client(sshd_server, host_keys=[key]) as c:
        assert c.connected


def test_a_different_host_key_is_refused_before_login_saying_what_to_check(sshd_server: SshdServer) -> None:
    with pytest.raises(HostKeyMismatchError) as err:
        client(sshd_server, host_keys=[sshd_server.other_fingerprint], username="no-such-user").connect()
    message = str(err.value)
    assert sshd_server.fingerprint in message and sshd_server.other_fingerprint in message
    assert "host_keys" in message and "Nothing was downloaded" in message
    assert err.value.presented == sshd_server.fingerprint


def test_a_known_hosts_line_for_another_host_pins_nothing(sshd_server: SshdServer) -> None:
    line = sshd_server.known_hosts_line.replace(f"[{sshd_server.host}]:{sshd_server.port}", "[other.example]:22")
    with pytest.raises(SourceConfigurationError, match="no pinned host key is for"):
        client(sshd_server, host_keys=[line]).connect()


def test_a_refused_login_says_what_to_check_and_never_the_secret(sshd_server: SshdServer) -> None:
    key = sshd_server.client_key
    with pytest.raises(SftpAuthError) as err:
        client(sshd_server, username="wharf-nobody", credential_hint="the private key in secret 'acme-key'").connect()
    message = str(err.value)
    assert "wharf-nobody" in message and "acme-key" in message and "sftp.username" in message
    assert not any(line in message for line in key.text.splitlines()[1:-1])


@pytest.mark.parametrize("name", ["ed25519", "ed25519-pass", "ecdsa", "rsa-pass"])
def test_every_key_type_logs_in(sshd_server: SshdServer, name: str) -> None:
    key = sshd_server.client_keys[name]
    pkey = load_private_key(key.text, passphrase=key.passphrase, secret_name=name)
    with client(sshd_server, pkey=pkey) as c:
        assert c.connected


def test_an_encrypted_key_without_its_passphrase_names_the_setting(sshd_server: SshdServer) -> None:
    with pytest.raises(SftpAuthError, match="passphrase_secret"):
        load_private_key(sshd_server.client_keys["rsa-pass"].text, secret_name="acme-key")
    with pytest.raises(SftpAuthError, match="must match"):
        load_private_key(sshd_server.client_keys["ed25519-pass"].text, passphrase="wrong", secret_name="acme-key")


def test_the_connector_reads_keys_and_passphrases_from_secrets(sshd_server: SshdServer) -> None:
    key = sshd_server.client_keys["rsa-pass"]
    catalog = parse_catalog({"partners": [{"id": "acme", "name": "Acme", "sftp": {
        "host": sshd_server.host, "port": sshd_server.port, "username": sshd_server.username,
        "auth": {"private_key_secret": "acme-key", "passphrase_secret": "acme-pass"},
        "host_keys": [sshd_server.known_hosts_line], "remote_dirs": [str(sshd_server.data)]}}]}, env={})
    secrets = LocalSecrets(env={"WHARF_SECRET_ACME_KEY": f"@{key.path}", "WHARF_SECRET_ACME_PASS": KEY_PASSPHRASE})
    source = SftpConnector(secrets).open("acme", catalog.get("acme").sftp)
    try:
        assert source.connected
    finally:
        source.close()
    with pytest.raises(SftpAuthError, match="acme-pass"):
        SftpConnector(LocalSecrets(env={"WHARF_SECRET_ACME_KEY": f"@{key.path}"})).open(
            "acme", catalog.get("acme").sftp)


def test_nothing_listening_is_transient(sshd_server: SshdServer) -> None:
    with pytest.raises(SourceUnavailableError):
        client(sshd_server, port=free_port(), host_keys=[sshd_server.fingerprint]).connect()


def test_listing_keeps_non_utf8_names_and_skips_what_is_not_a_regular_file(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("listing")
    (folder / "a.csv").write_bytes(b"a")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.csv").write_bytes(b"bb")
    (folder / "skip").mkdir()
    (folder / "skip" / "c.csv").write_bytes(b"c")
    os.symlink(folder / "a.csv", folder / "link.csv")
    raw = os.fsencode(folder) + b"/caf\xe9.csv"
    with open(raw, "wb") as f:
        f.write(b"latin-1 name")
    with client(sshd_server) as c:
        flat = {f.name: f for f in c.list_files(str(folder))}
        deep = {f.path for f in c.list_files(str(folder), recursive=True, skip_dirs=[str(folder / "skip")])}
        non_utf8 = flat[remote_text(b"caf\xe9.csv")]
        assert b"".join(c.read_chunks(non_utf8.path, expected=non_utf8)) == b"latin-1 name"
        c.remove(non_utf8.path)
    assert set(flat) == {"a.csv", remote_text(b"caf\xe9.csv")}  # no directory, no symlink
    assert flat["a.csv"] == RemoteFile(str(folder / "a.csv"), 1, int((folder / "a.csv").stat().st_mtime))
    assert deep == {str(folder / "a.csv"), str(folder / "sub" / "b.csv"), remote_text(raw)}
    assert not os.path.exists(raw) and remote_bytes(non_utf8.path) == raw


def test_missing_things_map_to_enoent(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("missing")
    with client(sshd_server) as c:
        with pytest.raises(RemoteFileError) as err:
            list(c.read_chunks(str(folder / "nope.csv")))
        assert err.value.errno == errno.ENOENT and err.value.missing
        with pytest.raises(RemoteFileError) as err:
            c.list_files(str(folder / "no-dir"))
        assert err.value.missing
        c.remove(str(folder / "nope.csv"))  # succeeds when already absent


def test_a_large_file_streams_whole_in_bounded_chunks_with_bounded_memory(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("large")
    path = folder / "large.bin"
    expected = write(path, 48 * MIB)
    with client(sshd_server) as c:
        listed = c.stat(str(path))
        digest, sizes = hashlib.sha256(), []
        tracemalloc.start()
        try:
            for chunk in c.read_chunks(str(path), expected=listed):
                digest.update(chunk)
                sizes.append(len(chunk))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert digest.hexdigest() == expected and sum(sizes) == 48 * MIB
    assert max(sizes) <= 2 * MIB
    assert peak < 32 * MIB, f"peak {peak / MIB:.1f} MiB while streaming a 48 MiB file"


def test_a_server_that_caps_read_sizes_is_followed(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("capped")
    expected = write(folder / "f.bin", 3 * MIB + 17)
    # OpenSSH answers at most 255 KiB per read: asking for 1 MiB exercises the short-read path.
    with client(sshd_server, request_size=MIB, window_requests=4) as c:
        data = b"".join(c.read_chunks(str(folder / "f.bin")))
    assert hashlib.sha256(data).hexdigest() == expected


def test_a_file_that_changed_since_the_listing_is_refused(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("changed")
    (folder / "a.csv").write_bytes(b"12345")
    with client(sshd_server) as c:
        listed = c.stat(str(folder / "a.csv"))
        (folder / "a.csv").write_bytes(b"1234567")
        with pytest.raises(RemoteFileChangedError):
            list(c.read_chunks(listed.path, expected=listed))
        (folder / "a.csv").write_bytes(b"12")
        with pytest.raises(RemoteFileChangedError):
            list(c.read_chunks(listed.path, expected=listed))


def test_rename_creates_the_folder_and_never_replaces_the_target(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("rename")
    (folder / "a.csv").write_bytes(b"new")
    (folder / "archive").mkdir()
    (folder / "archive" / "a.csv").write_bytes(b"old")
    with client(sshd_server) as c:
        with pytest.raises(RemoteFileError) as err:
            c.rename(str(folder / "a.csv"), str(folder / "archive" / "a.csv"))
        assert err.value.errno == errno.EEXIST and err.value.path == str(folder / "archive" / "a.csv")
        (folder / "b.csv").write_bytes(b"b")
        c.rename(str(folder / "b.csv"), str(folder / "x" / "y" / "b.csv"))
        with pytest.raises(RemoteFileError) as gone:  # the source is gone (moved already): not "exists"
            c.rename(str(folder / "b.csv"), str(folder / "x" / "y" / "b.csv"))
        assert gone.value.missing
    assert (folder / "archive" / "a.csv").read_bytes() == b"old" and (folder / "a.csv").read_bytes() == b"new"
    assert (folder / "x" / "y" / "b.csv").read_bytes() == b"b"


def test_permission_denied_maps_to_eacces(sshd_server: SshdServer) -> None:
    folder = sshd_server.public_folder("denied-adapter")
    (folder / "secret.csv").write_bytes(b"s")
    (folder / "secret.csv").chmod(0o600)
    with client(sshd_server, username=sshd_server.unprivileged_user) as c:
        with pytest.raises(RemoteFileError) as err:
            list(c.read_chunks(str(folder / "secret.csv")))
    assert err.value.errno == errno.EACCES and err.value.denied
