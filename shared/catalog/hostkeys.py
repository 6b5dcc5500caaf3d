"""Pinned SSH host keys: known_hosts lines and SHA256 fingerprints, parsed and matched to hosts."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

_ACCEPT_ANY = frozenset(
    {"*", "any", "all", "accept", "accept-any", "autoadd", "auto-add", "none", "insecure", "ignore"}
)
_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)


@dataclass(frozen=True)
class HostKey:
    """A pinned host key: a known_hosts line or a bare SHA256 fingerprint. Compare servers by `fingerprint`."""

    text: str
    fingerprint: str  # "SHA256:<unpadded base64>", as `ssh-keygen -l` prints it
    key_type: str | None = None  # None for a bare fingerprint
    key_base64: str | None = None
    hosts: tuple[str, ...] = ()  # host patterns of a known_hosts line

    def matches_host(self, host: str, port: int = 22) -> bool:
        """Whether a known_hosts line names this host and port (a bare fingerprint names every host)."""
        if not self.hosts:
            return True
        name = host if port == 22 else f"[{host}]:{port}"
        matched = False
        for pattern in self.hosts:
            if pattern.startswith("|1|"):
                salt_b64, _, digest_b64 = pattern[3:].partition("|")
                salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
                if hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest):
                    matched = True
            elif pattern.startswith("!"):
                if _host_pattern_match(name, pattern[1:]):
                    return False
            elif _host_pattern_match(name, pattern):
                matched = True
        return matched


def _host_pattern_match(name: str, pattern: str) -> bool:
    """OpenSSH host patterns know only * and ? (brackets in `[host]:port` are literal)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name, re.IGNORECASE) is not None


def parse_host_key(text: str) -> HostKey:
    """Parse `[host]:port ssh-ed25519 AAAA...`, `host ssh-rsa AAAA...` or `SHA256:...`; ValueError says why not."""
    value = " ".join(text.split())
    if value.lower() in _ACCEPT_ANY:
        raise ValueError(
            "host keys must be pinned; there is no option to accept any key. Give the server's known_hosts "
            "line (ssh-keyscan -p PORT HOST) or its SHA256 fingerprint"
        )
    if value.startswith("SHA256:"):
        encoded = value[len("SHA256:"):]
        try:
            digest = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            digest = b""
        if len(digest) != 32:
            raise ValueError("is not a valid SHA256 fingerprint: expected SHA256: and 43 base64 characters")
        return HostKey(text=value, fingerprint="SHA256:" + base64.b64encode(digest).decode().rstrip("="))
    if value.upper().startswith("MD5:") or re.fullmatch(r"(?:[0-9a-fA-F]{2}:){15}[0-9a-fA-F]{2}", value):
        raise ValueError(
            "MD5 fingerprints are not accepted; give the SHA256 fingerprint (ssh-keygen -l -E sha256) "
            "or a known_hosts line"
        )
    parts = value.split(" ")
    if parts[0] == "@cert-authority":
        raise ValueError(
            "is a @cert-authority line: host certificates cannot be verified (paramiko, Wharf's SSH library, "
            "checks neither a host certificate's CA signature nor its validity or principals), so a CA is not "
            "accepted as trust. Pin the server's host key itself (ssh-keyscan -p PORT HOST, or its SHA256 "
            "fingerprint); see README 'SSH user certificates'"
        )
    if parts[0].startswith("@"):
        raise ValueError(f"known_hosts markers such as {parts[0]} are not supported; pin the host key itself")
    if parts[0] in _KEY_TYPES:
        raise ValueError(
            "is a public key without a host; write it as a known_hosts line ('[host]:port ssh-ed25519 AAAA...') "
            "or give its SHA256 fingerprint"
        )
    if len(parts) < 3:
        raise ValueError(
            "must be a known_hosts line ('[host]:port ssh-ed25519 AAAA...' or 'host ssh-rsa AAAA...') "
            "or a SHA256 fingerprint ('SHA256:...')"
        )
    hosts, key_type, key_b64 = parts[0], parts[1], parts[2]
    if key_type not in _KEY_TYPES:
        raise ValueError(f"has an unsupported key type {key_type!r}; expected one of {', '.join(_KEY_TYPES)}")
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("has key data that is not valid base64 (was it cut short when copied?)") from exc
    fields = _ssh_fields(blob)
    if (
        fields is None
        or len(fields) < 2
        or fields[0] != key_type.encode()
        or (key_type == "ssh-ed25519" and len(fields[1]) != 32)
    ):
        raise ValueError(f"has key data that is not a {key_type} key (was it cut short when copied?)")
    patterns = tuple(hosts.split(","))
    for pattern in patterns:
        if not pattern or pattern == "!":
            raise ValueError("has an empty host pattern")
        if pattern.startswith("|1|"):
            salt_b64, _, digest_b64 = pattern[3:].partition("|")
            try:
                base64.b64decode(salt_b64, validate=True)
                base64.b64decode(digest_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError("has a hashed host name that is not valid") from exc
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return HostKey(text=value, fingerprint=fingerprint, key_type=key_type, key_base64=key_b64, hosts=patterns)


def _ssh_fields(blob: bytes) -> list[bytes] | None:
    """Split an SSH public key blob into its length-prefixed fields; None unless it splits exactly."""
    fields: list[bytes] = []
    offset = 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return None
        length = int.from_bytes(blob[offset:offset + 4], "big")
        offset += 4
        if offset + length > len(blob):
            return None
        fields.append(blob[offset:offset + length])
        offset += length
    return fields
