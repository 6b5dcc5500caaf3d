"""A real GnuPG 2.x in a temporary GNUPGHOME, for interoperability tests: keys made and messages read by gpg."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

#: Test keys made by tests/data/pgp/make_keys.sh with gpg (no expiry; passphrase below).
KEYS = Path(__file__).parent / "data" / "pgp"
PASSPHRASE = "correct horse"


@dataclass(frozen=True)
class Key:
    uid: str
    fingerprint: str
    public: str  # ASCII-armoured
    secret: str  # ASCII-armoured, protected by `passphrase`
    passphrase: str


def stored_key(name: str) -> Key:
    """A stored test key, e.g. `wharf-ed25519` (its fingerprint read by gpg from the material)."""
    public = (KEYS / f"{name}.pub.asc").read_text()
    secret = (KEYS / f"{name}.sec.asc").read_text()
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys"], input=public.encode(),
                         capture_output=True, check=True, timeout=60).stdout.decode()
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    return Key(name, fpr.lower(), public, secret, PASSPHRASE)



def own_pgp_temp_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For an autouse fixture (`yield from`): the keyrings Wharf's PGP adapter makes go to a temporary directory
    of this test's own (WHARF_PGP_TEMP_DIR; short, gpg-agent's socket lives there), so other processes'
    keyrings (a benchmark, another test run) do not show in `wharf_keyrings()`."""
    path = Path(tempfile.mkdtemp(prefix="wt-", dir="/tmp"))
    monkeypatch.setenv("WHARF_PGP_TEMP_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def wharf_keyrings() -> set[str]:
    """The keyring directories Wharf's PGP adapter has in WHARF_PGP_TEMP_DIR now."""
    return {p for p in os.listdir(os.environ["WHARF_PGP_TEMP_DIR"]) if p.startswith("wharf-gpg-")}


class GpgHome:
    """`gpg` with its own keyring; `close()` stops its agent and removes it. `secret_keys`: keys whose secret
    material it holds from the start (the other party of an exchange: signs what it sends, reads what it gets)."""

    def __init__(self, *secret_keys: Key) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="wharf-test-gpg-"))
        self.home.chmod(0o700)
        (self.home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        for key in secret_keys:
            self.import_secret(key)

    def argv(self, *args: str) -> list[str]:
        """The gpg command line on this keyring (e.g. to time it in a process of its own)."""
        return ["gpg", "--homedir", str(self.home), "--batch", "--yes", "--no-tty", "--pinentry-mode", "loopback",
                "--trust-model", "always", *args]

    def gpg(self, *args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(self.argv(*args), input=input, capture_output=True, check=False, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"gpg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
        return done

    def make_key(self, uid: str, kind: str, passphrase: str = PASSPHRASE) -> Key:
        """kind 'ed25519' (Ed25519 signing + Cv25519 encryption) or 'rsa3072' (RSA 3072 both)."""
        primary, sub = ("ed25519", "cv25519") if kind == "ed25519" else ("rsa3072", "rsa3072")
        self.gpg("--passphrase", passphrase, "--quick-gen-key", uid, primary, "sign", "2y")
        fpr = self.fingerprint(uid)
        self.gpg("--passphrase", passphrase, "--quick-add-key", fpr, sub, "encr", "2y")
        public = self.gpg("--armor", "--export", fpr).stdout.decode()
        secret = self.gpg("--passphrase", passphrase, "--armor", "--export-secret-keys", fpr).stdout.decode()
        return Key(uid, fpr.lower(), public, secret, passphrase)

    def fingerprint(self, uid: str) -> str:
        out = self.gpg("--with-colons", "--list-keys", uid).stdout.decode()
        return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))

    def import_key(self, material: str) -> None:
        self.gpg("--import", input=material.encode())

    def import_secret(self, key: Key) -> None:
        """The key's secret material (gpg asks for its passphrase on import)."""
        self.gpg("--passphrase", key.passphrase, "--import", input=key.secret.encode())

    def sign_encrypt(self, src: Path, out: Path, *, signer: Key, recipient: Key, options: tuple[str, ...] = ()) -> None:
        """What a partner sends: `src` signed by `signer` (its secret key held here), encrypted to `recipient`."""
        self.gpg("--passphrase", signer.passphrase, "-u", signer.fingerprint, "-r", recipient.fingerprint, *options,
                 "-o", str(out), "--sign", "--encrypt", str(src))

    def close(self) -> None:
        if shutil.which("gpgconf"):
            subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"], capture_output=True,
                           check=False, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)
