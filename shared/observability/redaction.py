"""Secret scrubbing for spans, metrics, logs and everything stored or published: a registry of secret values plus
well-known secret patterns.

Adapters call `register_secret(value)` for every secret they hand out; `redact()` scrubs registered values and
well-known patterns (private keys, SAS tokens, key=value pairs, bearer tokens, JWTs, URL credentials). The
writers of job events, logs, transfers, ledger errors, breaker records, poll summaries, published events and
activity results run their text through `redact()` / `redact_data()`; an exception whose message holds a
secret becomes a `RedactedError` (`redact_exception`) before it reaches a Durable history.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable, Mapping
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
# What each pattern needs to match at all, checked before running it: `(text, folded)`, folded being the text
# case-folded the way the regexes' (?i) compares. A screen may let through text its pattern does not match,
# never the reverse (tests/unit/test_redaction_boundary.py checks). Most stored strings (names, paths, ids, hashes) have
# none of the fragments in `_TRIGGERS`, one C-level scan: then no pattern runs at all (about 10x cheaper).
_KEY_FRAGMENTS = ("pass", "pwd", "secret", "key", "sig", "token", "credential")
_TRIGGERS = re.compile("|".join(("-----begin", "sharedaccesssignature", "bearer", "basic", "eyj", "://",
                                 *_KEY_FRAGMENTS)))
_SCREENS: tuple[Callable[[str, str], bool], ...] = (
    lambda text, folded: "-----BEGIN" in text,
    lambda text, folded: "sharedaccesssignature" in folded,
    lambda text, folded: ("=" in text or ":" in text) and any(k in folded for k in _KEY_FRAGMENTS),
    lambda text, folded: "bearer" in folded or "basic" in folded,
    lambda text, folded: "eyJ" in text,
    lambda text, folded: "://" in text and "@" in text,
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
    folded = _fold(text)
    if _TRIGGERS.search(folded) is None:
        return text
    for (regex, replacement), screen in zip(_PATTERNS, _SCREENS, strict=True):
        if screen(text, folded):
            cleaned = regex.sub(replacement, text)
            if cleaned != text:
                text, folded = cleaned, _fold(cleaned)
    return text


def _fold(text: str) -> str:
    """`text` lowercased so that every character a (?i) regex matches to an ASCII letter becomes that letter."""
    if text.isascii():
        return text.lower()
    # casefold() maps K (Kelvin) to k and long s to s; re's (?i) also matches dotless i and I-dot to i.
    return text.casefold().replace("\u0131", "i").replace("i\u0307", "i")


def redact_data(value: Any) -> Any:
    """A JSON-like value (mappings, lists, strings, numbers) as it may be stored or published: every string in
    it scrubbed by `redact`, and the string value of a sensitive key (password, token, ...) replaced whole.
    Containers are copied (mappings become dicts); other values are returned as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(v, str) and v and isinstance(k, str) and _sensitive_key(k)
                else redact_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_data(v) for v in value)
    return value


# Field names is_sensitive_key() matches contain one of these or of _KEY_FRAGMENTS.
_SENSITIVE_KEY_FRAGMENTS = ("authorization", "connection", "sas", "cookie")


def redacted_json(value: Any, *, sort_keys: bool = False) -> str:
    """`json.dumps(value)` (anything else as its redacted string) with the strings in it scrubbed as
    `redact_data` does. The dump is scanned once; the value is walked and dumped again only when the scan
    finds something that may need scrubbing, so a clean event costs one dump and one scan."""
    text = json.dumps(value, default=_redacted_str, sort_keys=sort_keys)
    if "\\" in text or _may_change(text):  # an escape: the dump no longer shows the strings as they are
        text = json.dumps(redact_data(value), default=_redacted_str, sort_keys=sort_keys)
    return text


def _redacted_str(value: Any) -> str:
    return redact(str(value))


def _may_change(text: str) -> bool:
    """False when neither `redact` nor a sensitive field name could change anything in `text` (ASCII)."""
    pattern = _secret_re
    if pattern is not None and pattern.search(text):
        return True
    folded = text.lower()
    if any(k in folded for k in _SENSITIVE_KEY_FRAGMENTS):
        return True
    return _TRIGGERS.search(folded) is not None and any(screen(text, folded) for screen in _SCREENS)


class RedactedError(Exception):
    """Raised in place of an exception whose message (or a cause's) held a secret: `Type: message` of the
    exception and its causes, redacted. Nothing downstream (a Durable history, a job event) sees the original."""


_MAX_CAUSES = 3


def redact_exception(exc: BaseException) -> BaseException:
    """`exc` itself when neither its message nor its causes' hold anything to redact (the common case: types
    and tracebacks are kept); else a RedactedError that says what the exception and its causes were."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) <= _MAX_CAUSES:
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    texts = [str(e) for e in chain]
    cleaned = [redact(t) for t in texts]
    if cleaned == texts:
        return exc
    parts = [f"{type(e).__name__}: {t}" if t else type(e).__name__ for e, t in zip(chain, cleaned, strict=True)]
    return RedactedError("; caused by ".join(parts))


def is_sensitive_key(key: str) -> bool:
    """Attribute/field names whose value is a secret whatever it looks like (password, token, ...)."""
    return bool(_SENSITIVE_KEY.search(key))


@functools.lru_cache(maxsize=4096)
def _sensitive_key(key: str) -> bool:
    """is_sensitive_key, cached: stored data reuses a few field names over and over."""
    return is_sensitive_key(key)


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

