"""OpenPGP over the GnuPG binary (python-gnupg): streaming decrypt/verify and encrypt/sign.

Every operation runs in a keyring of its own: a temporary GNUPGHOME (mode 0700) into which the keys of that
operation are imported from their secrets, with its own gpg-agent (loopback pinentry: the passphrase goes to
gpg on a pipe, never on a command line). The plaintext of a decryption is written by gpg to a file inside that
directory and nowhere else; the directory, the file and the agent are gone when the keyring closes, whatever
happened. Data streams through gpg's pipes in python-gnupg's 16 KiB buffers, so memory does not grow with
the file (benchmarks/pgp_stream.py). Why gpg and not an in-process library: docs/decisions.md #90.

Results name fingerprints, never key material; errors say what was wrong (no valid signature, a message for
another key, a corrupt packet stream, a wrong passphrase), never a value.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from shared.domain.errors import ConfigurationError, PermanentError

log = logging.getLogger(__name__)

Verify = Literal["required", "optional", "off"]
#: Bytes read from a plaintext or ciphertext file per chunk handed on.
CHUNK = 1024 * 1024
#: Bytes python-gnupg moves per read/write on gpg's pipes (its default, 16 KiB, costs ~2x in syscalls).
PIPE_BUFFER = 256 * 1024


class PgpError(PermanentError):
    """The message cannot be accepted: `kind` is one of bad_signature, missing_signature, unknown_signer,
    wrong_key, not_encrypted, corrupt, bad_passphrase, key (a key secret that holds no usable key)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PgpPassphraseError(PgpError):
    """gpg refused the passphrase of the secret key (a rotated passphrase is re-read once: services/pgp.py)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_passphrase", message)


@dataclass(frozen=True)
class KeyInfo:
    """What a key secret holds: primary fingerprints, whether secret, and the earliest expiry (None: never)."""

    fingerprints: tuple[str, ...]
    secret: bool
    expires_at: datetime | None
    algorithms: tuple[str, ...] = ()


@dataclass(frozen=True)
class DecryptResult:
    """How a message was decrypted: the key it was for, the signer (if any signature checked out)."""

    plaintext: Path
    size: int
    decrypted_with: str  # primary fingerprint of the private key used
    encrypted_to: tuple[str, ...]  # the key ids the message names as recipients
    signature: Literal["valid", "missing", "not checked"]
    signer: str = ""  # primary fingerprint of the signing key, when valid
    signed_at: str = ""


class _Reader:
    """A file-like over an iterator of chunks, for python-gnupg's copy thread (no copy of a chunk's rest)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.current = memoryview(b"")
        self.total = 0
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            while not self.current:
                chunk = next(self.chunks, None)
                if chunk is None:
                    return b""
                self.current = memoryview(chunk)
        except BaseException as exc:  # the copy thread swallows errors: keep it to re-raise
            self.error = exc
            raise
        n = len(self.current) if size < 0 else min(size, len(self.current))
        out, self.current = bytes(self.current[:n]), self.current[n:]
        self.total += n
        return out


def _gnupg() -> Any:
    import gnupg

    return gnupg


def gpg_binary() -> str:
    path = os.environ.get("WHARF_GPG_BINARY") or shutil.which("gpg")
    if not path:
        raise ConfigurationError("OpenPGP needs the gpg binary (Debian package gnupg; scripts/install-system-deps.sh)"
                                 " or WHARF_GPG_BINARY")
    return path


class Keyring:
    """A temporary GNUPGHOME for one operation. Use as a context manager; `close()` removes everything."""

    def __init__(self) -> None:
        # WHARF_PGP_TEMP_DIR: where keyrings (and so decrypted files) go; the system temp dir by default. Keep the
        # path short: gpg-agent's socket lives in it (108 bytes at most).
        self.home = Path(tempfile.mkdtemp(prefix="wharf-gpg-", dir=os.environ.get("WHARF_PGP_TEMP_DIR") or None))
        os.chmod(self.home, 0o700)
        (self.home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        (self.home / "gpg.conf").write_text("no-greeting\nno-permission-warning\n")
        self.gpg = _gnupg().GPG(gpgbinary=gpg_binary(), gnupghome=str(self.home))
        self.gpg.encoding = "utf-8"
        self.gpg.buffer_size = PIPE_BUFFER

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self.home.exists():
            return
        gpgconf = shutil.which("gpgconf")
        if gpgconf:
            subprocess.run([gpgconf, "--homedir", str(self.home), "--kill", "all"], capture_output=True,
                           check=False, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)

    def scratch(self, name: str) -> Path:
        """A path inside the keyring's directory (removed with it)."""
        return self.home / name

    def import_keys(self, material: str, *, what: str, passphrase: str | None = None) -> KeyInfo:
        """Import the keys of one secret; KeyInfo of what it held. PgpError(kind=key) when it holds none."""
        result = self.gpg.import_keys(material, passphrase=passphrase) if passphrase else self.gpg.import_keys(
            material)
        fingerprints = tuple(dict.fromkeys(str(f).lower() for f in (result.fingerprints or [])))
        if not fingerprints:
            raise PgpError("key", f"{what} holds no OpenPGP key gpg can import")
        secret = any(int(r.get("ok", "0") or 0) & 16 for r in result.results if isinstance(r, dict))
        return KeyInfo(fingerprints, secret, *self._expiry(fingerprints, secret=secret))

    def _expiry(self, fingerprints: tuple[str, ...], *, secret: bool) -> tuple[datetime | None, tuple[str, ...]]:
        keys = self.gpg.list_keys(secret)
        earliest: datetime | None = None
        algos: list[str] = []
        for key in keys:
            if str(key.get("fingerprint", "")).lower() not in fingerprints:
                continue
            algos.append(str(key.get("algo", "")))
            for item in [key, *key.get("subkey_info", {}).values()]:
                expires = str(item.get("expires") or "")
                if expires.isdigit():
                    when = datetime.fromtimestamp(int(expires), UTC)
                    earliest = when if earliest is None or when < earliest else earliest
        return earliest, tuple(algos)


def inspect_key(material: str, *, what: str = "the key") -> KeyInfo:
    """Fingerprints and expiry of the keys a secret holds (for `wharf secrets check`)."""
    with Keyring() as ring:
        return ring.import_keys(material, what=what)


def _status_lines(result: Any) -> list[str]:
    return [line for line in str(getattr(result, "stderr", "") or "").splitlines() if line.startswith("[GNUPG:]")]


def decrypt_to_file(chunks: Iterable[bytes], ring: Keyring, *, private_key: str, passphrase: str | None,
                    signer_keys: str | None, verify: Verify, name: str = "plaintext") -> DecryptResult:
    """Decrypt (and check the signature of) a message read from `chunks` into a file inside `ring`.

    Raises PgpError when the message is not for the private key, is not encrypted, its packets are corrupt,
    the passphrase is wrong, or its signature does not satisfy `verify` (required: a valid signature by one of
    `signer_keys`; optional: none, or a valid one; off: not checked). The plaintext file is removed first."""
    own = ring.import_keys(private_key, what="private_key_secret")
    if not own.secret:
        raise PgpError("key", "private_key_secret holds a public key only; decryption needs the secret key")
    signers: tuple[str, ...] = ()
    if verify != "off":
        if not signer_keys:
            raise ConfigurationError("pgp verify is required/optional but no signer_keys_secret is configured")
        signers = ring.import_keys(signer_keys, what="signer_keys_secret").fingerprints
    out = ring.scratch(name)
    reader = _Reader(iter(chunks))
    try:
        result = ring.gpg.decrypt_file(reader, passphrase=passphrase or None, output=str(out), always_trust=True,
                                       extra_args=["--pinentry-mode", "loopback"])
        if reader.error is not None:
            raise reader.error
        _check_decrypt(result, own, signers, verify)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    status = _status_lines(result)
    recipients = tuple(line.split()[2].lower() for line in status if line.split()[1:2] == ["ENC_TO"])
    signer = str(getattr(result, "pubkey_fingerprint", "") or getattr(result, "fingerprint", "") or "").lower()
    if verify == "off":
        signature: Literal["valid", "missing", "not checked"] = "not checked"
        signer = ""
    else:
        signature = "valid" if result.valid else "missing"
        if not result.valid:
            signer = ""
    return DecryptResult(out, out.stat().st_size, own.fingerprints[0], recipients, signature, signer,
                         str(getattr(result, "sig_timestamp", "") or ""))


#: libgpg-error codes (low 16 bits of an ERROR/FAILURE status code): bad and missing passphrase.
_PASSPHRASE_CODES = frozenset({11, 69})


def _passphrase_refused(result: Any) -> bool:
    for line in _status_lines(result):
        parts = line.split()
        if len(parts) >= 4 and parts[1] in ("ERROR", "FAILURE") and parts[-1].isdigit():
            if int(parts[-1]) & 0xFFFF in _PASSPHRASE_CODES:
                return True
        if parts[1:2] in (["BAD_PASSPHRASE"], ["MISSING_PASSPHRASE"]):
            return True
    return False


def _check_decrypt(result: Any, own: KeyInfo, signers: tuple[str, ...], verify: Verify) -> None:
    status = _status_lines(result)
    keys = [line.split() for line in status]
    seen = {k[1] for k in keys if len(k) > 1}
    enc_to = [k[2].lower() for k in keys if k[1:2] == ["ENC_TO"] and len(k) > 2]
    if _passphrase_refused(result):
        raise PgpPassphraseError("the passphrase of private_key_secret was refused by gpg")
    if "BADSIG" in seen:  # gpg then reports no DECRYPTION_OKAY; refused whatever `verify` says
        raise PgpError("bad_signature", f"bad signature by key {getattr(result, 'key_id', '') or '(unknown)'}: "
                                        "the file was altered or not signed by that key")
    if not result.ok:
        if "NO_SECKEY" in seen and "DECRYPTION_OKAY" not in seen:
            raise PgpError("wrong_key", f"the message is encrypted for key(s) {', '.join(enc_to) or '(unknown)'}, "
                                        f"not for this rule's key {own.fingerprints[0]}")
        if "DECRYPTION_FAILED" in seen or "BEGIN_DECRYPTION" in seen:
            raise PgpError("corrupt", "decryption failed: the packet stream is corrupt or was tampered with "
                                      f"(gpg: {result.status or 'error'})")
        if "PLAINTEXT" in seen or "NEWSIG" in seen or "GOODSIG" in seen:
            raise PgpError("not_encrypted", "the file is not encrypted (an OpenPGP message without encryption); "
                                            "pgp.decrypt is set for this rule")
        raise PgpError("corrupt", "not a readable OpenPGP message: the packet stream is corrupt or not OpenPGP"
                                  f" (gpg: {result.status or 'no OpenPGP data found'})")
    if {"DECRYPTION_FAILED", "BADMDC"} & seen or "END_DECRYPTION" not in seen:
        raise PgpError("corrupt", "decryption failed: the packet stream is corrupt or was tampered with")
    if verify == "off":
        return
    if "BADSIG" in seen:
        raise PgpError("bad_signature", f"bad signature by key {getattr(result, 'key_id', '') or '(unknown)'}: "
                                        "the file was altered or not signed by that key")
    if "ERRSIG" in seen or "NO_PUBKEY" in seen:
        raise PgpError("unknown_signer", f"signed by key {getattr(result, 'key_id', '') or '(unknown)'} which is "
                                         "not in signer_keys_secret")
    if {"EXPKEYSIG", "REVKEYSIG", "EXPSIG"} & seen:
        raise PgpError("bad_signature", f"signature not acceptable: {result.status}")
    if result.valid:
        signer = str(getattr(result, "pubkey_fingerprint", "") or result.fingerprint or "").lower()
        if signer not in signers:
            raise PgpError("unknown_signer", f"signed by key {signer} which is not in signer_keys_secret")
        return
    if verify == "required":
        raise PgpError("missing_signature", "the message is not signed; pgp verify is required")


@dataclass(frozen=True)
class EncryptResult:
    ciphertext: Path
    size: int
    recipients: tuple[str, ...]
    signer: str = ""


def encrypt_to_file(chunks: Iterable[bytes], ring: Keyring, *, recipient_keys: str, signer_key: str | None = None,
                    passphrase: str | None = None, armor: bool = False, compress: bool = True,
                    name: str = "ciphertext") -> EncryptResult:
    """Encrypt (and sign) `chunks` for every key in `recipient_keys` into a file inside `ring`."""
    recipients = ring.import_keys(recipient_keys, what="encrypt_to_secret").fingerprints
    signer = ""
    if signer_key:
        info = ring.import_keys(signer_key, what="sign_with_secret")
        if not info.secret:
            raise PgpError("key", "sign_with_secret holds a public key only; signing needs the secret key")
        signer = info.fingerprints[0]
    out = ring.scratch(name)
    extra = ["--pinentry-mode", "loopback", "--compress-algo", "zlib" if compress else "none"]
    if signer:
        extra += ["--local-user", signer]
    reader = _Reader(iter(chunks))
    try:
        result = ring.gpg.encrypt_file(reader, list(recipients), sign=signer or None, passphrase=passphrase or None,
                                       always_trust=True, armor=armor, output=str(out), extra_args=extra)
        if reader.error is not None:
            raise reader.error
        seen = {line.split()[1] for line in _status_lines(result) if len(line.split()) > 1}
        if _passphrase_refused(result):
            raise PgpPassphraseError("the passphrase of sign_with_secret was refused by gpg")
        if not result.ok or (signer and "SIG_CREATED" not in seen):
            detail = getattr(result, "status_detail", "")
            raise PgpError("key", f"gpg could not encrypt{' and sign' if signer else ''}: {result.status or 'error'}"
                                  + (f" ({detail})" if detail else ""))
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return EncryptResult(out, out.stat().st_size, recipients, signer)


def file_chunks(path: Path, chunk_size: int = CHUNK) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            yield chunk


def open_binary(path: Path) -> IO[bytes]:
    return path.open("rb")
