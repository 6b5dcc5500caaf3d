"""Rotation without restart: the SFTP login key is rotated on the server (authorized_keys) and in the secret
between two polls, while Wharf still holds the old value in its secrets cache. The second poll's refused login
re-reads the secret once and lands the file; the breaker records no failure. Private sshd, real Azurite."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from shared.adapters.secrets import CachedSecrets, LocalSecrets, env_name
from shared.bootstrap import Services
from shared.domain.ledger import BreakerState
from shared.services.poll_sftp import PollOptions, poll_partner
from tests.integration.sshd_server import SshdServer
from tests.integration.test_sftp_ingest import KEY_SECRET, make_catalog

pytestmark = [pytest.mark.sshd, pytest.mark.azurite, pytest.mark.timeout(120)]


class CountingSecrets(LocalSecrets):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env=env)
        self.reads = 0

    def get(self, name: str) -> str:
        self.reads += 1
        return super().get(name)


def _new_key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path), "-C", "rotated"], check=True)
    return path


def test_a_rotated_key_takes_effect_on_the_next_poll_without_restart_or_breaker(
        services: Services, private_sshd: SshdServer, tmp_path: Path) -> None:
    partner = f"rot{uuid.uuid4().hex[:10]}"
    folder = private_sshd.folder(partner)
    services.overrides["catalog"] = make_catalog(private_sshd, partner, folder)
    env = {env_name(KEY_SECRET): private_sshd.client_key.text}
    store = CountingSecrets(env)
    secrets = CachedSecrets(store, ttl=3600)  # a long cache: only the refused login makes it read again
    services.overrides["secrets"] = secrets
    options = PollOptions(settle_seconds=0.2, retry_attempts=1, breaker_threshold=1)

    (folder / "a.csv").write_bytes(b"id\n1\n")
    first = poll_partner(services, partner, options=options, requested_by="test")
    assert (first.status, first.landed) == ("ok", 1)
    reads = store.reads

    # Rotation: the server accepts only the new key; the secret holds it; Wharf's cache still the old one.
    new = _new_key(tmp_path / "rotated")
    (private_sshd.root / "authorized_keys").write_text(Path(f"{new}.pub").read_text())
    env[env_name(KEY_SECRET)] = new.read_text()
    assert secrets.get(KEY_SECRET) != new.read_text()  # cached: the old value

    (folder / "b.csv").write_bytes(b"id\n2\n")
    second = poll_partner(services, partner, options=options, requested_by="test")
    assert (second.status, second.landed) == ("ok", 1), second
    assert store.reads == reads + 1  # read again exactly once
    assert secrets.get(KEY_SECRET) == new.read_text()
    record = services.breakers.get("sftp", partner)
    assert record.state is BreakerState.CLOSED and record.failures == 0  # threshold 1: one failure would open it

    # A key that is wrong on both sides still fails (after one fresh read), and says why.
    (private_sshd.root / "authorized_keys").write_text(Path(f"{private_sshd.client_key.path}.pub").read_text())
    (folder / "c.csv").write_bytes(b"id\n3\n")
    third = poll_partner(services, partner, options=options, requested_by="test")
    assert third.status == "failed" and "login refused" in third.error
    assert store.reads == reads + 2
