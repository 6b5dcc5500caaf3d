"""Settings (lazy, both storage modes) and local secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.adapters.secrets import LocalSecrets, env_name
from shared.domain.errors import NotFoundError
from shared.settings import AZURITE_ACCOUNT, Settings


def test_development_storage_expands_to_azurite() -> None:
    s = Settings(AzureWebJobsStorage="UseDevelopmentStorage=true")
    assert s.storage_mode == "connection_string"
    assert f"BlobEndpoint=http://127.0.0.1:10000/{AZURITE_ACCOUNT}" in (s.storage_connection_string or "")


def test_identity_based_storage_uses_account_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    s = Settings(AzureWebJobsStorage__accountName="wharfprod")
    assert s.storage_mode == "identity"
    assert s.service_url("table") == "https://wharfprod.table.core.windows.net"


def test_missing_storage_says_which_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__accountName", raising=False)
    with pytest.raises(ValueError, match="AzureWebJobsStorage__accountName"):
        _ = Settings().storage_mode


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLL_QUEUE", "polls-x")
    monkeypatch.setenv("WHARF_PUBLISHER", "servicebus")
    s = Settings()
    assert (s.poll_queue, s.publisher) == ("polls-x", "servicebus")


def test_local_secrets_env_then_file(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("KEYDATA")
    f = tmp_path / "secrets.json"
    f.write_text(json.dumps({"from-file": "v2", "key-ref": f"@{key}"}))
    secrets = LocalSecrets(env={env_name("from-env"): "v1"}, file=f)
    assert env_name("demo-sftp-key") == "WHARF_SECRET_DEMO_SFTP_KEY"
    assert (secrets.get("from-env"), secrets.get("from-file"), secrets.get("key-ref")) == ("v1", "v2", "KEYDATA")


def test_missing_secret_names_the_secret_only(tmp_path: Path) -> None:
    secrets = LocalSecrets(env={"WHARF_SECRET_OTHER": "hunter2"}, file=tmp_path / "none.json")
    with pytest.raises(NotFoundError) as info:
        secrets.get("absent-one")
    assert "absent-one" in str(info.value) and "hunter2" not in str(info.value)
