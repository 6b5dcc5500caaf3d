"""Partner API keys: scoped to one partner, stored as a salted scrypt hash (never the key), two active at most."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

MAX_ACTIVE_KEYS = 2
_PREFIX = "wpk"
# scrypt cost: n=2**14, r=8, p=1 (16 MiB, ~50 ms): keys are random, so this guards a leaked table, not guessing.
_N, _R, _P = 2**14, 8, 1


@dataclass(frozen=True)
class PartnerKey:
    """One row of the PartnerKeys table (PK partner, RK key id)."""

    partner: str
    key_id: str
    salt: str  # hex
    digest: str  # hex scrypt(secret, salt)
    created_at: datetime
    created_by: str = ""
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _digest(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32).hex()


def new_key(partner: str, now: datetime, created_by: str = "") -> tuple[str, PartnerKey]:
    """A new key (the value, shown once) and its row."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    row = PartnerKey(partner=partner, key_id=key_id, salt=salt.hex(), digest=_digest(secret, salt),
                     created_at=now, created_by=created_by)
    return f"{_PREFIX}_{key_id}_{secret}", row


def split_key(value: str) -> tuple[str, str] | None:
    """(key id, secret) of a presented key, None when it is not shaped like one."""
    parts = value.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1], parts[2]


def verify(row: PartnerKey, secret: str) -> bool:
    return row.active and hmac.compare_digest(_digest(secret, bytes.fromhex(row.salt)), row.digest)
