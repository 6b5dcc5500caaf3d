"""PROTOTYPE, not used by Wharf (decision 131, #15): a lean SFTP write path over paramiko's transport.

SFTP WRITE requests as a small header plus a memoryview of the data; channel packets cut from them, built,
AES-GCM-encrypted and sent under the packetizer's write lock and the transport's clear_to_send (so a rekey
waits as for paramiko's own user messages); `lean=False` hands each packet to `packetizer.send_message`
instead (any cipher). It reads and writes paramiko 5.1.0's private packetizer state. Checked only for
byte-identical 64 MiB files against a private OpenSSH server (one and two connections writing halves at their
offsets); NOT benchmarked, no rekey test, no error-path tests. `lean_write(sftp, handle, chunks, offset=..)`
takes a paramiko SFTPClient and an open handle (SFTPFile.handle)."""
from __future__ import annotations

import os
import struct
import time
from typing import Any

from paramiko.common import MSG_CHANNEL_DATA
from paramiko.sftp import CMD_STATUS, CMD_WRITE

_PK = "_Packetizer__"


class _Raw:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def asbytes(self) -> bytes:
        return self.data


class Collector:
    def __init__(self, sftp: Any) -> None:
        self.sftp, self.outstanding, self.error = sftp, 0, None

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.outstanding -= 1
        if self.error is not None:
            return
        if t != CMD_STATUS:
            self.error = OSError("expected status")
            return
        try:
            self.sftp._convert_status(msg)
        except (OSError, EOFError) as exc:
            self.error = exc


class LeanSender:
    """Channel data with few copies: SSH packets built and encrypted here when the cipher is AES-GCM."""

    def __init__(self, chan: Any, lean: bool = True) -> None:
        self.chan, self.t = chan, chan.transport
        self.pk = self.t.packetizer
        pk = self.pk
        self.lean = (lean and bool(getattr(pk, _PK + "aead_out", False))
                     and getattr(pk, _PK + "compress_engine_out", 1) is None)
        self.pad = b"\0" * 32
        self.rnd = b""

    def _reserve(self, want: int) -> int:
        chan = self.chan
        with chan.lock:
            if chan.closed or chan.eof_sent:
                raise EOFError("channel closed")
            timeout = chan.timeout
            while chan.out_window_size == 0:
                if chan.closed or chan.eof_sent:
                    raise EOFError("channel closed")
                then = time.time()
                chan.out_buffer_cv.wait(timeout)
                if timeout is not None:
                    timeout -= time.time() - then
                    if timeout <= 0.0:
                        raise TimeoutError()
            n = min(want, chan.out_window_size)
            chan.out_window_size -= n
            return n

    def send(self, pieces: list[Any], total: int) -> None:
        """Send the concatenation of `pieces` (bytes / memoryviews) on the channel."""
        # flatten into (piece, start) cursor
        idx, off = 0, 0
        left = total
        while left:
            n = self._reserve(left)
            left -= n
            # cut n bytes into packets
            packets = []
            maxp = self.chan.out_max_packet_size - 64
            while n:
                size = min(n, maxp)
                n -= size
                parts = []
                need = size
                while need:
                    p = pieces[idx]
                    avail = len(p) - off
                    take = min(avail, need)
                    parts.append(p[off:off + take] if (off or take < len(p)) else p)
                    need -= take
                    off += take
                    if off == len(p):
                        idx, off = idx + 1, 0
                packets.append((size, parts))
            self._emit(packets)

    def _emit(self, packets: list[tuple[int, list[Any]]]) -> None:
        t = self.t
        start = time.time()
        while True:
            t.clear_to_send.wait(0.1)
            if not t.active:
                raise EOFError("transport closed")
            t.clear_to_send_lock.acquire()
            if t.clear_to_send.is_set():
                break
            t.clear_to_send_lock.release()
            if time.time() > start + t.clear_to_send_timeout:
                raise EOFError("kex timeout")
        try:
            head = struct.pack(">BI", MSG_CHANNEL_DATA, self.chan.remote_chanid)
            for size, parts in packets:
                if self.lean:
                    self._lean_packet(head, size, parts)
                else:
                    self.pk.send_message(_Raw(b"".join([head, struct.pack(">I", size), *parts])))
        finally:
            t.clear_to_send_lock.release()

    def _lean_packet(self, head: bytes, size: int, parts: list[Any]) -> None:
        pk = self.pk
        plen = 9 + size
        bsize = getattr(pk, _PK + "block_size_out")
        padding = 3 + bsize - ((plen + 4) % bsize)
        if len(self.rnd) < padding:
            self.rnd = os.urandom(4096)
        pad, self.rnd = self.rnd[:padding], self.rnd[padding:]
        body = b"".join([bytes((padding,)), head, struct.pack(">I", size), *parts, pad])
        lenb = struct.pack(">I", len(body))
        lock = getattr(pk, _PK + "write_lock")
        with lock:
            engine = getattr(pk, _PK + "block_engine_out")
            iv = getattr(pk, _PK + "iv_out")
            ct = engine.encrypt(iv, body, lenb)
            ctr = int.from_bytes(iv[4:], "big") + 1
            setattr(pk, _PK + "iv_out", iv[:4] + ctr.to_bytes(8, "big"))
            out = lenb + ct
            sock = getattr(pk, _PK + "socket")
            view = memoryview(out)
            while view:
                try:
                    k = sock.send(view)
                except TimeoutError:
                    if getattr(pk, _PK + "closed"):
                        raise EOFError() from None
                    continue
                view = view[k:]
            seq = (getattr(pk, _PK + "sequence_number_out") + 1) & 0xFFFFFFFF
            setattr(pk, _PK + "sequence_number_out", seq)
            sb = getattr(pk, _PK + "sent_bytes") + len(out)
            sp = getattr(pk, _PK + "sent_packets") + 1
            setattr(pk, _PK + "sent_bytes", sb)
            setattr(pk, _PK + "sent_packets", sp)
            if (sp >= pk.REKEY_PACKETS or sb >= pk.REKEY_BYTES) and not getattr(pk, _PK + "need_rekey"):
                setattr(pk, _PK + "received_bytes_overflow", 0)
                setattr(pk, _PK + "received_packets_overflow", 0)
                pk._trigger_rekey()


def lean_write(sftp: Any, handle: bytes, chunks: Any, *, offset: int = 0, request: int = 255 * 1024,
               window: int = 64, lean: bool = True) -> int:
    chan = sftp.sock
    sender = LeanSender(chan, lean=lean)
    col = Collector(sftp)
    total = 0
    hstr = struct.pack(">I", len(handle)) + handle
    for chunk in chunks:
        mv = memoryview(chunk)
        for s in range(0, len(mv), request):
            part = mv[s:s + request]
            n = len(part)
            with sftp._lock:
                num = sftp.request_number
                sftp._expecting[num] = col
                sftp.request_number += 1
            col.outstanding += 1
            hdr = (struct.pack(">IBI", 1 + 4 + len(hstr) + 8 + 4 + n, CMD_WRITE, num) + hstr
                   + struct.pack(">QI", offset, n))
            sender.send([hdr, part], len(hdr) + n)
            offset += n
            total += n
            while col.outstanding > window or (col.outstanding and chan.recv_ready()):
                sftp._read_response(None)
            if col.error:
                raise col.error
    while col.outstanding:
        sftp._read_response(None)
    if col.error:
        raise col.error
    return total
