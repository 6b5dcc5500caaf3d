"""Secrets adapters: Key Vault in Azure; environment variables or an ignored JSON file locally."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from shared.domain.errors import NotFoundError
from shared.observability.redaction import register_secret

log = logging.getLogger(__name__)

#: How long a secret read from Key Vault is reused (WHARF_SECRET_CACHE_SECONDS); an authentication failure
#: re-reads it at once (`refresh`), so a rotation takes effect on the next poll in any case.
DEFAULT_CACHE_SECONDS = 300.0


def fresh_secret(secrets: Any, name: str) -> str:
    """The secret's current value, bypassing any cache (`refresh` where the adapter has one)."""
    refresh = getattr(secrets, "refresh", None)
    return str(refresh(name)) if callable(refresh) else str(secrets.get(name))


class CachedSecrets:
    """Any Secrets behind a short cache: `get` reuses a value for `ttl` seconds, `refresh` reads it again.

    An authentication failure calls `refresh` once (SFTP login, Graph token, PGP passphrase): a rotated value
    is seen at once, not after the ttl, and never needs a restart."""

    def __init__(self, inner: Any, *, ttl: float = DEFAULT_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._ttl = float(ttl)
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> str:
        with self._lock:
            hit = self._cache.get(name)
        if hit is not None and self._clock() - hit[0] < self._ttl:
            return register_secret(hit[1])
        return self.refresh(name)

    def refresh(self, name: str) -> str:
        value = str(fresh_secret(self._inner, name))
        with self._lock:
            self._cache[name] = (self._clock(), value)
        return register_secret(value)

    def __getattr__(self, name: str) -> Any:  # properties of the inner adapter (e.g. `describe`)
        return getattr(self._inner, name)


def env_name(secret_name: str) -> str:
    """`demo-sftp-key` -> `WHARF_SECRET_DEMO_SFTP_KEY`."""
    return "WHARF_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", secret_name).upper()


class LocalSecrets:
    """Secrets from env (`WHARF_SECRET_<NAME>`) first, then a JSON file `{name: value}`.

    A value of the form `@path` (in env or file) is read from that file, so a key file can be
    referenced without copying it into an environment variable.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, file: Path | None = None) -> None:
        self._env = env if env is not None else os.environ
        self._file = file

    def _from_file(self) -> dict[str, Any]:
        if self._file is None or not self._file.exists():
            return {}
        return dict(json.loads(self._file.read_text()))

    def refresh(self, name: str) -> str:
        """Env and file are read on every call: nothing to bypass."""
        return self.get(name)

    def get(self, name: str) -> str:
        value = self._env.get(env_name(name))
        if value is None:
            value = self._from_file().get(name)
        if value is None:
            where = f"env {env_name(name)}" + (f" or {self._file}" if self._file else "")
            raise NotFoundError(f"secret '{name}' not found (looked in {where})")
        value = str(value)
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            try:
                return register_secret(path.read_text())
            except OSError as exc:
                raise NotFoundError(f"secret '{name}' points to a file that cannot be read: {path}") from exc
        return register_secret(value)


class KeyVaultSecrets:
    """Secrets from Azure Key Vault with DefaultAzureCredential; values cached for `ttl` seconds
    (WHARF_SECRET_CACHE_SECONDS), `refresh` reads one again at once."""

    def __init__(self, vault_url: str, credential: Any = None, *, ttl: float = DEFAULT_CACHE_SECONDS,
                 client: Any = None) -> None:
        if client is None:
            from azure.identity import DefaultAzureCredential
            from azure.keyvault.secrets import SecretClient

            client = SecretClient(vault_url, credential or DefaultAzureCredential())
        self._client = client
        self._cached = CachedSecrets(_KeyVaultReader(client), ttl=ttl)

    def get(self, name: str) -> str:
        return self._cached.get(name)

    def refresh(self, name: str) -> str:
        return self._cached.refresh(name)

    def describe(self, name: str) -> dict[str, Any]:
        """Version, updated and expiry time of a secret (its properties; never the value)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self._client.get_secret(name).properties
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"secret '{name}' not found in Key Vault") from exc
        return {"version": getattr(props, "version", None), "updated_on": getattr(props, "updated_on", None),
                "expires_on": getattr(props, "expires_on", None), "enabled": getattr(props, "enabled", None)}


class _KeyVaultReader:
    def __init__(self, client: Any) -> None:
        self._client = client

    def get(self, name: str) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            value = self._client.get_secret(name).value
        except ResourceNotFoundError as exc:
            raise NotFoundError(f"secret '{name}' not found in Key Vault") from exc
        if value is None:
            raise NotFoundError(f"secret '{name}' has no value in Key Vault")
        return str(value)
