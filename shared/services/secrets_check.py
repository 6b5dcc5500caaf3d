"""Which secrets the catalogue references, whether each resolves, and when each expires; never a value.

Expiry is the earliest of what the secrets adapter knows (Key Vault `expires_on`, where the adapter has
`describe`) and what the material says: an OpenPGP key's (sub)key expiry, an OpenSSH certificate's
`valid_before`, an X.509 certificate's `not_valid_after`. `wharf secrets check` prints it (exit 1 when any is
missing or expires within WHARF_SECRET_EXPIRY_WARN_DAYS, default 14); `record_expiry` is what the daily
timer runs: the `wharf.secret.expires_in_days` {secret} gauge and a log warning per secret at risk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import NotFoundError, WharfError
from shared.metrics import SECRET_EXPIRES_IN_DAYS
from shared.observability.tracing import span

log = logging.getLogger(__name__)

DEFAULT_WARN_DAYS = 14
METRIC = SECRET_EXPIRES_IN_DAYS


def warn_days() -> int:
    try:
        return int(os.environ.get("WHARF_SECRET_EXPIRY_WARN_DAYS", DEFAULT_WARN_DAYS))
    except ValueError:
        return DEFAULT_WARN_DAYS


@dataclass
class SecretStatus:
    name: str
    used_by: list[str] = field(default_factory=list)
    resolves: bool = False
    kind: str = ""  # what the material is: pgp-key, ssh-certificate, x509-certificate, other
    version: str = ""
    updated_at: datetime | None = None
    expires_at: datetime | None = None
    expiry_source: str = ""
    detail: str = ""  # why it does not resolve, or what could not be read (never the value)
    state: str = "ok"  # ok | expiring | expired | missing

    def days_left(self, now: datetime) -> float | None:
        return None if self.expires_at is None else (self.expires_at - now).total_seconds() / 86400

    def as_dict(self, now: datetime) -> dict[str, Any]:
        days = self.days_left(now)
        return {"name": self.name, "used_by": self.used_by, "resolves": self.resolves, "kind": self.kind,
                "version": self.version, "updated_at": self.updated_at.isoformat() if self.updated_at else None,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
                "expires_in_days": round(days, 1) if days is not None else None,
                "expiry_source": self.expiry_source, "state": self.state, "detail": self.detail}


def _walk(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_secret") and isinstance(item, str) and item:
                yield item, f"{where}.{key}"
            else:
                yield from _walk(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{where}[{i}]")


def referenced_secrets(catalog: Any) -> dict[str, list[str]]:
    """Secret name -> where the catalogue uses it (`partner.sftp.auth.private_key_secret`, ...)."""
    found: dict[str, list[str]] = {}
    for partner in catalog.partners:
        dumped = partner.model_dump(mode="json") if hasattr(partner, "model_dump") else dict(partner)
        for name, where in _walk(dumped, str(getattr(partner, "id", "?"))):
            found.setdefault(name, []).append(where)
    return dict(sorted(found.items()))


def material_expiry(value: str) -> tuple[str, datetime | None, str]:
    """(kind, expiry, detail) read from a secret's value."""
    text = value.strip()
    if "-----BEGIN PGP" in text:
        from shared.adapters.pgp import PgpError, inspect_key

        try:
            return "pgp-key", inspect_key(text, what="the secret").expires_at, ""
        except (PgpError, WharfError) as exc:
            return "pgp-key", None, str(exc)
    if "-cert-v01@openssh.com" in text.split(None, 1)[0] if text else False:
        from shared.adapters.sftp import CertificateValidityError, check_user_certificate

        try:
            until = check_user_certificate(text)
            return "ssh-certificate", None if until.year == datetime.max.year else until, ""
        except CertificateValidityError as exc:
            from cryptography.hazmat.primitives.serialization import load_ssh_public_identity

            cert: Any = load_ssh_public_identity(text.encode())
            return "ssh-certificate", datetime.fromtimestamp(min(cert.valid_before, 2**33), UTC), str(exc)
        except WharfError as exc:
            return "ssh-certificate", None, str(exc)
    if "-----BEGIN CERTIFICATE-----" in text:
        from cryptography import x509

        try:
            certs = x509.load_pem_x509_certificates(text[text.index("-----BEGIN CERTIFICATE-----"):].encode())
            return "x509-certificate", min(c.not_valid_after_utc for c in certs), ""
        except ValueError as exc:
            return "x509-certificate", None, f"not a readable certificate: {exc}"
    return "other", None, ""


def check_secrets(services: Any, *, now: datetime | None = None, warn_within_days: int | None = None
                  ) -> list[SecretStatus]:
    """Every referenced secret's status (resolves, version, updated, expiry, state)."""
    now = now or datetime.now(UTC)
    days = warn_days() if warn_within_days is None else warn_within_days
    statuses: list[SecretStatus] = []
    with span("secrets.check", {"wharf.secret.warn_days": days}) as s:
        for name, used_by in referenced_secrets(services.catalog).items():
            status = SecretStatus(name, used_by)
            try:
                value = services.secrets.get(name)
                status.resolves = True
            except NotFoundError as exc:
                status.state, status.detail = "missing", str(exc)
                statuses.append(status)
                continue
            describe = getattr(services.secrets, "describe", None)
            if callable(describe):
                info = describe(name)
                status.version = str(info.get("version") or "")
                status.updated_at = info.get("updated_on")
                if info.get("expires_on") is not None:
                    status.expires_at, status.expiry_source = info["expires_on"], "key-vault"
            status.kind, expiry, detail = material_expiry(value)
            status.detail = detail
            if expiry is not None and (status.expires_at is None or expiry < status.expires_at):
                status.expires_at, status.expiry_source = expiry, status.kind
            left = status.days_left(now)
            if left is not None:
                status.state = "expired" if left <= 0 else "expiring" if left <= days else "ok"
            statuses.append(status)
        s.set_attribute("wharf.secret.count", len(statuses))
        s.set_attribute("wharf.secret.at_risk", sum(1 for x in statuses if x.state != "ok"))
    return statuses


def record_expiry(services: Any, *, now: datetime | None = None) -> list[SecretStatus]:
    """The daily timer: a gauge per secret with a known expiry, a warning per secret missing or expiring."""
    from shared.metrics import record_secret_expiry

    now = now or datetime.now(UTC)
    statuses = check_secrets(services, now=now)
    for status in statuses:
        left = status.days_left(now)
        if left is not None:
            record_secret_expiry(status.name, left)
        if status.state != "ok":
            log.warning("secret %s: %s", status.name, status.state,
                        extra={"entry": status.name, "state": status.state, "expires_at":
                               status.expires_at.isoformat() if status.expires_at else "", "used_by": status.used_by})
    return statuses
