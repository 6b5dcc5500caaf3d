"""The sftp block: where and how Wharf polls a partner's SFTP server."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from shared.catalog.common import (
    DEFAULT_SCHEDULE,
    GIB,
    AbsPath,
    ConnectSeconds,
    Glob,
    Number,
    Schedule,
    Seconds,
    SecretName,
    Size,
    Text,
    _between,
    _Model,
)
from shared.catalog.errors import Loc, _Invalid
from shared.catalog.hostkeys import HostKey, parse_host_key
from shared.domain.globs import glob_match


def _host_key(value: str) -> str:
    return parse_host_key(value).text


HostKeyText = Annotated[str, AfterValidator(_host_key)]


class SftpAuth(_Model):
    """Key Vault secret names for SFTP login: a private key and/or a password."""

    private_key_secret: SecretName | None = None
    password_secret: SecretName | None = None
    passphrase_secret: SecretName | None = None
    #: An OpenSSH user certificate (`ssh-ed25519-cert-v01@openssh.com AAAA...`, the `-cert.pub` file) signed by
    #: a CA the server trusts, for the key in private_key_secret.
    certificate_secret: SecretName | None = None

    @model_validator(mode="after")
    def _check(self) -> SftpAuth:
        if not (self.private_key_secret or self.password_secret):
            raise ValueError("needs private_key_secret or password_secret (a Key Vault secret name)")
        if self.passphrase_secret and not self.private_key_secret:
            raise _Invalid((("passphrase_secret",), "only applies to a private key; set private_key_secret too"))
        if self.certificate_secret and not self.private_key_secret:
            raise _Invalid((("certificate_secret",), "certifies a private key; set private_key_secret too"))
        return self


_ALGORITHM_GROUPS = ("ciphers", "kex", "keys", "macs", "pubkeys")


class SftpSource(_Model):
    """Where and how Wharf polls a partner's SFTP server (and, optionally, delivers to it)."""

    host: Text
    port: Annotated[int, Number, _between(1, 65535)] = 22
    username: Text
    auth: SftpAuth
    host_keys: Annotated[list[HostKeyText], Field(min_length=1)]
    #: Folders to poll. Empty for a partner Wharf only delivers to (then `outbound_dir` or a route's folder).
    remote_dirs: list[AbsPath] = Field(default_factory=list)
    include: Annotated[list[Glob], Field(min_length=1)] = Field(default_factory=lambda: ["*"])
    exclude: list[Glob] = Field(default_factory=list)
    recursive: bool = False
    min_age_seconds: Annotated[int, Number, _between(0, 7 * 24 * 3600)] = 30
    max_files_per_poll: Annotated[int, Number, _between(1, 10000)] = 100
    #: Concurrent SFTP sessions to this server across every worker and instance (default: the
    #: WHARF_SFTP_MAX_SESSIONS setting). Partners' servers often allow only a few sessions per account.
    max_sessions: Annotated[int, Number, _between(1, 64)] | None = None
    max_file_size_bytes: Size = 5 * GIB
    post_action: Literal["delete", "move", "rename", "leave"] = "leave"
    move_to: AbsPath | None = None
    suffix: Text | None = None
    #: When the target of move/rename exists: unique (the default: `orders.<mtime>.csv`, then numbered) or
    #: fail (the file stays where it is and the job says why). A partner's file is never replaced.
    on_exists: Literal["unique", "fail"] = "unique"
    schedule: Schedule = DEFAULT_SCHEDULE
    connect_timeout_seconds: ConnectSeconds = 15
    operation_timeout_seconds: Seconds = 60
    disabled_algorithms: dict[str, list[Text]] = Field(default_factory=dict)
    outbound_dir: AbsPath | None = None

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value is not None and "/" in value:
            raise ValueError("must not contain /")
        return value

    @field_validator("disabled_algorithms")
    @classmethod
    def _check_algorithms(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = [key for key in value if key not in _ALGORITHM_GROUPS]
        if unknown:
            raise _Invalid(*(
                ((key,), f"unknown algorithm group; use {', '.join(_ALGORITHM_GROUPS)}") for key in unknown
            ))
        return value

    @model_validator(mode="after")
    def _check(self) -> SftpSource:
        problems: list[tuple[Loc, str]] = []
        if not self.remote_dirs and not self.outbound_dir:
            problems.append((("remote_dirs",), "must list at least one folder to poll (or set outbound_dir for a "
                                               "partner Wharf only delivers to)"))
        if self.post_action == "move" and not self.move_to:
            problems.append((("move_to",), "is required when post_action is move"))
        if self.move_to and self.post_action != "move":
            problems.append((("move_to",), f"is only used when post_action is move (it is {self.post_action})"))
        if self.suffix is not None and self.post_action != "rename":
            problems.append((("suffix",), f"is only used when post_action is rename (it is {self.post_action})"))
        if self.move_to and any(
            self.move_to == d or (self.recursive and self.move_to.startswith(d.rstrip("/") + "/"))
            for d in self.remote_dirs
        ):
            problems.append((("move_to",), "is inside a polled folder, so moved files would be picked up again"))
        target = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        for index, text in enumerate(self.host_keys):
            key = parse_host_key(text)
            if not key.matches_host(self.host, self.port):
                problems.append((
                    ("host_keys", index),
                    f"is a known_hosts line for another host; this partner connects to {target}"
                    + (" (known_hosts writes a port other than 22 as [host]:port)" if self.port != 22 else ""),
                ))
        if problems:
            raise _Invalid(*problems)
        return self

    @property
    def polled(self) -> bool:
        """Whether Wharf polls this server (it has remote_dirs), rather than only delivering to it."""
        return bool(self.remote_dirs)

    @property
    def rename_suffix(self) -> str:
        return self.suffix if self.suffix is not None else ".done"

    def pinned_host_keys(self) -> list[HostKey]:
        return [parse_host_key(text) for text in self.host_keys]

    def pinned_fingerprints(self) -> frozenset[str]:
        """SHA256 fingerprints of every pinned key: the server's key must be one of them."""
        return frozenset(key.fingerprint for key in self.pinned_host_keys())

    def wants(self, name: str) -> bool:
        """Whether a remote file name is ours to take (include/exclude, and never our own renamed files)."""
        if self.post_action == "rename" and name.endswith(self.rename_suffix):
            return False
        return any(glob_match(name, p) for p in self.include) and not any(glob_match(name, p) for p in self.exclude)
