"""Secrets adapters: Key Vault in Azure; environment variables or an ignored JSON file locally."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.domain.errors import NotFoundError
from shared.observability.redaction import register_secret


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
    """Secrets from Azure Key Vault with DefaultAzureCredential; values cached per instance."""

    def __init__(self, vault_url: str, credential: Any = None) -> None:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        self._client = SecretClient(vault_url, credential or DefaultAzureCredential())
        self._cache: dict[str, str] = {}

    def get(self, name: str) -> str:
        from azure.core.exceptions import ResourceNotFoundError

        if name not in self._cache:
            try:
                value = self._client.get_secret(name).value
            except ResourceNotFoundError as exc:
                raise NotFoundError(f"secret '{name}' not found in Key Vault") from exc
            if value is None:
                raise NotFoundError(f"secret '{name}' has no value in Key Vault")
            self._cache[name] = value
        return register_secret(self._cache[name])
