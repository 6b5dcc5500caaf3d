"""Secret scrubbing for spans, metrics and logs: a registry of secret values plus well-known secret patterns.

Adapters call `register_secret(value)` for every secret they hand out; `redact()` scrubs registered values and
well-known patterns (private keys, SAS tokens, key=value pairs, bearer tokens, JWTs, URL credentials).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

# --- what must never be an attribute -------------------------------------------------------------------------
# Message bodies and file content: dropped wherever they appear as attributes. Pass references (blob path,
# job id) and sizes instead.
BODY_ATTRIBUTE_KEYS = frozenset({
    "messaging.message.body", "message.body", "http.request.body", "http.response.body", "email.body",
    "mail.body", "file.content", "file.body", "wharf.body", "wharf.content", "body", "content", "payload",
})
# A longer value is truncated: an accidental body cannot ride on an attribute (exception events are exempt).
MAX_ATTRIBUTE_CHARS = 2048
REDACTED = "***"
# Registered secrets shorter than this are ignored: scrubbing "abc" from every log line would destroy logs.
MIN_SECRET_LENGTH = 6

# --- the registry and the patterns ---------------------------------------------------------------------------

_S = TypeVar("_S", str, bytes, None)
_secrets_lock = threading.Lock()
_secret_values: set[str] = set()
_secret_re: re.Pattern[str] | None = None

_KEY_NAMES = (
    r"password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|access[_-]?key|account[_-]?key|"
    r"shared[_-]?access[_-]?key|shared[_-]?access[_-]?signature|sig|token|access[_-]?token|refresh[_-]?token|"
    r"id[_-]?token|auth[_-]?token|private[_-]?key|credentials?"
)
_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # PEM / OpenSSH / PGP private keys, whole block (or to the end when truncated).
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?"
                r"(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)", re.S), "[REDACTED PRIVATE KEY]"),
    # Service Bus / Event Hubs SAS token: "SharedAccessSignature sr=...&sig=...&se=...&skn=...".
    (re.compile(r"(?i)\bSharedAccessSignature\s+[^\s;\"',]+"), "SharedAccessSignature " + REDACTED),
    # key=value, key: value, "key": "value" (connection strings, query strings, JSON, CLI flags, headers).
    (re.compile(r"(?i)(?P<key>(?<![a-z0-9])(?:" + _KEY_NAMES + r")(?![a-z0-9])[\"']?\s*[=:]\s*)"
                r"(?:(?P<q>[\"'])(?:(?!(?P=q)).)*(?P=q)|[^\s\"',;&)}\]]+)"),
     lambda m: m.group("key") + (f"{m.group('q')}{REDACTED}{m.group('q')}" if m.group("q") else REDACTED)),
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9\-._~+/]{8,}=*"), r"\1 " + REDACTED),
    # JWTs anywhere (Graph and Entra tokens).
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Credentials in URLs: scheme://user:password@host.
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)
_SENSITIVE_KEY = re.compile(
    r"(?i)(passw|passphrase|pwd|secret|token|authorization|credential|private[_.-]?key|api[_.-]?key|apikey|"
    r"access[_.-]?key|account[_.-]?key|access[_.-]?signature|connection[_.-]?string|sas(?![a-z])|cookie)"
)
_EXEMPT_FROM_TRUNCATION = frozenset({"exception.stacktrace", "exception.message"})


def register_secret(value: _S) -> _S:
    """Never let this value reach a span, a metric or a log; returns it (`return register_secret(value)`).

    Secrets adapters call it for every value they hand out. Multi-line values (keys) also register each long
    line, so a partial key is caught too. Values shorter than MIN_SECRET_LENGTH are not registered.
    """
    global _secret_re
    if not value:
        return value
    text = value.decode("utf-8", "ignore") if isinstance(value, bytes) else str(value)
    candidates = {text, text.strip(), quote(text.strip(), safe="")}
    if "\n" in text:
        candidates.update(line.strip() for line in text.splitlines()
                          if len(line.strip()) >= 16 and not line.strip().startswith("-----"))
    if ";" in text and "=" in text:  # a connection string: its key/password parts are secrets on their own
        for part in text.split(";"):
            name, _, part_value = part.partition("=")
            if part_value and is_sensitive_key(name.strip()):
                candidates.add(part_value.strip())
    new = {c for c in candidates if len(c) >= MIN_SECRET_LENGTH}
    with _secrets_lock:
        if not new <= _secret_values:
            _secret_values.update(new)
            ordered = sorted(_secret_values, key=len, reverse=True)
            _secret_re = re.compile("|".join(re.escape(s) for s in ordered))
    return value


_SETTINGS_SECRET = re.compile(r"(?i)(connection|secret|password|passphrase|token|key)")


def register_settings_secrets(settings: Any) -> None:
    """Register the secret-looking string fields of a Settings object (connection strings, keys, passwords)."""
    fields = getattr(type(settings), "model_fields", None) or {}
    for name in fields:
        value = getattr(settings, name, None)
        if isinstance(value, str) and _SETTINGS_SECRET.search(name) and not name.endswith("_url"):
            register_secret(value)


def redact(text: str) -> str:
    """`text` with registered secrets and well-known secret patterns replaced by `***`."""
    if not isinstance(text, str) or not text:
        return text
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return text


def is_sensitive_key(key: str) -> bool:
    """Attribute/field names whose value is a secret whatever it looks like (password, token, ...)."""
    return bool(_SENSITIVE_KEY.search(key))


def redact_value(key: str, value: Any) -> Any:
    """One attribute value, redacted: whole value for sensitive keys, scrubbed and truncated strings otherwise."""
    if is_sensitive_key(key):
        return REDACTED
    if isinstance(value, str):
        cleaned = redact(value)
        if len(cleaned) > MAX_ATTRIBUTE_CHARS and key not in _EXEMPT_FROM_TRUNCATION:
            cleaned = cleaned[:MAX_ATTRIBUTE_CHARS] + "...[truncated]"
        return cleaned
    if isinstance(value, list | tuple) and any(isinstance(v, str) for v in value):
        return type(value)(redact(v) if isinstance(v, str) else v for v in value)
    return value


def redact_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes safe to export: body keys dropped, secrets redacted, long strings truncated."""
    return {k: redact_value(k, v) for k, v in (attributes or {}).items() if k not in BODY_ATTRIBUTE_KEYS}

