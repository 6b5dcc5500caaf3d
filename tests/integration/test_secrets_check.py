"""`wharf secrets check` on a catalogue whose secrets hold an SSH key, an SSH user certificate that expires in
3 days, an OpenPGP key and one secret that is missing: states, expiry read from the material, exit codes,
never a value; the daily check's gauge and warnings; an X.509 certificate and Key Vault's expires_on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.adapters.secrets import KeyVaultSecrets, LocalSecrets, env_name
from shared.bootstrap import build_services
from shared.catalog import parse_catalog
from shared.observability.setup import for_tests
from shared.services.secrets_check import check_secrets, material_expiry, record_expiry, referenced_secrets
from shared.settings import Settings
from tests.gpg_home import stored_key

ROOT = Path(__file__).resolve().parents[2]


def _ssh(tmp_path: Path) -> tuple[str, str]:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "t", "-n", "wharf", "-V", "-1m:+3d",
                    f"{key}.pub"], check=True, capture_output=True)
    return key.read_text(), Path(f"{key}-cert.pub").read_text()


def _catalog() -> dict[str, Any]:
    sftp = {"host": "127.0.0.1", "username": "wharf", "host_keys": ["SHA256:" + "A" * 43], "remote_dirs": ["/"],
            "auth": {"private_key_secret": "chk-ssh-key", "certificate_secret": "chk-ssh-cert"}}
    pgp = {"decrypt": True, "verify": "required", "private_key_secret": "chk-pgp-key",
           "signer_keys_secret": "chk-missing"}
    return {"partners": [{"id": "chk-partner", "name": "C", "sftp": sftp,
                          "processing": {"rules": [{"match": "*.pgp", "pgp": pgp}]}}]}


def test_referenced_secrets_lists_each_name_with_where_it_is_used() -> None:
    found = referenced_secrets(parse_catalog(_catalog(), env={}))
    assert found == {"chk-missing": ["chk-partner.processing.rules[0].pgp.signer_keys_secret"],
                     "chk-pgp-key": ["chk-partner.processing.rules[0].pgp.private_key_secret"],
                     "chk-ssh-cert": ["chk-partner.sftp.auth.certificate_secret"],
                     "chk-ssh-key": ["chk-partner.sftp.auth.private_key_secret"]}


def test_wharf_secrets_check_reports_expiry_from_the_material_and_exits_1(tmp_path: Path) -> None:
    key, cert = _ssh(tmp_path)
    pgp = stored_key("wharf-ed25519").secret
    (tmp_path / "partners.yaml").write_text(yaml.safe_dump(_catalog()))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WHARF_CATALOG_PATH": str(tmp_path / "partners.yaml"),
           env_name("chk-ssh-key"): key, env_name("chk-ssh-cert"): cert, env_name("chk-pgp-key"): pgp}
    env.pop(env_name("chk-missing"), None)
    done = subprocess.run([sys.executable, "-m", "shared.cli", "secrets", "check", "--json"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["secrets"]}
    assert rows["chk-missing"]["state"] == "missing" and not rows["chk-missing"]["resolves"]
    assert rows["chk-ssh-cert"]["state"] == "expiring" and rows["chk-ssh-cert"]["kind"] == "ssh-certificate"
    assert 2.9 <= rows["chk-ssh-cert"]["expires_in_days"] <= 3.0
    assert rows["chk-pgp-key"]["kind"] == "pgp-key"
    assert rows["chk-pgp-key"]["state"] == "ok" and rows["chk-pgp-key"]["expires_at"] is None  # made without
    assert rows["chk-ssh-key"]["state"] == "ok" and rows["chk-ssh-key"]["kind"] == "other"
    for value in (key, cert, pgp):
        for line in [x.strip() for x in value.splitlines() if len(x.strip()) > 20][:3]:
            assert line[:40] not in done.stdout + done.stderr
    # A narrower window and the missing secret present: every secret fine, exit 0; the text form.
    env[env_name("chk-missing")] = stored_key("bank-ed25519").public
    done = subprocess.run([sys.executable, "-m", "shared.cli", "secrets", "check", "--warn-days", "2"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK       chk-ssh-cert: resolves (ssh-certificate)" in done.stdout
    assert "days, ssh-certificate)" in done.stdout


def test_the_daily_check_records_the_gauge_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, cert = _ssh(tmp_path)
    services = build_services(Settings(), catalog=parse_catalog(_catalog(), env={}), secrets=LocalSecrets(env={
        env_name("chk-ssh-key"): key, env_name("chk-ssh-cert"): cert,
        env_name("chk-pgp-key"): stored_key("wharf-ed25519").secret}))
    capture = for_tests()
    caplog.set_level(logging.WARNING)
    statuses = {s.name: s.state for s in record_expiry(services)}
    assert statuses["chk-ssh-cert"] == "expiring" and statuses["chk-missing"] == "missing"
    points = capture.metric_points("wharf.secret.expires_in_days")
    assert [(p.attributes.get("secret"), round(p.value)) for p in points] == [("chk-ssh-cert", 3)]
    warned = {r.entry for r in caplog.records if hasattr(r, "entry")}
    assert warned == {"chk-ssh-cert", "chk-missing"}


def test_x509_expiry_and_key_vault_expires_on() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wharf-test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3))
            .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    kind, expiry, _ = material_expiry(cert.public_bytes(Encoding.PEM).decode())
    assert kind == "x509-certificate" and expiry is not None and 2 <= (expiry - now).days <= 3

    class Props:
        version, updated_on, expires_on, enabled = "v7", now - timedelta(days=30), now + timedelta(days=5), True

    class Secret:
        value, properties = "plain-value", Props()

    class Client:
        def get_secret(self, name: str) -> Secret:
            return Secret()

    services = build_services(Settings(), catalog=parse_catalog(_catalog(), env={}),
                              secrets=KeyVaultSecrets("https://unused.invalid", client=Client()))
    rows = {s.name: s for s in check_secrets(services, now=now)}
    assert rows["chk-ssh-key"].version == "v7" and rows["chk-ssh-key"].expiry_source == "key-vault"
    assert rows["chk-ssh-key"].state == "expiring" and round(rows["chk-ssh-key"].days_left(now) or 0) == 5
