"""Malformed catalogues: every broken file is a CatalogError naming the line, never another exception."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from shared.catalog import CatalogError, Problem, load_catalog, parse_catalog

FINGERPRINT = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"

# Line 10 is the free line inside the sftp block; line 14 inside the first processing rule.
BASE = f"""partners:
  - id: acme
    name: ACME
    sftp:
      host: sftp.example
      username: wharf
      auth: {{{{private_key_secret: acme-key}}}}
      host_keys: ["{FINGERPRINT}"]
      remote_dirs: [/out]
      {{sftp}}
    processing:
      rules:
        - match: "*.csv"
          {{rule}}
    routes: [{{{{name: all, destinations: [{{{{kind: blob}}}}]}}}}]
"""


def with_sftp(line: str) -> str:
    return BASE.format(sftp=line, rule="type: auto")


def with_rule(line: str) -> str:
    return BASE.format(sftp="recursive: false", rule=line)


def laughs(levels: int) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "\n".join(lines) + f"\npartners: [*l{levels - 1}]\n"


# (id, document, line of the first problem, a fragment of its message)
CASES: list[tuple[str, str, int, str]] = [
    # keys that YAML reads as something other than text, at every level
    ("top-null-key", "~: 1\npartners: []\n", 1, 'YAML reads this key as null; quote it ("~")'),
    ("top-float-key", "partners: []\n1.5: 1\n", 2, 'YAML reads this key as a number; quote it ("1.5")'),
    ("top-date-key", "2024-01-01: x\npartners: []\n", 1, "YAML reads this key as a date"),
    ("top-bool-key", "partners: []\ntrue: 1\n", 2, "YAML reads this key as true/false"),
    ("top-int-key", "partners: []\n3: 1\n", 2, "YAML reads this key as a number"),
    ("empty-key", "partners: []\n?\n: 1\n", 2, "YAML reads this key as null"),
    ("defaults-null-key", "defaults:\n  ~: 1\npartners: []\n", 2, "key as null"),
    ("defaults-sftp-float-key", "defaults:\n  sftp:\n    1.5: 1\npartners: []\n", 3, "key as a number"),
    ("defaults-sftp-date-key", "defaults:\n  sftp:\n    2024-01-01: 1\npartners: []\n", 3, "key as a date"),
    ("partner-null-key", "partners:\n  - id: acme\n    name: A\n    ~: 1\n", 4, "key as null"),
    ("partner-bool-key", "partners:\n  - id: acme\n    name: A\n    yes: 1\n", 4, "key as true/false"),
    ("sftp-float-key", with_sftp("1.5: 1"), 10, "key as a number"),
    ("rule-date-key", with_rule("2024-12-01: 1"), 14, "key as a date"),
    ("column-int-key", with_rule("csv: {columns: {1: {type: integer}}}"), 14, "key as a number"),
    ("option-int-key", with_rule("transform: {name: passthrough, options: {7: x}}"), 14, "key as a number"),
    ("algorithm-int-key", with_sftp("disabled_algorithms: {1: [aes128-ctr]}"), 10, "key as a number"),
    ("schema-null-key", with_rule("json_schema: {~: 1}"), 14, "key as null"),
    ("complex-key", "partners: []\n? [a, b]\n: 1\n", 2, "key"),
    # wrong types
    ("partners-scalar", "partners: 5\n", 1, "must be a list of partners"),
    ("partner-scalar", "partners:\n  - 5\n", 2, "must be a mapping with id, name"),
    ("defaults-list", "defaults: [1]\npartners: []\n", 1, "must be a mapping with sftp"),
    ("port-text", with_sftp("port: twenty"), 10, "must be a whole number"),
    ("port-bool", with_sftp("port: true"), 10, "must be a number, not true or false"),
    ("timeout-bool", with_sftp("connect_timeout_seconds: yes"), 10, "must be a number, not true or false"),
    ("dirs-text", BASE.format(sftp="recursive: false", rule="type: auto").replace("[/out]", "/out"), 9,
     "must be a list"),
    ("recursive-list", with_sftp("recursive: [true]"), 10, "must be true or false"),
    # numbers out of range
    ("timeout-inf", with_sftp("connect_timeout_seconds: .inf"), 10, "must be more than 0 and at most 300"),
    ("timeout-minus-inf", with_sftp("connect_timeout_seconds: -.inf"), 10, "must be more than 0 and at most 300"),
    ("timeout-nan", with_sftp("connect_timeout_seconds: .nan"), 10, "must be more than 0 and at most 300"),
    ("timeout-negative", with_sftp("connect_timeout_seconds: -1"), 10, "must be more than 0 and at most 300"),
    ("timeout-zero", with_sftp("connect_timeout_seconds: 0"), 10, "must be more than 0 and at most 300"),
    ("timeout-huge", with_sftp("connect_timeout_seconds: 1e300"), 10, "must be more than 0 and at most 300"),
    ("timeout-overflow", with_sftp("connect_timeout_seconds: 1e400"), 10, "at most 300"),
    ("timeout-huge-int", with_sftp(f"connect_timeout_seconds: {10 ** 40}"), 10, "at most 300"),
    ("timeout-nan-text", with_sftp("connect_timeout_seconds: 'NaN'"), 10, "at most 300"),
    ("op-timeout-inf", with_sftp("operation_timeout_seconds: .inf"), 10, "must be more than 0 and at most 3600"),
    ("min-age-huge", with_sftp(f"min_age_seconds: {10 ** 30}"), 10, "must be between 0 and 604800"),
    ("min-age-negative", with_sftp("min_age_seconds: -5"), 10, "must be between 0 and 604800"),
    ("min-age-inf", with_sftp("min_age_seconds: .inf"), 10, "must be"),
    ("max-files-inf", with_sftp("max_files_per_poll: .inf"), 10, "must be"),
    ("port-huge", with_sftp(f"port: {10 ** 30}"), 10, "must be between 1 and 65535"),
    ("port-thousands-of-digits", with_sftp("port: " + "9" * 5000), 10, "a number of 5000 digits is too long"),
    ("file-size-huge", with_sftp("max_file_size_bytes: " + "9" * 400), 10, "must be at most 1 TiB"),
    ("file-size-huge-text", with_sftp(f"max_file_size_bytes: '{'9' * 400} B'"), 10, "must be at most 1 TiB"),
    ("file-size-inf", with_sftp("max_file_size_bytes: .inf"), 10, "must be"),
    ("file-size-zero", with_sftp("max_file_size_bytes: 0"), 10, "must be at least 1 byte"),
    ("file-size-units", with_sftp("max_file_size_bytes: 2 TiB"), 10, "must be at most 1 TiB"),
    ("rule-max-bytes", with_rule("max_bytes: 5000 GiB"), 14, "must be at most 1 TiB"),
    ("rule-min-bytes", with_rule("min_bytes: -1"), 14, "must be"),
    ("rule-max-errors-inf", with_rule("max_errors: .inf"), 14, "must be"),
    ("max-length-huge", with_rule("csv: {columns: {a: {max_length: 100000000000}}}"), 14,
     "must be between 1 and 1000000"),
    ("attachment-size", "partners:\n  - id: acme\n    name: A\n    mailbox:\n      mailbox: a@b.example\n"
     "      sender_allow: ['*@b.example']\n      max_attachment_bytes: 2 GiB\n"
     "      auth: {tenant_id: contoso.onmicrosoft.com, client_id: 00000000-0000-0000-0000-000000000002, "
     "client_secret_secret: s}\n", 7, "must be at most 1 GiB"),
    # structure
    ("deep-list", "partners: " + "[" * 5000 + "]" * 5000 + "\n", 1, "nested deeper than 64 levels"),
    ("deep-block", "partners:\n" + "".join("  " * i + "- \n" for i in range(1, 200)), 65,
     "nested deeper than 64 levels"),
    ("deep-map", with_rule("json_schema: " + "{a: " * 3000 + "1" + "}" * 3000), 14, "nested deeper than 64"),
    ("billion-laughs", laughs(9), 6, "expands to more than 200000 values"),  # l5: 9**6 values
    ("recursive-alias", "partners: &p [*p]\n", 1, "refers to a value that contains it"),
    ("recursive-map-alias", "x: &x {a: {b: *x}}\npartners: []\n", 1, "refers to a value that contains it"),
    ("undefined-alias", "partners: [*nope]\n", 1, "found undefined alias"),
    ("python-tag", "partners: !!python/object/apply:os.system [echo]\n", 1, "could not determine a constructor"),
    ("unhashable-key", "partners: []\n{a: 1}: 2\n", 2, "unhashable"),
    ("list-top", "- id: acme\n- id: b\n", 1, "the top level must be a mapping with a partners: list"),
    ("scalar-top", "hello\n", 1, "the top level must be a mapping with a partners: list"),
    ("nul-character", "partners: []\nx: a\x00b\n", 2, "character"),
    ("bad-date-value", with_sftp("schedule: 2024-13-45"), 10, "cannot read this value"),
    ("bad-date-key", "partners: []\n2024-02-30: 1\n", 2, "cannot read this value"),
    ("tab-indent", "partners:\n\t- id: a\n", 2, "invalid YAML at line 2"),
]


def line_of(detail: Problem) -> int | None:
    """The line a problem names: its own, or the one in a YAML syntax error's text."""
    if detail.line is not None:
        return detail.line
    found = re.search(r"\bat line (\d+)", detail.message)
    return int(found.group(1)) if found else None


def problem_of(document: str) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(document, source="partners.yaml", env={})
    return caught.value


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("document", "line", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_malformed_catalogue_is_a_catalog_error_with_its_line(document: str, line: int, fragment: str) -> None:
    error = problem_of(document)
    assert all(line_of(detail) is not None for detail in error.details), error.details
    first = error.details[0]
    assert (line_of(first), fragment in first.message) == (line, True), error.details


def test_a_non_text_key_names_the_block_it_is_in() -> None:
    error = problem_of(with_sftp("1.5: 1"))
    assert error.problems == ['partners[acme].sftp["1.5"]: is not text: YAML reads this key as a number; '
                              'quote it ("1.5")']
    both = problem_of("defaults:\n  ~: 1\npartners:\n  - id: acme\n    name: A\n    2024-01-01: x\n")
    assert [(d.path, d.line) for d in both.details] == [('defaults["~"]', 2), ('partners[acme]["2024-01-01"]', 6)]


def test_quoted_keys_and_merge_keys_are_fine() -> None:
    loaded = parse_catalog('partners:\n  - &p {"id": acme, name: ACME}\n  - <<: *p\n    id: acme2\n'
                           '    processing: {rules: [{csv: {columns: {"1": {type: integer}}}}]}\n', env={})
    assert [p.id for p in loaded.partners] == ["acme", "acme2"]


def test_bounds_accept_the_values_at_their_edges() -> None:
    catalog = parse_catalog(with_sftp("connect_timeout_seconds: 300\n      operation_timeout_seconds: 0.5\n"
                                      "      min_age_seconds: 604800\n      max_file_size_bytes: 1 TiB"), env={})
    sftp = catalog.partners[0].sftp
    assert sftp is not None
    assert (sftp.connect_timeout_seconds, sftp.operation_timeout_seconds, sftp.min_age_seconds,
            sftp.max_file_size_bytes) == (300, 0.5, 604800, 1024 ** 4)
    assert math.isfinite(sftp.connect_timeout_seconds)


def test_a_mapping_with_non_text_keys_given_in_code_is_a_catalog_error_too() -> None:
    with pytest.raises(CatalogError) as caught:
        document: dict[Any, Any] = {None: 1, 1.5: 2, "partners": [{"id": "acme", "name": "A", True: 1}]}
        parse_catalog(document, env={})
    assert caught.value.problems == [
        "[None]: is not text: keys must be text",
        "[1.5]: is not text: keys must be text",
        "partners[acme][True]: is not text: keys must be text",
    ]


@pytest.mark.parametrize(("data", "fragment", "line"), [
    (b"partners: []\n# caf\xe9\n", "is not UTF-8 text (bad byte 0xe9 at line 2, column 6)", 2),
    (b"\xff\xfep\x00a\x00", "is not UTF-8 text (bad byte 0xff at line 1, column 1)", 1),
    (b"partners:\n  - id: acme\n    name: \x80\n", "is not UTF-8 text (bad byte 0x80 at line 3, column 11)", 3),
])
def test_bytes_that_are_not_utf8_are_located(tmp_path: Path, data: bytes, fragment: str, line: int) -> None:
    path = tmp_path / "partners.yaml"
    path.write_bytes(data)
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.problems == [fragment]
    assert caught.value.details[0].line == line


def test_a_utf8_bom_is_fine_and_an_empty_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "partners.yaml"
    path.write_bytes(b"\xef\xbb\xbfpartners: []\n")
    assert load_catalog(path).partners == []
    path.write_bytes(b"")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.problems == ["the catalogue is empty; it needs a top-level partners: list"]
