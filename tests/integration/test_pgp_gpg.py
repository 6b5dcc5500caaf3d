"""OpenPGP interoperability with the real GnuPG 2.x (Debian's gpg) both ways, RSA 3072 and Ed25519/Cv25519,
compressed and not; and every way a message can be refused, with no plaintext left behind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.adapters.pgp import (
    Keyring,
    PgpError,
    PgpPassphraseError,
    decrypt_to_file,
    encrypt_to_file,
    file_chunks,
    inspect_key,
)
from tests.gpg_home import GpgHome, own_pgp_temp_dir, stored_key, wharf_keyrings

pytestmark = pytest.mark.timeout(300)

DATA = b"id,iban,amount\n" + b"".join(b"%d,DE89370400440532013000,%d.50\n" % (i, i) for i in range(20_000))
KINDS = ("ed25519", "rsa3072")


class World:
    def __init__(self) -> None:
        # Keys made by gpg (tests/data/pgp/make_keys.sh); the partner's gpg holds its secret keys and Wharf's
        # public ones, Wharf holds only what its secrets hold.
        self.partner = GpgHome()
        self.wharf = {kind: stored_key(f"wharf-{kind}") for kind in KINDS}
        self.them = {kind: stored_key(f"bank-{kind}") for kind in KINDS}
        for kind in KINDS:
            self.partner.import_secret(self.them[kind])
            self.partner.import_key(self.wharf[kind].public)
        self.stranger = stored_key("stranger-ed25519")

    def close(self) -> None:
        self.partner.close()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


@pytest.fixture(autouse=True)
def own_tempdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from own_pgp_temp_dir(monkeypatch)


def _from_partner(world: World, tmp_path: Path, kind: str, *, compress: bool = True, sign: bool = True,
                  armor: bool = False, data: bytes = DATA) -> Path:
    src = tmp_path / "in.csv"
    src.write_bytes(data)
    out = tmp_path / "in.csv.pgp"
    them = world.them[kind]
    args = ["-r", world.wharf[kind].fingerprint, "-z", "6" if compress else "0", "-o", str(out)]
    if armor:
        args.append("--armor")
    if sign:
        args = ["--passphrase", them.passphrase, "-u", them.fingerprint, *args, "--sign"]
    world.partner.gpg(*args, "--encrypt", str(src))
    return out


def _decrypt(world: World, path: Path, kind: str, **kw: object) -> tuple[bytes, object]:
    me = world.wharf[kind]
    args: dict[str, object] = {"private_key": me.secret, "passphrase": me.passphrase,
                               "signer_keys": world.them[kind].public, "verify": "required", **kw}
    with Keyring() as ring:
        result = decrypt_to_file(file_chunks(path, 4096), ring, **args)  # type: ignore[arg-type]
        return result.plaintext.read_bytes(), result


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "uncompressed"])
def test_wharf_decrypts_and_verifies_what_gpg_encrypted_and_signed(world: World, tmp_path: Path, kind: str,
                                                                   compress: bool) -> None:
    message = _from_partner(world, tmp_path, kind, compress=compress)
    before = wharf_keyrings()
    plain, result = _decrypt(world, message, kind)
    assert plain == DATA
    assert result.signature == "valid" and result.signer == world.them[kind].fingerprint  # type: ignore[attr-defined]
    assert result.decrypted_with == world.wharf[kind].fingerprint  # type: ignore[attr-defined]
    assert result.encrypted_to and all(len(k) == 16 for k in result.encrypted_to)  # type: ignore[attr-defined]
    assert wharf_keyrings() <= before  # the keyring directory (and the plaintext in it) is gone


def test_armoured_input_and_optional_verification_of_an_unsigned_message(world: World, tmp_path: Path) -> None:
    message = _from_partner(world, tmp_path, "ed25519", sign=False, armor=True)
    assert message.read_bytes().startswith(b"-----BEGIN PGP MESSAGE-----")
    plain, result = _decrypt(world, message, "ed25519", verify="optional")
    assert plain == DATA and result.signature == "missing" and result.signer == ""  # type: ignore[attr-defined]
    plain, result = _decrypt(world, message, "ed25519", verify="off", signer_keys=None)
    assert plain == DATA and result.signature == "not checked"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("kind", "compress", "armor"), [
    ("ed25519", True, False), ("ed25519", False, False), ("rsa3072", True, False), ("rsa3072", False, True)],
    ids=["ed25519-compressed", "ed25519-uncompressed", "rsa3072-compressed", "rsa3072-uncompressed-armoured"])
def test_gpg_decrypts_and_verifies_what_wharf_encrypted_and_signed(world: World, tmp_path: Path, kind: str,
                                                                   compress: bool, armor: bool) -> None:
    me, them = world.wharf[kind], world.them[kind]
    with Keyring() as ring:
        result = encrypt_to_file([DATA[:5000], DATA[5000:]], ring, recipient_keys=them.public, signer_key=me.secret,
                                 passphrase=me.passphrase, armor=armor, compress=compress)
        message = tmp_path / "out.csv.pgp"
        message.write_bytes(result.ciphertext.read_bytes())
    assert result.recipients == (them.fingerprint,) and result.signer == me.fingerprint
    assert message.read_bytes().startswith(b"-----BEGIN PGP MESSAGE-----") is armor
    done = world.partner.gpg("--passphrase", them.passphrase, "--status-fd", "2", "--decrypt", str(message))
    assert done.stdout == DATA
    status = done.stderr.decode()
    assert "[GNUPG:] DECRYPTION_OKAY" in status and "[GNUPG:] GOODSIG" in status
    assert "[GNUPG:] VALIDSIG" in status and me.fingerprint.upper() in status
    packets = world.partner.gpg("--passphrase", them.passphrase, "--list-packets", str(message)).stdout.decode()
    assert (":compressed packet:" in packets) is compress


def test_encrypt_without_signing_and_to_several_recipients(world: World, tmp_path: Path) -> None:
    both = world.them["ed25519"].public + world.them["rsa3072"].public
    with Keyring() as ring:
        result = encrypt_to_file([DATA], ring, recipient_keys=both)
        message = tmp_path / "m.pgp"
        message.write_bytes(result.ciphertext.read_bytes())
    assert set(result.recipients) == {world.them["ed25519"].fingerprint, world.them["rsa3072"].fingerprint}
    assert result.signer == ""
    done = world.partner.gpg("--passphrase", world.them["rsa3072"].passphrase, "--status-fd", "2", "--decrypt",
                             str(message))
    assert done.stdout == DATA and "GOODSIG" not in done.stderr.decode()


# --- refusals: each a PgpError of its kind, and no plaintext left --------------------------------------


def _refused(world: World, message: Path, kind: str = "ed25519", **kw: object) -> PgpError:
    before = wharf_keyrings()
    me = world.wharf[kind]
    args: dict[str, object] = {"private_key": me.secret, "passphrase": me.passphrase,
                               "signer_keys": world.them[kind].public, "verify": "required", **kw}
    with Keyring() as ring, pytest.raises(PgpError) as caught:
        try:
            decrypt_to_file(file_chunks(message, 4096), ring, **args)  # type: ignore[arg-type]
        finally:
            assert not (ring.home / "plaintext").exists()  # removed before the error left
    assert wharf_keyrings() <= before
    assert me.secret not in str(caught.value) and me.passphrase not in str(caught.value)
    return caught.value


def test_a_message_for_another_key_is_refused_naming_the_key_ids(world: World, tmp_path: Path) -> None:
    message = _from_partner(world, tmp_path, "rsa3072")  # for Wharf's RSA key; the rule holds the Ed25519 one
    error = _refused(world, message, "ed25519")
    assert error.kind == "wrong_key"
    assert world.wharf["ed25519"].fingerprint in str(error)


def test_an_unsigned_message_is_refused_when_a_signature_is_required(world: World, tmp_path: Path) -> None:
    error = _refused(world, _from_partner(world, tmp_path, "ed25519", sign=False))
    assert error.kind == "missing_signature" and "not signed" in str(error)


def test_a_message_signed_by_a_key_not_in_signer_keys_is_refused(world: World, tmp_path: Path) -> None:
    message = _from_partner(world, tmp_path, "ed25519")
    error = _refused(world, message, signer_keys=world.stranger.public)
    assert error.kind == "unknown_signer"
    error = _refused(world, message, verify="optional", signer_keys=world.stranger.public)
    assert error.kind == "unknown_signer"  # optional accepts no signature, not an unknown one


def test_a_bad_signature_is_refused(world: World, tmp_path: Path) -> None:
    them = world.them["ed25519"]
    (tmp_path / "d.csv").write_bytes(b"id,amount\n1,2\n")
    signed = tmp_path / "s.gpg"
    world.partner.gpg("--passphrase", them.passphrase, "-u", them.fingerprint, "-z", "0", "-o", str(signed),
                      "--sign", str(tmp_path / "d.csv"))
    raw = bytearray(signed.read_bytes())
    raw[raw.find(b"1,2")] = ord("9")  # the data changed after it was signed
    signed.write_bytes(bytes(raw))
    message = tmp_path / "bad.pgp"
    world.partner.gpg("-r", world.wharf["ed25519"].fingerprint, "-z", "0", "--no-literal", "-o", str(message),
                      "--encrypt", str(signed))
    error = _refused(world, message)
    assert error.kind == "bad_signature"


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not-openpgp"])
def test_a_corrupt_packet_stream_is_refused(world: World, tmp_path: Path, damage: str) -> None:
    message = _from_partner(world, tmp_path, "ed25519")
    raw = bytearray(message.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "flipped":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = bytearray(DATA[:1000])
    message.write_bytes(bytes(raw))
    error = _refused(world, message)
    assert error.kind == "corrupt"


def test_a_signed_but_not_encrypted_message_is_refused(world: World, tmp_path: Path) -> None:
    them = world.them["ed25519"]
    (tmp_path / "d.csv").write_bytes(DATA)
    world.partner.gpg("--passphrase", them.passphrase, "-u", them.fingerprint, "-o", str(tmp_path / "s.gpg"),
                      "--sign", str(tmp_path / "d.csv"))
    assert _refused(world, tmp_path / "s.gpg").kind == "not_encrypted"


def test_a_wrong_passphrase_is_its_own_error(world: World, tmp_path: Path) -> None:
    message = _from_partner(world, tmp_path, "rsa3072")
    error = _refused(world, message, "rsa3072", passphrase="not the passphrase")
    assert isinstance(error, PgpPassphraseError) and error.kind == "bad_passphrase"
    with Keyring() as ring, pytest.raises(PgpPassphraseError):
        encrypt_to_file([DATA], ring, recipient_keys=world.them["ed25519"].public,
                        signer_key=world.wharf["ed25519"].secret, passphrase="wrong")


def test_inspect_key_reads_fingerprint_and_expiry_not_the_value(world: World) -> None:
    info = inspect_key(world.wharf["rsa3072"].secret)
    assert info.fingerprints == (world.wharf["rsa3072"].fingerprint,) and info.secret
    assert info.expires_at is None  # made without expiry
    fresh = world.partner.make_key("Expiring <exp@example.test>", "ed25519")  # "2y"
    expiring = inspect_key(fresh.public)
    assert expiring.expires_at is not None
    assert 700 < (expiring.expires_at - datetime.now(UTC)).days < 740
    public = inspect_key(world.them["ed25519"].public)
    assert not public.secret and public.fingerprints == (world.them["ed25519"].fingerprint,)
    with pytest.raises(PgpError) as caught:
        inspect_key("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnonsense\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert caught.value.kind == "key"
