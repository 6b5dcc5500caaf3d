"""Remote names are untrusted: safe blob path segments out, the exact original kept (encoded) for metadata."""

from __future__ import annotations

import hashlib
import unicodedata
from urllib.parse import quote, unquote_to_bytes

#: A blob name may be 1024 characters; each path segment we write is kept to a file-system-sized 255 bytes.
MAX_SEGMENT_BYTES = 255
#: Characters that are legal in blob names but break URLs, Windows tools or downstream SFTP routes.
_RESERVED = frozenset('/\\:*?"<>|#%')
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
#: ASCII kept literally by `encode_original` (everything else, '%' included, is percent-encoded).
_ENCODE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '%"\\')
FALLBACK_NAME = "unnamed"


def remote_bytes(name: str | bytes) -> bytes:
    """The exact bytes of a remote name: undecodable bytes travel as surrogate escapes (like os.fsdecode)."""
    if isinstance(name, bytes):
        return name
    return name.encode("utf-8", "surrogateescape")


def remote_text(raw: bytes) -> str:
    """Bytes from the server to the str Wharf passes around; never fails on non-UTF-8 names."""
    return raw.decode("utf-8", "surrogateescape")


def encode_original(name: str | bytes) -> str:
    """Reversible ASCII form of a remote name or path (percent-encoding of its bytes): fits blob metadata."""
    return quote(remote_bytes(name), safe=_ENCODE_SAFE)


def decode_original(encoded: str) -> str:
    """Inverse of `encode_original` (as a str with surrogate escapes for non-UTF-8 bytes)."""
    return remote_text(unquote_to_bytes(encoded))


def display_name(name: str | bytes) -> str:
    """Printable form for log lines and job events: unsafe characters and undecodable bytes as escapes."""
    text = remote_text(name) if isinstance(name, bytes) else name
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, carried as a surrogate escape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif unicodedata.category(ch) in _UNSAFE_CATEGORIES or ch == "\\":
            out.append(ch.encode("unicode_escape").decode("ascii") if ch != "\\" else "\\\\")
        else:
            out.append(ch)
    return "".join(out)


def _clean_char(ch: str) -> str:
    if ch in _RESERVED or unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        return "_"
    if unicodedata.category(ch) == "Zs":  # no-break and other exotic spaces
        return " "
    return ch


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def sanitize_name(name: str | bytes, *, max_bytes: int = MAX_SEGMENT_BYTES) -> str:
    """One safe blob path segment for an untrusted remote file name.

    Path separators, reserved and control characters and undecodable bytes become `_`; the result is
    NFC-normalised, never `.`/`..`/empty and never ends in a dot or space; a name longer than `max_bytes`
    UTF-8 bytes is cut, keeping its extension, with `~` and a hash of the original appended so that two
    long names that share a prefix stay distinguishable. Not injective: keep the original in metadata.
    """
    raw = remote_bytes(name)
    text = unicodedata.normalize("NFC", remote_text(raw))
    cleaned = "".join(_clean_char(ch) for ch in text).strip(" ").rstrip(". ")
    if not cleaned:  # "", ".", ".." and names made only of dots and spaces
        cleaned = FALLBACK_NAME
    if len(cleaned.encode("utf-8")) <= max_bytes:
        return cleaned
    digest = "~" + hashlib.sha256(raw).hexdigest()[:12]
    stem, dot, ext = cleaned.rpartition(".")
    suffix = f".{ext}" if dot and stem and 0 < len(ext.encode("utf-8")) <= 16 else ""
    if not suffix:
        stem = cleaned
    room = max_bytes - len(digest.encode()) - len(suffix.encode("utf-8"))
    return _truncate_utf8(stem, room).rstrip(". ") + digest + suffix
