"""A lean SFTP write path over paramiko's transport, for AES-GCM connections (#15, decision 193).

paramiko copies every byte of a pipelined write about 13 times in Python before the socket (the SFTP layer
re-slices each request, builds a Message, the channel and the packetizer concatenate again) and allocates a few
32 KiB objects per SSH packet. Here a WRITE request is a small header plus memoryviews of the caller's data;
it is cut into channel packets within the channel's send window, and each packet is copied once into a reused
buffer, AES-GCM-encrypted into a second reused buffer (`encrypt_into`), and the packets of one window
reservation (at most a request's) go out in one send, under the packetizer's write lock and the transport's
clear_to_send (as paramiko's own user messages: a key exchange waits for the packets already taken from the
window, and no packet goes out while one runs). Sequence numbers, the rekey counters
and the IV are kept exactly as paramiko's `Packetizer.send_message` keeps them, so paramiko's own messages
(window adjustments, keepalives, the key exchange) interleave safely.

It reads and writes paramiko's private packetizer state (`_Packetizer__*`): `unsupported()` checks that every
attribute it uses is there and that the negotiated outbound cipher is AES-GCM without compression, else the
SFTP adapter keeps paramiko's own write path. Checked against paramiko 5.1.0. Should a later key exchange
switch to another cipher, packets go through `Packetizer.send_message` from then on.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paramiko.common import MSG_CHANNEL_DATA
from paramiko.sftp import CMD_STATUS, CMD_WRITE, SFTPError

#: Outbound ciphers the lean path encrypts itself.
LEAN_CIPHERS = frozenset({"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"})
#: Write requests sent but not yet answered, at most (the channel window bounds the bytes in flight anyway).
MAX_OUTSTANDING = 64
_PK = "_Packetizer__"
_STATE = ("write_lock", "socket", "block_engine_out", "block_size_out", "iv_out", "aead_out", "etm_out",
          "compress_engine_out", "sequence_number_out", "sent_bytes", "sent_packets", "need_rekey", "closed",
          "received_bytes_overflow", "received_packets_overflow", "keepalive_last")
_TAG = 16  # AES-GCM tag


def _wire(obj: object) -> Any:
    """paramiko's private transport, packetizer and SFTP request state are not in its stubs."""
    return obj


def unsupported(transport: Any) -> str:
    """Why the lean path cannot write on this transport now ("" when it can)."""
    cipher = str(getattr(transport, "local_cipher", "") or "")
    if cipher not in LEAN_CIPHERS:
        return f"outbound cipher {cipher or 'unknown'} (lean writes need AES-GCM)"
    pk = getattr(transport, "packetizer", None)
    missing = [name for name in _STATE if not hasattr(pk, _PK + name)]
    if missing:
        return "this paramiko's packetizer lacks " + ", ".join(missing)
    if _get(pk, "compress_engine_out") is not None:
        return "compression is on"
    if not _get(pk, "aead_out") or not isinstance(_get(pk, "block_engine_out"), AESGCM):
        return "the packetizer's outbound engine is not AES-GCM"
    if not hasattr(AESGCM, "encrypt_into"):
        return "this cryptography's AESGCM has no encrypt_into"
    return ""


def _get(pk: object, name: str) -> Any:
    return getattr(pk, _PK + name)


def _set(pk: object, name: str, value: object) -> None:
    setattr(pk, _PK + name, value)


class _Raw:
    """A prebuilt payload for `Packetizer.send_message` (which calls asbytes())."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def asbytes(self) -> bytes:
        return self.data


class _Statuses:
    """Receives the STATUS answers of the write requests (paramiko dispatches them by request number)."""

    def __init__(self, sftp: Any) -> None:
        self.sftp = sftp
        self.offsets: dict[int, int] = {}  # request number -> its offset, for the requests not answered yet
        self.error: BaseException | None = None

    @property
    def outstanding(self) -> int:
        return len(self.offsets)

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        offset = self.offsets.pop(num, -1)
        if self.error is not None:
            return
        if t != CMD_STATUS:
            self.error = SFTPError(f"expected a status for the write at byte {offset}, got packet type {t}")
            return
        try:
            self.sftp._convert_status(msg)  # raises OSError with the server's errno (or EOFError) on a failure
        except OSError as exc:
            # The server's errno stays (callers branch on it); the text says where the file stopped.
            self.error = OSError(exc.errno, f"the server refused the write at byte {offset}: "
                                            f"{exc.strerror or exc}")
        except EOFError as exc:
            self.error = exc


class LeanWriter:
    """Pipelined SFTP WRITE requests of `request_size` bytes to an open handle, from offset 0.

    `write()` takes any bytes-like chunks (a request may span several) and keeps only memoryviews of the data
    not sent yet (less than one request). `close()` sends the rest and waits for every answer; the first error
    the server reported is raised there or at the next `write()`. Not thread-safe; the channel must not be used
    by anything else meanwhile (the SFTP session is one thread's)."""

    def __init__(self, sftp: Any, handle: bytes, *, request_size: int,
                 max_outstanding: int = MAX_OUTSTANDING) -> None:
        self._sftp = _wire(sftp)
        self._chan = _wire(sftp.get_channel())
        self._t = _wire(self._chan.transport)
        self._pk = self._t.packetizer
        self._handle = struct.pack(">I", len(handle)) + handle
        self._request_size, self._max_outstanding = request_size, max_outstanding
        self._statuses = _Statuses(self._sftp)
        self._pending: list[memoryview] = []
        self._pending_len = 0
        self._offset = 0
        self.packets = 0  # SSH packets sent by this writer
        self.fallback_packets = 0  # of them, through Packetizer.send_message (the cipher changed at a rekey)
        self._random = b""
        self._body = bytearray()
        self._out = bytearray()

    @property
    def offset(self) -> int:
        """Bytes handed to the server so far (requests sent, not necessarily answered)."""
        return self._offset

    def write_all(self, chunks: Iterable[bytes]) -> int:
        for chunk in chunks:
            self.write(chunk)
        return self.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        size = self._request_size
        while view:
            take = min(len(view), size - self._pending_len)
            self._pending.append(view[:take])
            self._pending_len += take
            view = view[take:]
            if self._pending_len == size:
                self._request()

    def close(self) -> int:
        """Send what is left, wait for every answer; the bytes written."""
        if self._pending_len:
            self._request()
        while self._statuses.outstanding:
            self._sftp._read_response(None)
        self._check()
        return self._offset

    # --- SFTP requests ------------------------------------------------------------------------

    def _request(self) -> None:
        self._check()
        pieces, n = self._pending, self._pending_len
        self._pending, self._pending_len = [], 0
        sftp, statuses = self._sftp, self._statuses
        with sftp._lock:
            num = sftp.request_number
            sftp._expecting[num] = statuses
            sftp.request_number += 1
        statuses.offsets[num] = self._offset
        header = (struct.pack(">IBI", 1 + 4 + len(self._handle) + 8 + 4 + n, CMD_WRITE, num) + self._handle
                  + struct.pack(">QI", self._offset, n))
        self._send([memoryview(header), *pieces], len(header) + n)
        self._offset += n
        # Read the answers already there (cheap), and wait for some when too many are out.
        while statuses.outstanding > self._max_outstanding or (statuses.outstanding and self._chan.recv_ready()):
            sftp._read_response(None)
        self._check()

    def _check(self) -> None:
        if self._statuses.error is not None:
            raise self._statuses.error

    # --- channel and packets ------------------------------------------------------------------

    def _send(self, pieces: list[memoryview], total: int) -> None:
        """The concatenation of `pieces` as channel data: as much as the window allows at a time."""
        index = 0
        while total:
            allowed = self._reserve(total)
            total -= allowed
            limit = self._chan.out_max_packet_size - 64  # as paramiko's Channel: room for the headers
            packets: list[tuple[int, list[memoryview]]] = []
            while allowed:
                size = min(allowed, limit)
                allowed -= size
                parts: list[memoryview] = []
                need = size
                while need:
                    piece = pieces[index]
                    if len(piece) <= need:
                        parts.append(piece)
                        need -= len(piece)
                        index += 1
                    else:
                        parts.append(piece[:need])
                        pieces[index] = piece[need:]
                        need = 0
                packets.append((size, parts))
            self._emit(packets)

    def _reserve(self, want: int) -> int:
        """Take up to `want` bytes of the channel's send window, waiting (up to the channel timeout) while it is
        shut, as Channel._wait_for_send_window does."""
        chan = self._chan
        with chan.lock:
            timeout = chan.timeout
            while True:
                if chan.closed or chan.eof_sent:
                    raise EOFError("the SSH channel was closed while writing")
                if chan.out_window_size > 0:
                    break
                then = time.monotonic()
                chan.out_buffer_cv.wait(timeout)
                if timeout is not None:
                    timeout -= time.monotonic() - then
                    if timeout <= 0.0:
                        raise TimeoutError("the server's SSH window stayed shut")
            taken = min(want, chan.out_window_size)
            chan.out_window_size -= taken
            return int(taken)

    def _emit(self, packets: list[tuple[int, list[memoryview]]]) -> None:
        """Send packets while no key exchange runs (the transport's clear_to_send, as _send_user_message)."""
        t = self._t
        start = time.monotonic()
        while True:
            t.clear_to_send.wait(0.1)
            if not t.active:
                raise EOFError("the SSH transport closed while writing")
            t.clear_to_send_lock.acquire()
            if t.clear_to_send.is_set():
                break
            t.clear_to_send_lock.release()
            if time.monotonic() > start + t.clear_to_send_timeout:
                raise EOFError("the SSH key exchange did not finish in time")
        try:
            head = struct.pack(">BI", MSG_CHANNEL_DATA, self._chan.remote_chanid)
            self._packets(head, packets)
        finally:
            t.clear_to_send_lock.release()

    def _packets(self, head: bytes, packets: list[tuple[int, list[memoryview]]]) -> None:
        """Build and encrypt the packets into one buffer and send it with one call, under the write lock (the
        sequence numbers and IVs are the order on the wire)."""
        pk = self._pk
        with _get(pk, "write_lock"):
            engine = _get(pk, "block_engine_out")
            if not (_get(pk, "aead_out") and isinstance(engine, AESGCM)
                    and _get(pk, "compress_engine_out") is None):
                # Another cipher since a rekey: paramiko builds and encrypts (RLock: re-entered there).
                for size, parts in packets:
                    pk.send_message(_Raw(b"".join([head, struct.pack(">I", size), *parts])))
                self.packets += len(packets)
                self.fallback_packets += len(packets)
                return
            block = _get(pk, "block_size_out")
            shapes: list[tuple[int, int]] = []  # (padding, packet length) as Packetizer._build_packet under AEAD
            for size, _ in packets:
                payload = 9 + size  # MSG_CHANNEL_DATA, recipient channel, data length, data
                padding = 3 + block - ((payload + 4) % block)
                shapes.append((padding, 1 + payload + padding))
            total = sum(4 + length + _TAG for _, length in shapes)
            body, out = self._buffers(max(length for _, length in shapes), total)
            body_view, out_view = memoryview(body), memoryview(out)
            iv = _get(pk, "iv_out")
            fixed, counter = iv[:4], int.from_bytes(iv[4:], "big")
            at_out = 0
            for (size, parts), (padding, length) in zip(packets, shapes, strict=True):
                body[0] = padding
                body[1:6] = head
                struct.pack_into(">I", body, 6, size)
                at = 10
                for part in parts:
                    body[at:at + len(part)] = part
                    at += len(part)
                body[at:length] = self._padding(padding)
                struct.pack_into(">I", out, at_out, length)
                end = at_out + 4 + length + _TAG
                engine.encrypt_into(fixed + counter.to_bytes(8, "big"), body_view[:length],
                                    bytes(out_view[at_out:at_out + 4]), out_view[at_out + 4:end])
                counter += 1
                at_out = end
            _set(pk, "iv_out", fixed + counter.to_bytes(8, "big"))
            _set(pk, "sequence_number_out", (_get(pk, "sequence_number_out") + len(packets)) & 0xFFFFFFFF)
            self._send_all(out_view[:total])
            _set(pk, "keepalive_last", time.time())
            sent_bytes = _get(pk, "sent_bytes") + total
            sent_packets = _get(pk, "sent_packets") + len(packets)
            _set(pk, "sent_bytes", sent_bytes)
            _set(pk, "sent_packets", sent_packets)
            self.packets += len(packets)
            if (sent_packets >= pk.REKEY_PACKETS or sent_bytes >= pk.REKEY_BYTES) and not _get(pk, "need_rekey"):
                # As send_message: ask for new keys once; the transport thread starts the exchange.
                _set(pk, "received_bytes_overflow", 0)
                _set(pk, "received_packets_overflow", 0)
                pk._trigger_rekey()

    def _buffers(self, length: int, total: int) -> tuple[bytearray, bytearray]:
        """A body buffer for the largest packet, an output buffer for them all (one request's: reused)."""
        if len(self._body) < length:
            self._body = bytearray(length)
        if len(self._out) < total:
            self._out = bytearray(total)
        return self._body, self._out

    def _padding(self, n: int) -> bytes:
        if len(self._random) < n:
            self._random = os.urandom(4096)
        piece, self._random = self._random[:n], self._random[n:]
        return piece

    def _send_all(self, view: memoryview) -> None:
        """Write one whole packet. A packet cut short leaves the stream unusable: the packetizer is closed then
        (the transport ends, every later call fails as a lost connection)."""
        pk = self._pk
        sock = _get(pk, "socket")
        limit = self._chan.timeout
        stalled = time.monotonic()
        while view:
            try:
                n = sock.send(view)
            except TimeoutError:  # the transport's socket polls every 0.1 s
                if _get(pk, "closed"):
                    raise EOFError("the SSH transport closed while writing") from None
                if limit is not None and time.monotonic() - stalled > limit:
                    pk.close()
                    raise TimeoutError(f"the server took no data for {limit:g}s") from None
                continue
            except OSError as exc:
                pk.close()
                raise EOFError(f"the SSH connection failed while writing: {exc}") from exc
            if n <= 0:
                pk.close()
                raise EOFError("the SSH connection accepts no more data")
            view = view[n:]
            stalled = time.monotonic()

__all__ = ["LEAN_CIPHERS", "LeanWriter", "unsupported"]
