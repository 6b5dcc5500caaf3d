"""Remote names are untrusted: every name becomes one safe blob path segment; the original survives."""

from __future__ import annotations

import pytest

from shared.domain.sanitize import (
    FALLBACK_NAME,
    MAX_SEGMENT_BYTES,
    decode_original,
    display_name,
    encode_original,
    remote_bytes,
    remote_text,
    sanitize_name,
)

NON_UTF8 = remote_text(b"caf\xe9-\xff\xfe.csv")  # Latin-1 bytes from an old server, as paramiko-free bytes


@pytest.mark.parametrize(("name", "expected"), [
    ("invoice.csv", "invoice.csv"),
    ("Rechnung März 2025.csv", "Rechnung März 2025.csv"),
    ("a/b.csv", "a_b.csv"),
    ("..", FALLBACK_NAME),
    (".", FALLBACK_NAME),
    ("...", FALLBACK_NAME),
    ("", FALLBACK_NAME),
    ("../../etc/passwd", ".._.._etc_passwd"),
    ("..\\..\\boot.ini", ".._.._boot.ini"),
    ("bell\x07tab\tnewline\n.csv", "bell_tab_newline_.csv"),
    ("evil\u202ecod.exe", "evil_cod.exe"),  # right-to-left override: a spoofing trick
    ("trailing dots...", "trailing dots"),
    ("  spaced  ", "spaced"),
    ("no\u00a0break", "no break"),
    ("what?.csv", "what_.csv"),
    ("hash#tag%20.csv", "hash_tag_20.csv"),
    ("zero\x00byte", "zero_byte"),
])
def test_names_become_safe_segments(name: str, expected: str) -> None:
    assert sanitize_name(name) == expected


def test_decomposed_unicode_is_normalised() -> None:
    assert sanitize_name("Cafe\u0301.csv") == "Caf\u00e9.csv"


@pytest.mark.parametrize("name", [NON_UTF8, remote_bytes(NON_UTF8)])
def test_non_utf8_bytes_become_underscores(name: str | bytes) -> None:
    assert sanitize_name(name) == "caf_-__.csv"


def test_long_names_are_cut_to_255_bytes_keeping_the_extension_and_a_hash() -> None:
    long_a = "ä" * 300 + ".csv"
    long_b = "ä" * 299 + "b.csv"
    out_a, out_b = sanitize_name(long_a), sanitize_name(long_b)
    assert len(out_a.encode()) <= MAX_SEGMENT_BYTES and len(out_b.encode()) <= MAX_SEGMENT_BYTES
    assert out_a.endswith(".csv") and "~" in out_a
    assert out_a != out_b  # same prefix, different originals: still told apart
    assert sanitize_name(long_a) == out_a  # deterministic
    assert sanitize_name("x" * 5000).startswith("x") and len(sanitize_name("x" * 5000)) <= MAX_SEGMENT_BYTES


def test_a_long_extension_is_not_kept_as_one() -> None:
    out = sanitize_name("a" * 250 + "." + "e" * 40)
    assert len(out.encode()) <= MAX_SEGMENT_BYTES and not out.endswith("e" * 40)


@pytest.mark.parametrize("name", ["plain.csv", "März.csv", "a b%c\"d\\e.csv", NON_UTF8, "\x07\n", "ä" * 300])
def test_original_round_trips_through_ascii_metadata(name: str) -> None:
    encoded = encode_original(name)
    assert encoded.isascii() and " " not in encoded
    assert decode_original(encoded) == name
    assert remote_bytes(decode_original(encoded)) == remote_bytes(name)


def test_readable_names_stay_readable_in_metadata() -> None:
    assert encode_original("invoice_2025-01.csv") == "invoice_2025-01.csv"


def test_display_name_escapes_what_a_terminal_or_log_should_not_see() -> None:
    assert display_name(NON_UTF8) == "caf\\xe9-\\xff\\xfe.csv"
    assert display_name("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert display_name("März.csv") == "März.csv"
