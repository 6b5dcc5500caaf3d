"""The secrets port's contract for every adapter (env, the cache over it, Key Vault over a stand-in SDK client:
no Key Vault emulator exists, so the real service is not reached here), and the cache: ttl, refresh."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.adapters.secrets import CachedSecrets, KeyVaultSecrets, LocalSecrets, env_name, fresh_secret
from shared.domain.errors import NotFoundError
from shared.observability.redaction import redact


@dataclass
class _Secret:
    value: str | None


class StandInSecretClient:
    """What KeyVaultSecrets uses of azure.keyvault.secrets.SecretClient: get_secret(name).value."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.calls = 0

    def get_secret(self, name: str) -> _Secret:
        self.calls += 1
        if name not in self.values:
            raise ResourceNotFoundError(f"A secret with (name/id) {name} was not found in this key vault.")
        return _Secret(self.values[name])


def _local(values: dict[str, str]) -> Any:
    return LocalSecrets(env={env_name(k): v for k, v in values.items()})


ADAPTERS: dict[str, Callable[[dict[str, str]], Any]] = {
    "local": _local,
    "cached-local": lambda values: CachedSecrets(_local(values), ttl=60),
    "key-vault": lambda values: KeyVaultSecrets("https://unused.invalid", client=StandInSecretClient(values)),
}


@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_secrets_contract(adapter: str) -> None:
    secrets = ADAPTERS[adapter]({"sftp-key": "s3cr3t-value-for-contract"})
    assert secrets.get("sftp-key") == "s3cr3t-value-for-contract"
    assert fresh_secret(secrets, "sftp-key") == "s3cr3t-value-for-contract"
    assert "s3cr3t-value-for-contract" not in redact("login with s3cr3t-value-for-contract failed")  # registered
    with pytest.raises(NotFoundError) as caught:
        secrets.get("missing-one")
    assert "missing-one" in str(caught.value)


def test_the_cache_reuses_a_value_for_its_ttl_and_refresh_reads_it_again() -> None:
    now = [0.0]
    client = StandInSecretClient({"k": "v1"})
    kv = KeyVaultSecrets("https://unused.invalid", client=client)
    kv._cached = CachedSecrets(kv._cached._inner, ttl=300, clock=lambda: now[0])  # the same reader, a test clock
    assert kv.get("k") == "v1" and client.calls == 1
    client.values["k"] = "v2"  # rotated in Key Vault
    now[0] = 299.0
    assert kv.get("k") == "v1" and client.calls == 1  # within the ttl: the cached value
    now[0] = 300.0
    assert kv.get("k") == "v2" and client.calls == 2  # the ttl passed: read again
    client.values["k"] = "v3"
    assert kv.refresh("k") == "v3" and client.calls == 3  # an authentication failure reads it at once
    assert kv.get("k") == "v3" and client.calls == 3
