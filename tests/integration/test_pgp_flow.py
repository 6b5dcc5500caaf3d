"""OpenPGP in the processing flow (fake stores, real gpg): a rule's `pgp` decrypts before validation, a refused
message fails the job with its reason and quarantines the encrypted file, events name fingerprints only, a
rotated passphrase is re-read once; an SFTP destination's `pgp` uploads what the partner's gpg decrypts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import LocalSecrets, env_name
from shared.bootstrap import Services, build_services
from shared.catalog import parse_catalog
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.services import process
from shared.services.deliver import DeliveryOptions, deliver_sftp
from shared.settings import Settings
from tests.fakes import (
    FakeBlobStore,
    FakeBreakers,
    FakeDeliveries,
    FakeFileSources,
    FakeJobStore,
    FakePublisher,
    FakeSftpServer,
)
from tests.gpg_home import PASSPHRASE, GpgHome, own_pgp_temp_dir, stored_key, wharf_keyrings

pytestmark = pytest.mark.timeout(300)

WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
CSV = b"id,amount\n" + b"".join(b"%d,%d.25\n" % (i, i) for i in range(5000))
WHARF = stored_key("wharf-ed25519")
BANK = stored_key("bank-ed25519")


class RotatingSecrets(LocalSecrets):
    """LocalSecrets whose `get` serves a cached (possibly stale) value; `refresh` reads the current one."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env=env)
        self.cache: dict[str, str] = {}
        self.refreshed: list[str] = []

    def get(self, name: str) -> str:
        if name not in self.cache:
            self.cache[name] = super().get(name)
        return self.cache[name]

    def refresh(self, name: str) -> str:
        self.refreshed.append(name)
        self.cache[name] = super().get(name)
        return self.cache[name]


@pytest.fixture(scope="module")
def bank() -> Iterator[GpgHome]:
    home = GpgHome(BANK)
    home.import_key(WHARF.public)
    yield home
    home.close()


def secrets_env(**extra: str) -> dict[str, str]:
    return {env_name("wharf-pgp-key"): WHARF.secret, env_name("wharf-pgp-pass"): PASSPHRASE,
            env_name("bank-pgp-pub"): BANK.public, env_name("bank-sftp-key"): "unused", **extra}


class World:
    def __init__(self, verify: str = "required", secrets: LocalSecrets | None = None, **dest: Any) -> None:
        self.blobs, self.jobs = FakeBlobStore(), FakeJobStore()
        self.server = FakeSftpServer(host="bank.example")
        self.secrets = secrets or LocalSecrets(env=secrets_env())
        pgp = {"decrypt": True, "verify": verify, "private_key_secret": "wharf-pgp-key",
               "passphrase_secret": "wharf-pgp-pass", "signer_keys_secret": "bank-pgp-pub"}
        sftp = {"host": "bank.example", "username": "wharf", "auth": {"private_key_secret": "bank-sftp-key"},
                "host_keys": ["SHA256:" + "A" * 43], "remote_dirs": ["/from-bank"], "outbound_dir": "/to-bank"}
        self.catalog = parse_catalog({"partners": [
            {"id": "bank", "name": "Bank", "sftp": sftp,
             "processing": {"rules": [{"match": "*.csv.pgp", "type": "csv", "pgp": pgp,
                                       "csv": {"columns": {"id": {"type": "integer"}}}}]},
             "routes": [{"name": "back", "default": True,
                         "destinations": [{"kind": "sftp", "partner": "bank", **dest}]}]},
        ]}, env={})
        self.services: Services = build_services(
            Settings(), blobs=self.blobs, jobs=self.jobs, breakers=FakeBreakers(), deliveries=FakeDeliveries(),
            file_sinks=FakeFileSources(self.server), catalog=self.catalog, publisher=FakePublisher(),
            secrets=self.secrets)
        self.job_id = new_job_id(WHEN)
        self.jobs.append(self.job_id, EventType.CREATED, {"partner": "bank", "file_name": "pay.csv.pgp",
                                                          "source": "t"})

    def land(self, message: bytes) -> dict[str, Any]:
        info = self.blobs.upload_stream("inbound", f"bank/{self.job_id}/pay.csv.pgp", [message])
        self.raw = message
        return {"job_id": self.job_id, "partner": "bank", "file_name": "pay.csv.pgp", "container": "inbound",
                "blob_path": info.path}


def from_bank(bank: GpgHome, tmp_path: Path, data: bytes = CSV, *, sign: bool = True) -> bytes:
    (tmp_path / "pay.csv").write_bytes(data)
    args = ["-r", WHARF.fingerprint, "-o", str(tmp_path / "pay.csv.pgp")]
    if sign:
        args = ["--passphrase", PASSPHRASE, "-u", BANK.fingerprint, *args, "--sign"]
    bank.gpg(*args, "--encrypt", str(tmp_path / "pay.csv"))
    return (tmp_path / "pay.csv.pgp").read_bytes()


def everything_stored(w: World) -> str:
    """Every event, log entry and blob (but the landed/quarantined ciphertext) as text, to search."""
    parts = [json.dumps(e.data) for e in w.jobs.events(w.job_id)] + [e.message for e in w.jobs.logs(w.job_id)]
    for container in ("staging", "reports", "quarantine", "processed", "archive"):
        for info in w.blobs.list_blobs(container):
            parts.append(w.blobs.read(container, info.path).decode("latin-1") + json.dumps(dict(info.metadata)))
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def own_tempdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from own_pgp_temp_dir(monkeypatch)


def test_a_signed_message_is_decrypted_before_validation_and_the_events_name_fingerprints(
        bank: GpgHome, tmp_path: Path) -> None:
    w = World()
    before = wharf_keyrings()
    result = process.validate_and_transform(w.services, w.land(from_bank(bank, tmp_path)))
    assert result["valid"] and result["file_type"] == "csv"
    out = result["output"]
    assert out["name"] == "pay.csv" and w.blobs.read(out["container"], out["path"]) == CSV  # the plaintext's name
    (decrypt,) = [e.data for e in w.jobs.events(w.job_id) if e.data.get("step") == "decrypt"]
    assert decrypt["decrypted_with"] == WHARF.fingerprint and decrypt["signer"] == BANK.fingerprint
    assert decrypt["signature"] == "valid" and decrypt["counts"]["plain_bytes"] == len(CSV)
    assert "decrypt" in w.jobs.get_job(w.job_id).steps_completed
    stored = everything_stored(w)
    for material in (WHARF.secret, BANK.public, PASSPHRASE):
        for line in material.splitlines()[2:6]:  # any line of the armoured key body
            assert line not in stored
    assert PASSPHRASE not in stored
    assert wharf_keyrings() <= before  # no keyring directory (and no plaintext file) left


@pytest.mark.parametrize(("verify", "sign", "kind"), [("required", False, "missing signature")])
def test_a_refused_message_fails_the_job_and_quarantines_the_encrypted_file(
        bank: GpgHome, tmp_path: Path, verify: str, sign: bool, kind: str) -> None:
    w = World(verify)
    ref = w.land(from_bank(bank, tmp_path, sign=sign))
    before = wharf_keyrings()
    result = process.validate_and_transform(w.services, ref)
    assert result == {"valid": False, "reason": f"pgp {kind}: the message is not signed; pgp verify is required"}
    assert not w.blobs.list_blobs("staging") and not w.blobs.list_blobs("reports")  # no plaintext anywhere
    assert wharf_keyrings() <= before
    process.quarantine_file(w.services, {**ref, "reason": result["reason"], "step": "validate"})
    process.fail_job(w.services, {**ref, "reason": result["reason"], "step": "validate"})
    (quarantined,) = w.blobs.list_blobs("quarantine")
    assert w.blobs.read("quarantine", quarantined.path) == w.raw  # the raw (encrypted) file, as it landed
    job = w.jobs.get_job(w.job_id)
    assert job.status.value == "FAILED" and "pgp missing signature" in job.error
    assert CSV[10:40].decode() not in everything_stored(w)


def test_a_message_for_another_key_and_a_corrupt_one_fail_with_their_reasons(bank: GpgHome, tmp_path: Path) -> None:
    w = World()
    (tmp_path / "x.csv").write_bytes(CSV)
    bank.gpg("-r", BANK.fingerprint, "-o", str(tmp_path / "x.pgp"), "--encrypt", str(tmp_path / "x.csv"))
    result = process.validate_and_transform(w.services, w.land((tmp_path / "x.pgp").read_bytes()))
    assert not result["valid"] and result["reason"].startswith("pgp wrong key: the message is encrypted for key")
    assert WHARF.fingerprint in result["reason"]
    w = World()
    result = process.validate_and_transform(w.services, w.land(from_bank(bank, tmp_path)[:-300]))
    assert not result["valid"] and result["reason"].startswith("pgp corrupt:")


def test_a_rotated_passphrase_is_read_again_once_instead_of_failing(bank: GpgHome, tmp_path: Path) -> None:
    env = secrets_env()
    secrets = RotatingSecrets(env)
    secrets.cache["wharf-pgp-pass"] = "the passphrase before rotation"
    w = World(secrets=secrets)
    result = process.validate_and_transform(w.services, w.land(from_bank(bank, tmp_path)))
    assert result["valid"] and secrets.refreshed == ["wharf-pgp-pass"]
    # Still wrong after the fresh read: a failure with the reason, read again only once.
    env[env_name("wharf-pgp-pass")] = "wrong as well"
    secrets.cache["wharf-pgp-pass"] = "stale"
    w = World(secrets=secrets)
    result = process.validate_and_transform(w.services, w.land(from_bank(bank, tmp_path)))
    assert result["reason"] == "pgp bad passphrase: the passphrase of private_key_secret was refused by gpg"
    assert secrets.refreshed == ["wharf-pgp-pass", "wharf-pgp-pass"]


@pytest.mark.parametrize("armor", [False, True])
def test_an_sftp_destination_with_pgp_uploads_what_the_partners_gpg_decrypts_and_verifies(
        bank: GpgHome, tmp_path: Path, armor: bool) -> None:
    env = secrets_env(**{env_name("wharf-sign-key"): WHARF.secret})
    w = World(secrets=LocalSecrets(env=env),
              pgp={"encrypt_to_secret": "bank-pgp-pub", "sign_with_secret": "wharf-sign-key",
                   "sign_passphrase_secret": "wharf-pgp-pass", "armor": armor})
    staged = w.blobs.upload_stream("staging", f"bank/{w.job_id}/pay.csv", [CSV])
    output = {"container": "staging", "path": staged.path, "name": "pay.csv", "bytes": staged.size,
              "sha256": staged.sha256}
    dest = w.catalog.get("bank").routes[0].destinations[0].model_dump(mode="json")
    ref = {"job_id": w.job_id, "partner": "bank", "route": "back", "index": 0}
    opts = DeliveryOptions(retry_initial=0.001, retry_max=0.002, sleep=lambda _: None)
    result = deliver_sftp(w.services, w.jobs.get_job(w.job_id), ref, output, dest, opts=opts)
    assert result["target"] == "sftp:bank:/to-bank/pay.csv.pgp"
    assert result["pgp"] == {"recipients": [BANK.fingerprint], "signer": WHARF.fingerprint,
                             "plain_sha256": staged.sha256}
    uploaded = bytes(w.server.files["/to-bank/pay.csv.pgp"].data)
    assert uploaded.startswith(b"-----BEGIN PGP MESSAGE-----") is armor and CSV[:20] not in uploaded
    (tmp_path / "got.pgp").write_bytes(uploaded)
    done = bank.gpg("--passphrase", PASSPHRASE, "--status-fd", "2", "--decrypt", str(tmp_path / "got.pgp"))
    assert done.stdout == CSV
    assert "[GNUPG:] GOODSIG" in done.stderr.decode() and WHARF.fingerprint.upper() in done.stderr.decode()
    # A retry of the same delivery reuses the staged ciphertext (a new encryption would differ byte for byte).
    (cipher,) = [i for i in w.blobs.list_blobs("staging") if "/pgp/" in i.path]
    again = deliver_sftp(w.services, w.jobs.get_job(w.job_id), ref, output, dest, opts=opts)
    assert again["pgp"]["recipients"] == [BANK.fingerprint]
    (cipher_again,) = [i for i in w.blobs.list_blobs("staging") if "/pgp/" in i.path]
    assert cipher_again.sha256 == cipher.sha256 and cipher_again.etag == cipher.etag


def test_a_blob_destination_with_pgp_writes_what_the_partners_gpg_decrypts_and_verifies(
        bank: GpgHome, tmp_path: Path) -> None:
    env = secrets_env(**{env_name("wharf-sign-key"): WHARF.secret})
    w = World(secrets=LocalSecrets(env=env))
    staged = w.blobs.upload_stream("staging", f"bank/{w.job_id}/pay.csv", [CSV])
    output = {"container": "staging", "path": staged.path, "name": "pay.csv", "bytes": staged.size,
              "sha256": staged.sha256}
    dest = {"kind": "blob", "container": "processed", "path": "{partner}/{job_id}/{name}", "on_exists": "fail",
            "pgp": {"encrypt_to_secret": "bank-pgp-pub", "sign_with_secret": "wharf-sign-key",
                    "sign_passphrase_secret": "wharf-pgp-pass", "armor": False, "compress": True, "suffix": ".gpg"}}
    ref = {"job_id": w.job_id, "partner": "bank", "route": "back", "index": 0}
    result = process._deliver_blob(w.services, w.jobs.get_job(w.job_id), ref, output, dest)
    assert result["target"] == f"processed/bank/{w.job_id}/pay.csv.gpg"
    assert result["pgp"] == {"recipients": [BANK.fingerprint], "signer": WHARF.fingerprint,
                             "plain_sha256": staged.sha256}
    written = w.blobs.read("processed", f"bank/{w.job_id}/pay.csv.gpg")
    assert CSV[:20] not in written and result["sha256"] == hashlib.sha256(written).hexdigest()
    (tmp_path / "got.gpg").write_bytes(written)
    done = bank.gpg("--passphrase", PASSPHRASE, "--status-fd", "2", "--decrypt", str(tmp_path / "got.gpg"))
    assert done.stdout == CSV and "[GNUPG:] GOODSIG" in done.stderr.decode()
    # A retry reuses the staged ciphertext, so the blob already there is this delivery's own: not "taken".
    again = process._deliver_blob(w.services, w.jobs.get_job(w.job_id), ref, output, dest)
    assert again["sha256"] == result["sha256"]
    # The catalogue takes pgp on a blob destination.
    parse_catalog({"partners": [{"id": "b2", "name": "B", "routes": [{"name": "r", "default": True,
                   "destinations": [{"kind": "blob", "pgp": {"encrypt_to_secret": "bank-pgp-pub"}}]}]}]}, env={})
