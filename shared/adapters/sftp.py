"""SFTP adapter over paramiko: pinned host keys, errors mapped once, pipelined reads and writes with bounded memory."""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import posixpath
import socket
import stat as stat_mode
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import paramiko
from opentelemetry.trace import Status, StatusCode
from paramiko.message import Message
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_EXTENDED,
    CMD_EXTENDED_REPLY,
    CMD_HANDLE,
    CMD_INIT,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    CMD_VERSION,
    SFTPError,
    int64,
)
from paramiko.sftp_attr import SFTPAttributes
from paramiko.ssh_exception import (
    AuthenticationException,
    BadAuthenticationType,
    IncompatiblePeer,
    PasswordRequiredException,
    SSHException,
)

from shared.adapters import sftp_lean
from shared.adapters.secrets import fresh_secret
from shared.catalog import parse_host_key
from shared.domain.errors import NotFoundError
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
from shared.observability.tracing import span, tracer
from shared.ports import Secrets

log = logging.getLogger(__name__)

#: Bytes asked for per SFTP read. OpenSSH serves up to 255 KiB; smaller server limits are learnt from
#: short reads. Fewer, larger requests cost less Python per byte than paramiko's fixed 32 KiB.
REQUEST_SIZE = 128 * 1024
#: Read requests in flight per file: bounds the data buffered ahead of the consumer (48 x 128 KiB = 6 MiB).
WINDOW_REQUESTS = 48
#: SSH channel window: lets the server keep the pipeline full on a fast link (flow control bounds it).
CHANNEL_WINDOW = 8 * 1024 * 1024
#: Size of the chunks yielded to the blob upload.
CHUNK_SIZE = 1024 * 1024
#: Largest SFTP write request sent (OpenSSH announces 255 KiB in limits@openssh.com); without that extension,
#: paramiko's 32 KiB, which every server accepts.
MAX_WRITE_REQUEST = 255 * 1024
POSIX_RENAME = "posix-rename@openssh.com"
_LIMITS = "limits@openssh.com"
_CHECK_FILE = "check-file"
_PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_HOST_KEY_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


def _wire(obj: object) -> Any:
    """paramiko's request/response layer (what SFTPFile.prefetch and listdir_attr use) is not in its stubs."""
    return obj


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:<unpadded base64>` of a public key, as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def load_private_key(text: str, *, passphrase: str | None = None, secret_name: str = "") -> paramiko.PKey:
    """An Ed25519, ECDSA or RSA private key (OpenSSH or PEM format), optionally passphrase-protected."""
    where = f"secret '{secret_name}'" if secret_name else "the private key"
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text), password=passphrase)
        except PasswordRequiredException as exc:
            raise SftpAuthError(f"{where} holds an encrypted private key: set auth.passphrase_secret to the "
                                "secret that holds its passphrase") from exc
        except (SSHException, ValueError, TypeError, IndexError):
            continue  # not this key type (or a wrong passphrase): try the next
    raise SftpAuthError(
        f"{where} does not hold a private key Wharf can use: expected an Ed25519, ECDSA or RSA key in OpenSSH "
        "or PEM format" + (" and the passphrase in auth.passphrase_secret must match it" if passphrase else "")
    )


class _Session(paramiko.SFTPClient):
    """paramiko's SFTPClient, keeping the extensions the server announces in its version packet (paramiko drops
    them): posix-rename@openssh.com, limits@openssh.com, check-file."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        m = Message()
        m.add_int(3)
        _wire(self)._send_packet(CMD_INIT, m)
        t, data = _wire(self)._read_packet()
        if t != CMD_VERSION:
            raise SFTPError("Incompatible sftp protocol")
        msg = Message(data)
        version = msg.get_int()
        extensions: dict[str, bytes] = {}
        while msg.get_remainder():
            name = msg.get_string().decode("utf-8", "replace")
            extensions[name] = msg.get_string()
        self.extensions = extensions
        return int(version)


class _ShortFile(Exception):
    """The server answered a read with SFTP EOF: the file is shorter than listed."""


def _send_read(sftp: paramiko.SFTPClient, sink: _ReadSink, handle: paramiko.SFTPFile, offset: int,
               length: int) -> int:
    try:
        num: int = _wire(sftp)._async_request(sink, CMD_READ, handle.handle, int64(offset), int(length))
    except EOFError as exc:  # the packetizer's EOF: the connection, not the file
        raise SSHException("connection lost while sending a read request") from exc
    return num


def _receive(sftp: paramiko.SFTPClient, sink: _ReadSink, num: int) -> bytes:
    """The data of read request `num`. paramiko turns a dropped connection into SSHException here, so an
    EOFError can only be the server's SFTP EOF status."""
    try:
        t, msg = sink.early.pop(num) if num in sink.early else _wire(sftp)._read_response(num)
        if t == CMD_STATUS:
            _wire(sftp)._convert_status(msg)  # raises: EOFError for SFTP EOF, IOError with errno otherwise
    except EOFError as exc:
        raise _ShortFile from exc
    if t != CMD_DATA:
        raise SFTPError("Expected data")
    data: bytes = msg.get_string()
    return data


def _requests(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The chunks' bytes as pieces of exactly `size` (the last may be shorter), for paramiko's SFTPFile.write: a
    piece is one write request (a bigger one paramiko re-slices, copying the rest each time; a smaller one
    leaves a runt request). Memory: one piece plus the chunk being cut."""
    buf = bytearray()
    for chunk in chunks:
        view = memoryview(chunk)
        if buf:
            take = min(size - len(buf), len(view))
            buf += view[:take]
            view = view[take:]
            if len(buf) < size:
                continue
            yield bytes(buf)
            buf.clear()
        while len(view) >= size:
            yield bytes(view[:size])
            view = view[size:]
        buf += view
    if buf:
        yield bytes(buf)


class _ReadSink:
    """Receives read responses that paramiko dispatches out of order (or after the reader gave up)."""

    def __init__(self) -> None:
        self.early: dict[int, tuple[int, Message]] = {}
        self.discard = False

    def _async_response(self, t: int, msg: Message, num: int) -> None:
        if not self.discard:
            self.early[num] = (t, msg)


class SftpClient:
    """FileSource over one SSH connection (paramiko Transport + SFTPClient).

    The server's host key is checked against `host_keys` (known_hosts lines or SHA256 fingerprints)
    before any credential is sent. Not thread-safe: use one client per thread.
    """

    def __init__(
        self, host: str, username: str, *, port: int = 22, pkey: paramiko.PKey | None = None,
        password: str | None = None, host_keys: Sequence[str] = (), connect_timeout: float = 15.0,
        op_timeout: float = 60.0, disabled_algorithms: Mapping[str, Sequence[str]] | None = None,
        credential_hint: str = "", request_size: int = REQUEST_SIZE, window_requests: int = WINDOW_REQUESTS,
        channel_window: int = CHANNEL_WINDOW, chunk_size: int = CHUNK_SIZE, lean_write: bool = True,
    ) -> None:
        if pkey is None and password is None:
            raise SourceConfigurationError(f"sftp {host}:{port}: no private key or password to log in with")
        self.host, self.port, self.username = host, port, username
        self._pkey, self._password = pkey, password
        self._pinned = [parse_host_key(text) for text in host_keys]
        self._connect_timeout, self._op_timeout = connect_timeout, op_timeout
        self._disabled = {k: list(v) for k, v in (disabled_algorithms or {}).items()} or None
        self._hint = credential_hint or ("the private key" if pkey is not None else "the password")
        self._request_size, self._window_requests = request_size, window_requests
        self._channel_window, self._chunk_size = channel_window, chunk_size
        self._transport: paramiko.Transport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._write_request: int | None = None
        self._lean_write = lean_write
        self._lean_logged = False
        self._lock = threading.Lock()

    @property
    def _name(self) -> str:
        return f"sftp {self.host}:{self.port}"

    def _attrs(self, **extra: Any) -> dict[str, Any]:
        return {"server.address": self.host, "server.port": self.port, **extra}

    # --- connection ---------------------------------------------------------------------------

    def __enter__(self) -> SftpClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> SftpClient:
        """Open, verify the host key, log in, start SFTP. Raises HostKeyMismatchError, SftpAuthError,
        SourceConfigurationError or SourceUnavailableError (the only transient one)."""
        if self._sftp is not None:
            return self
        with span("sftp.connect", self._attrs()):
            expected = {k.fingerprint for k in self._pinned if k.matches_host(self.host, self.port)}
            if not expected:
                target = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
                raise SourceConfigurationError(
                    f"{self._name}: no pinned host key is for {target}; add the server's known_hosts line "
                    "(ssh-keyscan) or SHA256 fingerprint to sftp.host_keys in the catalogue. Not connecting "
                    "to an unverified server")
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self._connect_timeout)
            except OSError as exc:
                raise SourceUnavailableError(self._name, f"cannot connect: {exc.strerror or exc}") from exc
            transport = paramiko.Transport(sock, default_window_size=self._channel_window,
                                           disabled_algorithms=self._disabled)
            try:
                self._handshake(transport, expected)
                self._login(transport)
                sftp = _Session.from_transport(transport, window_size=self._channel_window)
                if sftp is None:
                    raise SourceUnavailableError(self._name, "the server did not start the sftp subsystem")
                sftp.get_channel().settimeout(self._op_timeout)  # type: ignore[union-attr]
            except BaseException:
                transport.close()
                raise
            self._transport, self._sftp = transport, sftp
            self._write_request = None
            self._lean_logged = False
        return self

    def _handshake(self, transport: paramiko.Transport, expected: set[str]) -> None:
        transport.banner_timeout = transport.handshake_timeout = self._connect_timeout
        transport.auth_timeout = self._connect_timeout
        pinned_types = [k.key_type for k in self._pinned if k.matches_host(self.host, self.port)]
        if pinned_types and all(pinned_types):
            # Like OpenSSH with known_hosts: ask for the key types we can verify, so a server with several
            # host keys presents the pinned one.
            wanted = [alg for kt in pinned_types for alg in _HOST_KEY_ALGORITHMS.get(str(kt), (str(kt),))]
            known = set(transport.preferred_keys)
            usable = tuple(dict.fromkeys(a for a in wanted if a in known))
            if usable:
                transport.get_security_options().key_types = usable
        # AES-GCM first: an AEAD cipher costs both ends less CPU per byte than CTR plus a separate HMAC.
        # The rest of paramiko's order (and the catalogue's disabled_algorithms) still apply.
        options = transport.get_security_options()
        current = tuple(options.ciphers)
        options.ciphers = tuple(c for c in _PREFERRED_CIPHERS if c in current) + tuple(
            c for c in current if c not in _PREFERRED_CIPHERS)
        try:
            transport.start_client(timeout=self._connect_timeout)
        except IncompatiblePeer as exc:
            raise SourceConfigurationError(f"{self._name}: no SSH algorithm both sides accept ({exc}); check "
                                           "sftp.disabled_algorithms and the pinned host key types") from exc
        except (SSHException, EOFError, OSError) as exc:
            raise SourceUnavailableError(self._name, f"SSH handshake failed: {exc}") from exc
        presented = fingerprint(transport.get_remote_server_key())
        if presented not in expected:
            raise HostKeyMismatchError(self.host, self.port, presented, sorted(expected))

    def _login(self, transport: paramiko.Transport) -> None:
        who = f"user '{self.username}' at {self.host}:{self.port}"
        try:
            if self._pkey is not None:
                remaining = transport.auth_publickey(self.username, self._pkey)
                if remaining and self._password is not None:
                    remaining = transport.auth_password(self.username, self._password)
            else:
                remaining = transport.auth_password(self.username, str(self._password))
        except BadAuthenticationType as exc:
            allowed = ", ".join(exc.allowed_types) or "nothing"
            raise SftpAuthError(f"{who}: the server does not accept this login method; it allows {allowed}. "
                                "Check sftp.auth in the catalogue") from exc
        except AuthenticationException as exc:
            raise SftpAuthError(f"login refused for {who} with {self._hint}: check sftp.username and that the "
                                "secret holds the credential the partner registered for this user") from exc
        except (SSHException, EOFError, OSError) as exc:
            raise SourceUnavailableError(self._name, f"connection lost during login: {exc}") from exc
        if remaining or not transport.is_authenticated():
            raise SftpAuthError(f"{who}: the server asks for more authentication ({', '.join(remaining or [])}) "
                                "than the catalogue provides")

    def close(self) -> None:
        with self._lock:
            sftp, transport = self._sftp, self._transport
            self._sftp = self._transport = None
        for closable in (sftp, transport):
            if closable is not None:
                try:
                    closable.close()
                except (OSError, EOFError, SSHException):
                    pass

    @property
    def connected(self) -> bool:
        return self._transport is not None and self._transport.is_active()

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self.connect()
        assert self._sftp is not None
        return self._sftp

    def _error(self, exc: BaseException, path: str) -> Exception:
        """The one place paramiko/socket errors become Wharf errors (callers branch on errno)."""
        if isinstance(exc, TimeoutError | socket.timeout):
            return SourceUnavailableError(self._name, f"no answer within {self._op_timeout:g}s")
        if isinstance(exc, EOFError | SSHException | ConnectionError) or not self.connected:
            return SourceUnavailableError(self._name, f"connection lost ({type(exc).__name__}: {exc})")
        if isinstance(exc, OSError):
            return RemoteFileError(path, exc.errno, str(exc.strerror or exc))
        if isinstance(exc, SFTPError):
            return RemoteFileError(path, errno.EIO, str(exc))
        return SourceUnavailableError(self._name, f"{type(exc).__name__}: {exc}")

    # --- listing ------------------------------------------------------------------------------

    def _readdir(self, directory: str) -> Iterator[tuple[bytes, SFTPAttributes]]:
        """Like paramiko's listdir_attr, but names stay bytes: listdir_attr fails on a non-UTF-8 name."""
        sftp = self._client()
        t, msg = _wire(sftp)._request(CMD_OPENDIR, remote_bytes(directory))
        if t != CMD_HANDLE:
            raise SFTPError("Expected handle")
        handle = msg.get_binary()
        try:
            while True:
                try:
                    t, msg = _wire(sftp)._request(CMD_READDIR, handle)
                except EOFError:
                    return
                if t != CMD_NAME:
                    raise SFTPError("Expected name response")
                for _ in range(msg.get_int()):
                    name = msg.get_string()
                    msg.get_string()  # longname
                    attr = _wire(SFTPAttributes)._from_msg(msg)
                    if name not in (b".", b".."):
                        yield name, attr
        finally:
            _wire(sftp)._request(CMD_CLOSE, handle)

    def list_files(self, directory: str, *, recursive: bool = False,
                   skip_dirs: Iterable[str] = ()) -> list[RemoteFile]:
        skip = {d.rstrip("/") for d in skip_dirs}
        files: list[RemoteFile] = []
        with span("sftp.list", self._attrs(**{"wharf.remote_dir": directory})) as s:
            todo = [directory.rstrip("/") or "/"]
            while todo:
                current = todo.pop()
                try:
                    entries = list(self._readdir(current))
                except (OSError, EOFError, SSHException, SFTPError) as exc:
                    raise self._error(exc, current) from exc
                for raw_name, attr in entries:
                    if b"/" in raw_name or b"\0" in raw_name:
                        continue  # a name no POSIX server can hold: never build paths from it
                    path = posixpath.join(current, remote_text(raw_name))
                    mode = attr.st_mode or 0
                    if stat_mode.S_ISDIR(mode):
                        if recursive and path not in skip:
                            todo.append(path)
                    elif stat_mode.S_ISREG(mode):
                        files.append(RemoteFile(path, int(attr.st_size or 0), int(attr.st_mtime or 0)))
            s.set_attribute("wharf.files", len(files))
        return files

    def stat(self, path: str) -> RemoteFile:
        try:
            attr = self._client().stat(remote_bytes(path))
        except (OSError, EOFError, SSHException, SFTPError) as exc:
            raise self._error(exc, path) from exc
        return RemoteFile(path, int(attr.st_size or 0), int(attr.st_mtime or 0))

    # --- reading ------------------------------------------------------------------------------

    def read_chunks(self, path: str, *, expected: RemoteFile | None = None) -> Iterator[bytes]:
        """Pipelined read: up to `window_requests` reads in flight, chunks of `chunk_size` out.

        paramiko's own `SFTPFile.prefetch()` is fast but keeps a record per 32 KiB request of the whole
        file, and with `max_concurrent_requests` it falls back to one synchronous read per 32 KiB when the
        window drains (about 6 MB/s here); this reader keeps the window full with bounded memory.
        """
        sftp = self._client()
        # A span that is not made current: this generator's frames interleave with the consumer's.
        s = tracer().start_span("sftp.read", attributes=self._attrs(
            **({"file.size": expected.size} if expected else {})))
        sink = _ReadSink()
        handle: paramiko.SFTPFile | None = None
        try:
            try:
                handle = sftp.open(remote_bytes(path), "rb")
                handle.set_pipelined(True)
                size = expected.size if expected else int(handle.stat().st_size or 0)
                total = 0
                for chunk in self._windowed(sftp, handle, size, sink):
                    total += len(chunk)
                    yield chunk
                if expected is not None:
                    now = handle.stat()
                    if int(now.st_size or 0) != expected.size or int(now.st_mtime or 0) != expected.mtime:
                        raise RemoteFileChangedError(path, f"listed {expected.size} bytes at mtime "
                                                           f"{expected.mtime}, now {now.st_size} at {now.st_mtime}")
                s.set_attribute("wharf.bytes_read", total)
            except _ShortFile as exc:
                raise RemoteFileChangedError(path, "it is shorter than listed") from exc
            except (OSError, EOFError, SSHException, SFTPError) as exc:
                raise self._error(exc, path) from exc
        except BaseException as exc:
            s.record_exception(exc)
            s.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            s.end()
            sink.discard = True
            sink.early.clear()
            if handle is not None and self.connected:
                try:
                    handle.close()
                except (OSError, EOFError, SSHException, SFTPError):
                    pass

    def _windowed(self, sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile, size: int,
                  sink: _ReadSink) -> Iterator[bytes]:
        # Built on the request/response calls SFTPFile.prefetch() itself uses.
        pending: deque[tuple[int, int, int]] = deque()
        request_size = self._request_size
        offset = 0
        buf = bytearray()
        while offset < size or pending:
            while offset < size and len(pending) < self._window_requests:
                length = min(request_size, size - offset)
                pending.append((_send_read(sftp, sink, handle, offset, length), offset, length))
                offset += length
            num, at, length = pending.popleft()
            data = _receive(sftp, sink, num)
            if len(data) < length:
                # A server that caps reads below our request size: learn its size, fetch the rest now.
                request_size = max(len(data), 1)
                data += self._read_exact(sftp, sink, handle, at + len(data), length - len(data))
            buf += data
            if len(buf) >= self._chunk_size:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)

    @staticmethod
    def _read_exact(sftp: paramiko.SFTPClient, sink: _ReadSink, handle: paramiko.SFTPFile, offset: int,
                    length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            piece = _receive(sftp, sink, _send_read(sftp, sink, handle, offset + len(out), length - len(out)))
            if not piece:
                raise _ShortFile
            out += piece
        return bytes(out)


    # --- writing (FileSink) -------------------------------------------------------------------

    @property
    def extensions(self) -> dict[str, bytes]:
        """The SFTP extensions the server announced (name -> data)."""
        return dict(getattr(self._client(), "extensions", {}))

    @property
    def atomic_replace(self) -> bool:
        return POSIX_RENAME in self.extensions

    def checksum_algorithms(self) -> frozenset[str]:
        data = self.extensions.get(_CHECK_FILE)
        if data is None:
            return frozenset()
        return frozenset(a.strip().lower() for a in data.decode("ascii", "replace").split(",") if a.strip())

    def _max_write(self) -> int:
        """The write request size: limits@openssh.com's max-write-length (at most MAX_WRITE_REQUEST), else 32 KiB."""
        if self._write_request is None:
            size = paramiko.SFTPFile.MAX_REQUEST_SIZE
            if _LIMITS in self.extensions:
                try:
                    t, msg = _wire(self._client())._request(CMD_EXTENDED, _LIMITS)
                    if t == CMD_EXTENDED_REPLY:
                        msg.get_int64()  # max packet length
                        msg.get_int64()  # max read length
                        announced = msg.get_int64()
                        if announced > 0:
                            size = min(int(announced), MAX_WRITE_REQUEST)
                except (OSError, SFTPError):
                    pass  # keep paramiko's size, which every server accepts
            self._write_request = size
        return self._write_request

    def write_chunks(self, path: str, chunks: Iterable[bytes]) -> int:
        """Create or truncate `path` and write the chunks pipelined: write requests go out without waiting for
        each answer (the SSH channel window bounds what is in flight), every answer is checked before this
        returns. Chunks of any size: they are cut into requests of the server's write size, holding at most one
        request's bytes besides the chunk being cut.

        On an AES-GCM connection the requests go through the lean write path (`sftp_lean`: a copy per SSH
        packet instead of paramiko's ~13), else (another cipher, `lean_write=False`, WHARF_SFTP_LEAN_WRITE=false)
        through paramiko's SFTPFile.write; the span's `wharf.sftp.write_path` says which, and why not lean."""
        sftp = self._client()
        total = 0
        with span("sftp.write", self._attrs()) as s:
            handle: paramiko.SFTPFile | None = None
            try:
                self._makedirs(posixpath.dirname(path))
                request = self._max_write()
                why_not = self._why_not_lean()
                s.set_attribute("wharf.sftp.write_path", "paramiko" if why_not else "lean")
                s.set_attribute("wharf.sftp.write_request", request)
                if why_not:
                    s.set_attribute("wharf.sftp.lean_unused", why_not)
                handle = sftp.open(remote_bytes(path), "wb", bufsize=0)
                handle.set_pipelined(True)
                if why_not:
                    handle.MAX_REQUEST_SIZE = request
                    for piece in _requests(chunks, request):
                        handle.write(piece)
                        total += len(piece)
                else:
                    writer = sftp_lean.LeanWriter(sftp, _wire(handle).handle, request_size=request)
                    try:
                        total = writer.write_all(chunks)
                    finally:
                        s.set_attribute("wharf.sftp.packets", writer.packets)
                        if writer.fallback_packets:
                            s.set_attribute("wharf.sftp.fallback_packets", writer.fallback_packets)
                handle.close()  # waits for every outstanding write's status
                handle = None
            except (OSError, EOFError, SSHException, SFTPError) as exc:
                raise self._error(exc, path) from exc
            finally:
                if handle is not None and self.connected:
                    try:
                        handle.close()
                    except (OSError, EOFError, SSHException, SFTPError):
                        pass
            s.set_attribute("wharf.bytes_written", total)
        return total

    def _why_not_lean(self) -> str:
        """"" when writes may take the lean path on this connection, else why not (logged once per connection)."""
        if not self._lean_write:
            return "turned off (WHARF_SFTP_LEAN_WRITE)"
        why = sftp_lean.unsupported(self._transport)
        if why and not self._lean_logged:
            self._lean_logged = True
            log.info("sftp writes use paramiko's path: %s", why,
                     extra={"server_address": self.host, "server_port": self.port, "reason": why})
        return why

    def checksum(self, path: str, algorithm: str) -> str | None:
        """The server's digest through its check-file extension; None when it does not offer `algorithm`."""
        if algorithm.lower() not in self.checksum_algorithms():
            return None
        with span("sftp.checksum", self._attrs(**{"wharf.algorithm": algorithm})):
            try:
                with self._client().open(remote_bytes(path), "rb") as handle:
                    digest: bytes = handle.check(algorithm.lower())
            except (OSError, EOFError, SSHException, SFTPError) as exc:
                raise self._error(exc, path) from exc
        return digest.hex()

    def replace(self, source: str, target: str) -> None:
        """posix-rename@openssh.com where offered (atomic, replaces the target). Elsewhere the target is removed
        first and the file renamed: a reader can see no file for a moment, never a partial one."""
        sftp = self._client()
        with span("sftp.replace", self._attrs(**{"wharf.atomic": self.atomic_replace})):
            try:
                self._makedirs(posixpath.dirname(target))
                if self.atomic_replace:
                    sftp.posix_rename(remote_bytes(source), remote_bytes(target))
                    return
            except (OSError, EOFError, SSHException, SFTPError) as exc:
                raise self._error(exc, source) from exc
            if not self._exists(source):
                raise RemoteFileError(source, errno.ENOENT)
            self.remove(target)
            self.rename(source, target)

    def makedirs(self, directory: str) -> None:
        """Create `directory` and its parents where missing."""
        try:
            self._makedirs(directory)
        except (EOFError, SSHException, SFTPError) as exc:
            raise self._error(exc, directory) from exc

    # --- post-actions -------------------------------------------------------------------------

    def remove(self, path: str) -> None:
        with span("sftp.remove", self._attrs()):
            try:
                self._client().remove(remote_bytes(path))
            except (OSError, EOFError, SSHException, SFTPError) as exc:
                error = self._error(exc, path)
                if isinstance(error, RemoteFileError) and error.missing:
                    return
                raise error from exc

    def rename(self, source: str, target: str) -> None:
        """Rename without ever replacing `target` (EEXIST when it exists; see FileSource.rename).

        Plain SFTP rename, not posix-rename@openssh.com (which replaces the target by design): OpenSSH does a
        plain rename of a file as link + unlink, atomic and refused when the target exists, and reports that
        as a bare failure, told apart from others by a stat. The lstat first refuses an existing target on
        servers whose plain rename would replace it; there, only a target created between the two is at risk."""
        sftp = self._client()
        with span("sftp.rename", self._attrs()):
            self._makedirs(posixpath.dirname(target))
            if self._exists(target):
                raise self._taken(source, target)
            try:
                sftp.rename(remote_bytes(source), remote_bytes(target))
            except (OSError, EOFError, SSHException, SFTPError) as exc:
                error = self._error(exc, source)
                if isinstance(error, RemoteFileError) and not (error.missing or error.denied) \
                        and self._exists(target):
                    raise self._taken(source, target) from exc
                raise error from exc

    def _exists(self, path: str) -> bool:
        """Whether anything (a file, a folder, a dangling link) is at `path`."""
        try:
            self._client().lstat(remote_bytes(path))
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise self._error(exc, path) from exc
        except (EOFError, SSHException, SFTPError) as exc:
            raise self._error(exc, path) from exc
        return True

    def _taken(self, source: str, target: str) -> RemoteFileError:
        """The target exists: EEXIST on it, unless the source is gone (an earlier attempt moved it there)."""
        if not self._exists(source):
            return RemoteFileError(source, errno.ENOENT)
        return RemoteFileError(target, errno.EEXIST)

    def _makedirs(self, directory: str) -> None:
        sftp = self._client()
        parts = [p for p in directory.split("/") if p]
        current = ""
        for part in parts:
            current += "/" + part
            try:
                sftp.stat(remote_bytes(current))
                continue
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise self._error(exc, current) from exc
            try:
                sftp.mkdir(remote_bytes(current))
            except OSError as exc:
                # Another session (a parallel worker, another poller) may have created it meanwhile.
                try:
                    if stat_mode.S_ISDIR(sftp.stat(remote_bytes(current)).st_mode or 0):
                        continue
                except OSError:
                    pass
                raise self._error(exc, current) from exc


class SftpConnector:
    """FileSourceFactory and FileSinkFactory for SFTP: a catalogue `sftp:` block plus secrets -> a connected
    SftpClient."""

    def __init__(self, secrets: Secrets, **client_options: Any) -> None:
        self._secrets = secrets
        self._options = client_options
        self._keys: dict[tuple[str, str], paramiko.PKey] = {}
        self._lock = threading.Lock()

    def _secret(self, partner_id: str, name: str, *, fresh: bool = False) -> str:
        try:
            return fresh_secret(self._secrets, name) if fresh else self._secrets.get(name)
        except NotFoundError as exc:
            raise SftpAuthError(f"partner {partner_id}: {exc}") from exc

    def _key(self, partner_id: str, key_secret: str, passphrase_secret: str | None, *,
             fresh: bool = False, certificate_secret: str | None = None) -> tuple[paramiko.PKey, str]:
        text = self._secret(partner_id, key_secret, fresh=fresh)
        passphrase = self._secret(partner_id, passphrase_secret, fresh=fresh) if passphrase_secret else None
        cert = self._secret(partner_id, certificate_secret, fresh=fresh) if certificate_secret else ""
        # Parsing an encrypted key runs bcrypt: cache it per secret (and content, so rotation is seen).
        cache_key = (key_secret, hashlib.sha256(f"{text}\0{passphrase or ''}\0{cert}".encode()).hexdigest())
        if cert:
            check_user_certificate(cert, secret_name=str(certificate_secret))
        with self._lock:
            if cache_key not in self._keys:
                key = load_private_key(text, passphrase=passphrase, secret_name=key_secret)
                if cert:
                    if certified_key(cert) != key.get_base64():
                        raise SftpAuthError(f"secret '{certificate_secret}' does not certify the key in secret "
                                            f"'{key_secret}' (it is a certificate for another key)")
                    try:
                        key.load_certificate(cert.strip())
                    except (ValueError, SSHException) as exc:
                        raise SftpAuthError(f"secret '{certificate_secret}' does not certify the key in secret "
                                            f"'{key_secret}' ({exc})") from exc
                self._keys[cache_key] = key
            return self._keys[cache_key], cache_key[1]

    def open(self, partner_id: str, config: Any) -> SftpClient:
        """A connected client. A refused login re-reads the login's secrets once, bypassing any cache: when
        one changed (rotated in Key Vault), the login is tried again with it before the failure counts."""
        try:
            return self._open(partner_id, config, fresh=False)[0]
        except SftpAuthError as first:
            if not getattr(first, "login_refused", False):
                raise
            used = getattr(first, "credentials", "")
            try:
                client, again = self._open(partner_id, config, fresh=True, unless=used)
            except _Unchanged:
                raise first from None
            log.info("sftp login refused; a rotated secret was read and the login retried",
                     extra={"partner": partner_id, "credentials_changed": again != used})
            return client

    def _open(self, partner_id: str, config: Any, *, fresh: bool, unless: str = "") -> tuple[SftpClient, str]:
        auth = config.auth
        certificate = getattr(auth, "certificate_secret", None)
        try:
            pkey, key_digest = self._key(partner_id, auth.private_key_secret, auth.passphrase_secret, fresh=fresh,
                                         certificate_secret=certificate) if auth.private_key_secret else (None, "")
        except CertificateValidityError as exc:  # a renewed certificate may wait in the secret: read it again
            exc.login_refused = True  # type: ignore[attr-defined]
            exc.credentials = f"cert-invalid:{fresh}"  # type: ignore[attr-defined]
            raise
        password = self._secret(partner_id, auth.password_secret, fresh=fresh) if auth.password_secret else None
        used = hashlib.sha256(f"{key_digest}\0{password or ''}".encode()).hexdigest()
        if unless and used == unless:
            raise _Unchanged
        hints = [f"the private key in secret '{auth.private_key_secret}'" if auth.private_key_secret else "",
                 f"the certificate in secret '{certificate}'" if certificate else "",
                 f"the password in secret '{auth.password_secret}'" if auth.password_secret else ""]
        client = SftpClient(
            config.host, config.username, port=config.port, pkey=pkey, password=password,
            host_keys=list(config.host_keys), connect_timeout=float(config.connect_timeout_seconds),
            op_timeout=float(config.operation_timeout_seconds),
            disabled_algorithms=dict(config.disabled_algorithms or {}) or None,
            credential_hint=" and ".join(h for h in hints if h), **self._options,
        )
        try:
            return client.connect(), used
        except SftpAuthError as exc:
            exc.login_refused = True  # type: ignore[attr-defined]
            exc.credentials = used  # type: ignore[attr-defined]
            raise


class CertificateValidityError(SftpAuthError):
    """The SSH user certificate is expired or not valid yet (the message says when)."""


def check_user_certificate(text: str, *, secret_name: str = "", now: datetime | None = None) -> datetime:
    """Raise CertificateValidityError unless the OpenSSH user certificate in `text` is valid now; its expiry.

    Read with `cryptography` (type, validity window); the signature is the server's to check."""
    from cryptography.hazmat.primitives.serialization import (
        SSHCertificate,
        SSHCertificateType,
        load_ssh_public_identity,
    )

    where = f"secret '{secret_name}'" if secret_name else "the certificate"
    try:
        cert = load_ssh_public_identity(text.strip().encode())
    except (ValueError, TypeError) as exc:
        raise SftpAuthError(f"{where} does not hold an OpenSSH certificate (*-cert-v01@openssh.com): {exc}") from exc
    if not isinstance(cert, SSHCertificate):
        raise SftpAuthError(f"{where} holds a public key, not an OpenSSH certificate (*-cert-v01@openssh.com)")
    if cert.type is not SSHCertificateType.USER:
        raise SftpAuthError(f"{where} holds a host certificate; a login needs a user certificate")
    now = now or datetime.now(UTC)
    after = datetime.fromtimestamp(min(cert.valid_after, 2**62), UTC) if cert.valid_after else None
    before = None if cert.valid_before >= 2**63 - 1 else datetime.fromtimestamp(cert.valid_before, UTC)
    if after is not None and now < after:
        raise CertificateValidityError(f"the SSH certificate in {where} is not valid yet: valid from "
                                       f"{after:%Y-%m-%d %H:%M:%S} UTC")
    if before is not None and now >= before:
        raise CertificateValidityError(f"the SSH certificate in {where} expired at {before:%Y-%m-%d %H:%M:%S} UTC")
    return before or datetime.max.replace(tzinfo=UTC)


def certified_key(text: str) -> str:
    """The base64 OpenSSH public key an OpenSSH certificate certifies ("" when `text` is no certificate)."""
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        SSHCertificate,
        load_ssh_public_identity,
    )

    try:
        cert = load_ssh_public_identity(text.strip().encode())
    except (ValueError, TypeError):
        return ""
    if not isinstance(cert, SSHCertificate):
        return ""
    public = cert.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    return public.split()[1].decode()


class _Unchanged(Exception):
    """The fresh read gave the same credentials: trying them again would only be refused again."""


__all__ = ["CertificateValidityError", "SftpClient", "SftpConnector", "check_user_certificate", "fingerprint",
           "load_private_key"]
