"""The lean SFTP write path (shared/adapters/sftp_lean.py) against the real OpenSSH server: byte-identical
files around packet and request boundaries and at hundreds of MiB with flat memory, key exchanges during the
write, a server error and a killed server mid-write, and paramiko's path for a cipher the lean path does not
handle (or when turned off)."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest

from shared.adapters import sftp_lean
from shared.adapters.sftp import MAX_WRITE_REQUEST, SftpClient, load_private_key
from shared.domain.remote import RemoteFileError, SourceUnavailableError
from tests.integration.sshd_server import SshdServer

pytestmark = pytest.mark.sshd

MIB = 1024 * 1024
PACKET = 32768 - 64  # data per SSH packet: OpenSSH's 32 KiB channel packet less paramiko's header room
GCM_OFF = {"ciphers": ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]}


def client(sshd: SshdServer, **kwargs: Any) -> SftpClient:
    return SftpClient(sshd.host, sshd.username, port=sshd.port, pkey=load_private_key(sshd.client_key.text),
                      host_keys=[sshd.known_hosts_line], connect_timeout=5.0, op_timeout=10.0, **kwargs)


class DataPackets:
    """The bytes of SSH channel data that go through paramiko's Packetizer.send_message: the lean path sends the
    write requests itself, so only the small requests around them (stat, open, close) go there; paramiko's
    path sends every write through it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        real = paramiko.packet.Packetizer.send_message

        def send_message(pk: Any, data: Any) -> None:
            raw = data.asbytes()
            if raw[:1] == bytes((paramiko.common.MSG_CHANNEL_DATA,)):
                self.bytes += len(raw)
            real(pk, data)

        monkeypatch.setattr(paramiko.packet.Packetizer, "send_message", send_message)


@pytest.fixture
def data_packets(monkeypatch: pytest.MonkeyPatch) -> DataPackets:
    return DataPackets(monkeypatch)


def random_chunks(size: int, chunk: int, digest: Any) -> Iterator[bytes]:
    left = size
    while left:
        block = os.urandom(min(chunk, left))
        digest.update(block)
        left -= len(block)
        yield block


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


SIZES = [0, 1, PACKET - 1, PACKET, PACKET + 1, MAX_WRITE_REQUEST - 1, MAX_WRITE_REQUEST, MAX_WRITE_REQUEST + 1,
         2 * MAX_WRITE_REQUEST, 2 * MIB - 1, 2 * MIB, 2 * MIB + 1, 5 * MAX_WRITE_REQUEST + PACKET + 3]


@pytest.mark.parametrize("chunk", [1000, 256 * 1024, 4 * MIB])
def test_lean_writes_are_byte_identical_around_packet_and_request_boundaries(
        sshd_server: SshdServer, data_packets: DataPackets, chunk: int) -> None:
    folder = sshd_server.folder(f"lean-sizes-{chunk}")
    with client(sshd_server) as c:
        for size in SIZES:
            digest = hashlib.sha256()
            written = c.write_chunks(f"{folder}/f{size}.bin", random_chunks(size, chunk, digest))
            assert written == size, size
            assert sha256_of(folder / f"f{size}.bin") == digest.hexdigest(), size
    assert data_packets.bytes < 64 * 1024  # the writes went the lean path's way


def test_a_multi_hundred_mib_file_is_identical_and_memory_stays_flat(sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("lean-large")
    size = 320 * MIB
    digest = hashlib.sha256()
    with client(sshd_server) as c:
        c.write_chunks(f"{folder}/warm.bin", [b"x"])  # connect, limits and imports before measuring
        tracemalloc.start()
        try:
            written = c.write_chunks(f"{folder}/large.bin", random_chunks(size, 256 * 1024, digest))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert written == size and sha256_of(folder / "large.bin") == digest.hexdigest()
    # A chunk being cut, one request of memoryviews, the packet buffers: a few MiB, whatever the file size.
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB for a {size // MIB} MiB file"


def count_rekeys(transport: Any) -> list[int]:
    """Counts the key exchanges that switched our outbound keys (paramiko's _activate_outbound)."""
    calls: list[int] = []
    real = transport._activate_outbound

    def activate() -> None:
        calls.append(1)
        real()

    transport._activate_outbound = activate
    return calls


def test_rekeys_triggered_by_the_byte_count_during_the_write_give_an_identical_file(
        sshd_server: SshdServer, data_packets: DataPackets) -> None:
    folder = sshd_server.folder("lean-rekey")
    digest = hashlib.sha256()
    with client(sshd_server) as c:
        transport = c._transport
        assert transport is not None
        rekeys = count_rekeys(transport)
        transport.packetizer.REKEY_BYTES = 4 * MIB  # paramiko's own counter: a new key exchange every 4 MiB
        written = c.write_chunks(f"{folder}/r.bin", random_chunks(48 * MIB, MIB, digest))
        assert c._why_not_lean() == ""  # still AES-GCM after the exchanges
    assert written == 48 * MIB and sha256_of(folder / "r.bin") == digest.hexdigest()
    assert len(rekeys) >= 5
    assert data_packets.bytes < 64 * 1024


def test_key_exchanges_forced_from_another_thread_during_the_write_give_an_identical_file(
        sshd_server: SshdServer) -> None:
    folder = sshd_server.folder("lean-renegotiate")
    digest = hashlib.sha256()
    with client(sshd_server) as c:
        transport = c._transport
        assert transport is not None
        rekeys = count_rekeys(transport)
        started, stop = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        def renegotiate() -> None:
            started.wait(10)
            try:
                while not stop.is_set() and len(rekeys) < 4:
                    transport.renegotiate_keys()
            except BaseException as exc:  # noqa: BLE001 (reported by the test)
                errors.append(exc)

        def chunks() -> Iterator[bytes]:
            for n, block in enumerate(random_chunks(64 * MIB, MIB, digest)):
                if n == 2:
                    started.set()
                yield block

        thread = threading.Thread(target=renegotiate, daemon=True)
        thread.start()
        try:
            written = c.write_chunks(f"{folder}/k.bin", chunks())
        finally:
            stop.set()
            thread.join(30)
    assert errors == []
    assert written == 64 * MIB and sha256_of(folder / "k.bin") == digest.hexdigest()
    assert len(rekeys) >= 1


def test_a_server_write_error_mid_file_is_raised_clearly(sshd_server: SshdServer) -> None:
    """The server's file is /dev/full (a symlink to it): open works, the writes fail with ENOSPC there."""
    folder = sshd_server.folder("lean-full")
    (folder / "full.bin").symlink_to("/dev/full")
    with client(sshd_server) as c:
        assert c._why_not_lean() == ""
        with pytest.raises(RemoteFileError) as err:
            c.write_chunks(f"{folder}/full.bin", random_chunks(8 * MIB, MIB, hashlib.sha256()))
        assert err.value.path == f"{folder}/full.bin"
        # The session survives a file's failure: the next write on it works.
        assert c.write_chunks(f"{folder}/after.bin", [b"fine"]) == 4
    assert (folder / "after.bin").read_bytes() == b"fine"


def test_the_server_killed_mid_write_fails_as_unavailable(private_sshd: SshdServer) -> None:
    folder = private_sshd.folder("lean-killed")

    def chunks() -> Iterator[bytes]:
        for n, block in enumerate(random_chunks(64 * MIB, MIB, hashlib.sha256())):
            if n == 8:
                private_sshd.kill()
            yield block

    with client(private_sshd) as c, pytest.raises(SourceUnavailableError):
        c.write_chunks(f"{folder}/k.bin", chunks())


def test_a_cipher_the_lean_path_does_not_handle_uses_paramikos_path(
        sshd_server: SshdServer, data_packets: DataPackets) -> None:
    folder = sshd_server.folder("lean-ctr")
    digest = hashlib.sha256()
    with client(sshd_server, disabled_algorithms=GCM_OFF) as c:
        assert c._transport is not None and c._transport.local_cipher not in sftp_lean.LEAN_CIPHERS
        assert "cipher" in c._why_not_lean()
        written = c.write_chunks(f"{folder}/ctr.bin", random_chunks(3 * MIB + 5, 300_000, digest))
    assert written == 3 * MIB + 5 and sha256_of(folder / "ctr.bin") == digest.hexdigest()
    assert data_packets.bytes > 3 * MIB


def test_turned_off_uses_paramikos_path_on_aes_gcm_too(sshd_server: SshdServer, data_packets: DataPackets) -> None:
    folder = sshd_server.folder("lean-off")
    digest = hashlib.sha256()
    with client(sshd_server, lean_write=False) as c:
        assert sftp_lean.unsupported(c._transport) == ""  # lean could, but is not asked to
        assert "WHARF_SFTP_LEAN_WRITE" in c._why_not_lean()
        written = c.write_chunks(f"{folder}/off.bin", random_chunks(MIB + 1, 100_000, digest))
    assert written == MIB + 1 and sha256_of(folder / "off.bin") == digest.hexdigest()
    assert data_packets.bytes > MIB
