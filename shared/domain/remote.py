"""Remote files and what can go wrong reaching them: narrow errors that say what to check."""

from __future__ import annotations

import errno as errno_codes
import os
import posixpath
from dataclasses import dataclass

from shared.domain.errors import ConfigurationError, DependencyUnavailableError, WharfError
from shared.domain.sanitize import display_name, remote_bytes


@dataclass(frozen=True)
class RemoteFile:
    """A regular file on a partner's server as one listing saw it.

    `path` is absolute; bytes that are not UTF-8 are carried as surrogate escapes (`remote_bytes(path)`
    gives the exact bytes back). `mtime` is whole seconds since the epoch (SFTP v3 resolution).
    """

    path: str
    size: int
    mtime: int

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def raw_path(self) -> bytes:
        return remote_bytes(self.path)

    def same_version(self, other: RemoteFile) -> bool:
        """Unchanged between two looks: same path, size and modification time."""
        return (self.path, self.size, self.mtime) == (other.path, other.size, other.mtime)


class RemoteError(WharfError):
    """Base of errors from a partner's file server."""

    retryable = False


class SourceUnavailableError(RemoteError, DependencyUnavailableError):
    """The server could not be reached or dropped the connection: transient, retried with backoff."""

    retryable = True


class SourceAuthError(RemoteError, ConfigurationError):
    """The server refused our credentials. Not retried: the message says what to check."""


class SftpAuthError(SourceAuthError):
    """SFTP login failed (user name, key or password)."""


class HostKeyMismatchError(RemoteError, ConfigurationError):
    """The server presented a host key that is not pinned in the catalogue. Never accepted, never retried."""

    def __init__(self, host: str, port: int, presented: str, expected: list[str]) -> None:
        self.host, self.port, self.presented, self.expected = host, port, presented, sorted(expected)
        super().__init__(
            f"host key mismatch for {host}:{port}: the server presented {presented}, but the catalogue pins "
            f"{', '.join(self.expected) or 'no key for this host'}. Nothing was downloaded. If the partner "
            "really changed its key, confirm the new fingerprint with them out of band and update the "
            "partner's sftp.host_keys in the catalogue; otherwise treat this as a possible interception."
        )


class RemoteFileError(RemoteError):
    """One file could not be read, renamed or removed. Callers branch on `errno`, never on the message."""

    def __init__(self, path: str, errno: int | None, reason: str = "") -> None:
        self.path, self.errno = path, errno
        what = os.strerror(errno) if errno else (reason or "remote error")
        super().__init__(f"{display_name(path)}: {what}")

    @property
    def missing(self) -> bool:
        return self.errno == errno_codes.ENOENT

    @property
    def denied(self) -> bool:
        return self.errno in (errno_codes.EACCES, errno_codes.EPERM)


class RemoteFileChangedError(RemoteError):
    """The file changed while it was read (size or mtime moved): it was not stable; nothing is committed."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(f"{display_name(path)} changed while it was read ({detail}); it will be taken "
                         "once it is stable")


class SourceConfigurationError(RemoteError, ConfigurationError):
    """The server and the catalogue cannot agree (no common algorithm, missing credentials). Not retried."""
