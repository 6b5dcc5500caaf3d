"""Partner catalogue: models, loader, and the exact messages a broken catalogue produces."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.catalog import (
    Catalog,
    CatalogError,
    Partner,
    PartnerNotFoundError,
    SftpDestination,
    format_problems,
    glob_match,
    load_catalog,
    next_run,
    parse_catalog,
    parse_host_key,
)
from shared.domain.errors import ConfigurationError, NotFoundError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "catalogs"


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _key_b64(key_type: str = "ssh-ed25519", body: bytes = b"\x07" * 32) -> str:
    return base64.b64encode(_ssh_string(key_type.encode()) + _ssh_string(body)).decode()


ED25519 = _key_b64()
FINGERPRINT = "SHA256:" + base64.b64encode(
    hashlib.sha256(base64.b64decode(ED25519)).digest()
).decode().rstrip("=")
ACME_KEY = f"sftp.acme.example ssh-ed25519 {ED25519}"
DEMO_ENV = {
    "WHARF_DEMO_SFTP_USER": "alice",
    "WHARF_DEMO_SFTP_HOST_KEY": f"[127.0.0.1]:2222 ssh-ed25519 {ED25519} alice@laptop",
    "WHARF_DEMO_SFTP_ROOT": "/home/alice/wharf/.local/sftp/demo",
}


def catalogue() -> dict[str, Any]:
    """A small valid catalogue; each test breaks one thing in a fresh copy."""
    return copy.deepcopy({
        "partners": [
            {
                "id": "acme",
                "name": "ACME",
                "sftp": {
                    "host": "sftp.acme.example",
                    "username": "wharf",
                    "auth": {"private_key_secret": "acme-sftp-key"},
                    "host_keys": [ACME_KEY],
                    "remote_dirs": ["/outbound"],
                    "outbound_dir": "/inbound",
                },
                "processing": {"rules": [{"match": "*.csv", "type": "csv", "csv": {"columns": {"id": {}}}}]},
                "routes": [{"name": "all", "destinations": [{"kind": "blob"}]}],
            },
            {
                "id": "globex",
                "name": "Globex",
                "mailbox": {
                    "mailbox": "integrations@contoso.com",
                    "sender_allow": ["*@globex.example"],
                    "auth": {
                        "tenant_id": "contoso.onmicrosoft.com",
                        "client_id": "00000000-0000-0000-0000-000000000002",
                        "client_secret_secret": "graph-client-secret",
                    },
                },
                "routes": [{"name": "to-acme", "destinations": [{"kind": "sftp", "partner": "acme"}]}],
            },
        ]
    })


def problems_of(document: str | dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(document, source="partners.yaml", env=env or {})
    return caught.value.problems


def acme(doc: dict[str, Any]) -> dict[str, Any]:
    partner: dict[str, Any] = doc["partners"][0]
    return partner


def globex(doc: dict[str, Any]) -> dict[str, Any]:
    partner: dict[str, Any] = doc["partners"][1]
    return partner


# --- the example catalogue ------------------------------------------------------------------------------


def test_example_catalogue_loads_with_the_dev_stack_environment() -> None:
    catalog = load_catalog(ROOT / "partners.yaml", env=DEMO_ENV)

    demo = catalog.get("demo")
    assert demo.sftp is not None
    assert (demo.sftp.host, demo.sftp.port, demo.sftp.username) == ("127.0.0.1", 2222, "alice")
    assert demo.sftp.remote_dirs == ["/home/alice/wharf/.local/sftp/demo/outbound"]
    assert demo.sftp.outbound_dir == "/home/alice/wharf/.local/sftp/demo/inbound"
    assert demo.sftp.pinned_fingerprints() == {FINGERPRINT}
    assert demo.sftp.connect_timeout_seconds == 15  # from defaults
    assert demo.processing is not None
    [rule] = demo.processing.rules
    assert rule.match == "*.csv" and rule.type == "csv" and rule.max_bytes == 100 * 1024 * 1024
    assert rule.csv is not None and rule.transform.name == "csv_to_jsonl"
    assert list(rule.csv.columns) == ["invoice_id", "customer", "amount", "currency", "issued_on"]
    assert rule.csv.columns["currency"].values == ["EUR", "USD", "GBP"]
    assert rule.csv.columns["issued_on"].date_format == "%Y-%m-%d"
    [route] = demo.routes
    assert route.match.file_glob == "*.csv"
    assert [d.model_dump() for d in route.destinations] == [
        {"kind": "blob", "container": "processed", "path": "{partner}/{yyyy}/{MM}/{dd}/{job_id}/{stem}.jsonl",
         "on_exists": "fail", "pgp": None},
        {"kind": "event", "type": "file.processed"},
    ]
    assert catalog.secret_names() == ["demo-sftp-key"]
    assert catalog.source.endswith("partners.yaml")


def test_example_catalogue_user_defaults_to_root() -> None:
    env = {k: v for k, v in DEMO_ENV.items() if k != "WHARF_DEMO_SFTP_USER"}
    sftp = parse_catalog((ROOT / "partners.yaml").read_text(), env=env).get("demo").sftp
    assert sftp is not None and sftp.username == "root"


def test_example_catalogue_names_each_missing_variable_and_field() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(ROOT / "partners.yaml", env={})
    assert caught.value.problems == [
        "partners[demo].sftp.host_keys[0]: environment variable WHARF_DEMO_SFTP_HOST_KEY is not set and has no default",
        "partners[demo].sftp.remote_dirs[0]: environment variable WHARF_DEMO_SFTP_ROOT is not set and has no default",
        "partners[demo].sftp.outbound_dir: environment variable WHARF_DEMO_SFTP_ROOT is not set and has no default",
    ]
    lines = (ROOT / "partners.yaml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "${WHARF_DEMO_SFTP_HOST_KEY}" in text)
    assert str(caught.value).splitlines()[0] == (
        f"{ROOT / 'partners.yaml'}:{line}: partners[demo].sftp.host_keys[0]: "
        "environment variable WHARF_DEMO_SFTP_HOST_KEY is not set and has no default"
    )


def test_commented_acme_example_is_valid_when_uncommented() -> None:
    text = (ROOT / "partners.yaml").read_text()
    block = text.split("# --- example: acme ---\n")[1].split("# --- end example ---")[0]
    uncommented = "\n".join(re.sub(r"^  # ?", "  ", line) for line in block.splitlines())
    catalog = parse_catalog(text + "\n" + uncommented + "\n", env=DEMO_ENV)

    acme_partner = catalog.get("acme")
    assert acme_partner.mailbox is not None
    assert acme_partner.mailbox.sender_allow == ["billing@acme.example", "*@edi.acme.example"]
    assert acme_partner.mailbox.max_attachment_bytes == 25 * 1024 * 1024
    assert [p.id for p in catalog.mailbox_partners()] == ["acme"]
    assert [r.default for r in acme_partner.routes] == [False, True]
    assert catalog.secret_names() == ["demo-sftp-key", "wharf-graph-certificate"]


# --- one broken thing, one exact message -----------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], Any]

CASES: list[tuple[str, Mutation, list[str]]] = [
    (
        "port out of range",
        lambda d: acme(d)["sftp"].update(port=70000),
        ["partners[acme].sftp.port: must be between 1 and 65535"],
    ),
    (
        "port not a number",
        lambda d: acme(d)["sftp"].update(port="twenty-two"),
        ["partners[acme].sftp.port: must be a whole number"],
    ),
    (
        "missing host key",
        lambda d: acme(d)["sftp"].pop("host_keys"),
        [
            "partners[acme].sftp.host_keys: is required: pin the server's host key as a known_hosts line or a "
            "SHA256 fingerprint (ssh-keyscan -p PORT HOST prints the line)"
        ],
    ),
    (
        "empty host keys",
        lambda d: acme(d)["sftp"].update(host_keys=[]),
        ["partners[acme].sftp.host_keys: must list at least one pinned host key"],
    ),
    (
        "bad fingerprint",
        lambda d: acme(d)["sftp"].update(host_keys=["SHA256:not-base64!"]),
        ["partners[acme].sftp.host_keys[0]: is not a valid SHA256 fingerprint: "
         "expected SHA256: and 43 base64 characters"],
    ),
    (
        "md5 fingerprint",
        lambda d: acme(d)["sftp"].update(host_keys=["16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48"]),
        ["partners[acme].sftp.host_keys[0]: MD5 fingerprints are not accepted; give the SHA256 fingerprint "
         "(ssh-keygen -l -E sha256) or a known_hosts line"],
    ),
    (
        "accept any host key",
        lambda d: acme(d)["sftp"].update(host_keys=["*"]),
        ["partners[acme].sftp.host_keys[0]: host keys must be pinned; there is no option to accept any key. "
         "Give the server's known_hosts line (ssh-keyscan -p PORT HOST) or its SHA256 fingerprint"],
    ),
    (
        "public key without host",
        lambda d: acme(d)["sftp"].update(host_keys=[f"ssh-ed25519 {ED25519} me@laptop"]),
        ["partners[acme].sftp.host_keys[0]: is a public key without a host; write it as a known_hosts line "
         "('[host]:port ssh-ed25519 AAAA...') or give its SHA256 fingerprint"],
    ),
    (
        "truncated key",
        lambda d: acme(d)["sftp"].update(host_keys=[f"sftp.acme.example ssh-ed25519 {ED25519[:20]}"]),
        ["partners[acme].sftp.host_keys[0]: has key data that is not a ssh-ed25519 key "
         "(was it cut short when copied?)"],
    ),
    (
        "key type mismatch",
        lambda d: acme(d)["sftp"].update(host_keys=[f"sftp.acme.example ssh-rsa {ED25519}"]),
        ["partners[acme].sftp.host_keys[0]: has key data that is not a ssh-rsa key (was it cut short when copied?)"],
    ),
    (
        "key pinned for another port",
        lambda d: acme(d)["sftp"].update(port=2222),
        ["partners[acme].sftp.host_keys[0]: is a known_hosts line for another host; this partner connects to "
         "[sftp.acme.example]:2222 (known_hosts writes a port other than 22 as [host]:port)"],
    ),
    (
        "inline password",
        lambda d: acme(d)["sftp"]["auth"].update(password="hunter2"),
        ["partners[acme].sftp.auth.password: inline secrets are not allowed; put the value in Key Vault and use "
         "password_secret: <secret name> instead"],
    ),
    (
        "inline private key",
        lambda d: acme(d)["sftp"]["auth"].update(private_key_secret="-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg=="),
        ["partners[acme].sftp.auth.private_key_secret: looks like an inline key or certificate (it starts with "
         "-----BEGIN); store it in Key Vault and give the secret name instead"],
    ),
    (
        "pem pasted into a field that is not a secret",
        lambda d: acme(d)["sftp"].update(host_keys=["-----BEGIN PUBLIC KEY-----"]),
        ["partners[acme].sftp.host_keys[0]: looks like an inline key or certificate (it starts with "
         "-----BEGIN); store it in Key Vault and give the secret name instead"],
    ),
    (
        "secret name invalid",
        lambda d: acme(d)["sftp"]["auth"].update(private_key_secret="acme_sftp_key"),
        ["partners[acme].sftp.auth.private_key_secret: must be a Key Vault secret name "
         "(1-127 letters, digits and dashes), not the secret itself"],
    ),
    (
        "secret name too long",
        lambda d: acme(d)["sftp"]["auth"].update(private_key_secret="k" * 128),
        ["partners[acme].sftp.auth.private_key_secret: must be a Key Vault secret name "
         "(1-127 letters, digits and dashes), not the secret itself"],
    ),
    (
        "no sftp credentials",
        lambda d: acme(d)["sftp"].update(auth={"passphrase_secret": "acme-pass"}),
        ["partners[acme].sftp.auth: needs private_key_secret or password_secret (a Key Vault secret name)"],
    ),
    (
        "move without move_to",
        lambda d: acme(d)["sftp"].update(post_action="move"),
        ["partners[acme].sftp.move_to: is required when post_action is move"],
    ),
    (
        "move_to without move",
        lambda d: acme(d)["sftp"].update(move_to="/archive"),
        ["partners[acme].sftp.move_to: is only used when post_action is move (it is leave)"],
    ),
    (
        "move_to inside a polled folder",
        lambda d: acme(d)["sftp"].update(post_action="move", move_to="/outbound/done", recursive=True),
        ["partners[acme].sftp.move_to: is inside a polled folder, so moved files would be picked up again"],
    ),
    (
        "unknown post action",
        lambda d: acme(d)["sftp"].update(post_action="archive"),
        ["partners[acme].sftp.post_action: must be one of 'delete', 'move', 'rename' or 'leave'"],
    ),
    (
        "relative remote dir",
        lambda d: acme(d)["sftp"].update(remote_dirs=["/outbound", "outbound"]),
        ["partners[acme].sftp.remote_dirs[1]: must be an absolute path (starting with /)"],
    ),
    (
        "glob with a folder",
        lambda d: acme(d)["sftp"].update(include=["/outbound/*.csv"]),
        ["partners[acme].sftp.include[0]: matches file names only, so it must not contain /"],
    ),
    (
        "bad cron",
        lambda d: acme(d)["sftp"].update(schedule="0 61 * * * *"),
        ["partners[acme].sftp.schedule: is not a valid cron expression"],
    ),
    (
        "cron with seven fields",
        lambda d: acme(d)["sftp"].update(schedule="0 0 * * * * 2030"),
        ["partners[acme].sftp.schedule: must be a cron expression with 6 fields (second minute hour day month "
         "weekday, as Azure Functions timers use) or 5 fields (standard cron)"],
    ),
    (
        "cron firing every ten seconds",
        lambda d: acme(d)["sftp"].update(schedule="*/10 * * * * *"),
        ["partners[acme].sftp.schedule: the seconds field must be a single number such as 0: "
         "schedules are checked once a minute"],
    ),
    (
        "cron that never fires",
        lambda d: acme(d)["sftp"].update(schedule="0 0 0 30 2 *"),
        ["partners[acme].sftp.schedule: never fires: no date matches it"],
    ),
    (
        "unknown algorithm group",
        lambda d: acme(d)["sftp"].update(disabled_algorithms={"cipher": ["3des-cbc"]}),
        ["partners[acme].sftp.disabled_algorithms.cipher: unknown algorithm group; "
         "use ciphers, kex, keys, macs, pubkeys"],
    ),
    (
        "bad regex",
        lambda d: globex(d)["mailbox"].update(subject_regex="Invoice ("),
        ["partners[globex].mailbox.subject_regex: is not a valid regular expression: "
         "missing ), unterminated subpattern at position 8"],
    ),
    (
        "mailbox move without move_to",
        lambda d: globex(d)["mailbox"].update(after_action="both"),
        ["partners[globex].mailbox.move_to: is required when after_action is both"],
    ),
    (
        "sender pattern shape",
        lambda d: globex(d)["mailbox"].update(sender_allow=["*@globex.example", "globex.example"]),
        ["partners[globex].mailbox.sender_allow[1]: must be an email address (name@example.com) "
         "or a whole domain (*@example.com)"],
    ),
    (
        "mailbox with two credentials",
        lambda d: globex(d)["mailbox"]["auth"].update(certificate_secret="graph-cert"),
        ["partners[globex].mailbox.auth: give client_secret_secret or certificate_secret, not both"],
    ),
    (
        "inline client secret",
        lambda d: globex(d)["mailbox"]["auth"].update(client_secret="abc~123"),
        ["partners[globex].mailbox.auth.client_secret: inline secrets are not allowed; put the value in Key Vault "
         "and use client_secret_secret: <secret name> instead"],
    ),
    (
        "client id not a guid",
        lambda d: globex(d)["mailbox"]["auth"].update(client_id="wharf-app"),
        ["partners[globex].mailbox.auth.client_id: must be a GUID such as 00000000-0000-0000-0000-000000000000"],
    ),
    (
        "unknown placeholder",
        lambda d: acme(d)["routes"][0]["destinations"][0].update(path="{partner}/{date}/{name}"),
        ["partners[acme].routes[0].destinations[0].path: unknown placeholder {date}; use {partner}, {yyyy}, "
         "{MM}, {dd}, {name}, {job_id}, {stem} or {ext}"],
    ),
    (
        "unknown placeholder in an email subject",
        lambda d: acme(d)["routes"][0]["destinations"].append(
            {"kind": "email", "to": ["ops@contoso.com"], "subject": "{Partner}: {file}",
             "mailbox": "integrations@contoso.com"}
        ),
        ["partners[acme].routes[0].destinations[1].subject: unknown placeholders {Partner}, {file}; use "
         "{partner}, {yyyy}, {MM}, {dd}, {name}, {job_id}, {stem} or {ext}"],
    ),
    (
        "reserved container",
        lambda d: acme(d)["routes"][0]["destinations"][0].update(container="drop"),
        ["partners[acme].routes[0].destinations[0].container: is reserved for Wharf's own use (archive, drop, "
         "inbound, locks, outbound, quarantine); route to processed or a container of your own (outbound/ is where "
         "files are handed over to be sent)"],
    ),
    (
        "unknown destination kind",
        lambda d: acme(d)["routes"][0]["destinations"][0].update(kind="s3"),
        ["partners[acme].routes[0].destinations[0].kind: unknown destination kind 's3'; known kinds: blob, email, "
         "event, sftp (a plugin kind must be installed where Wharf runs)"],
    ),
    (
        "typo inside a destination",
        lambda d: acme(d)["routes"][0]["destinations"][0].update(contianer="processed"),
        ["partners[acme].routes[0].destinations[0].contianer: unknown key; did you mean container?"],
    ),
    (
        "sftp route to unknown partner",
        lambda d: globex(d)["routes"][0]["destinations"][0].update(partner="acne"),
        ["partners[globex].routes[0].destinations[0].partner: no partner 'acne' in the catalogue; "
         "did you mean 'acme'?"],
    ),
    (
        "sftp route to a partner without sftp",
        lambda d: acme(d)["routes"][0]["destinations"].append({"kind": "sftp", "partner": "globex"}),
        ["partners[acme].routes[0].destinations[1].partner: partner 'globex' has no sftp block to deliver to"],
    ),
    (
        "sftp route with nowhere to write",
        lambda d: acme(d)["sftp"].pop("outbound_dir"),
        ["partners[globex].routes[0].destinations[0].folder: is required: partner 'acme' has no sftp.outbound_dir"],
    ),
    (
        "duplicate ids",
        lambda d: globex(d).update(id="acme"),
        ["partners[acme].id: is used by more than one partner (entries 1 and 2); partner ids must be unique"],
    ),
    (
        "invalid id",
        lambda d: globex(d).update(id="Globex Corp"),
        ["partners[Globex Corp].id: must be 2-40 lowercase letters, digits and dashes, starting and ending with "
         "a letter or digit (it is used in blob paths and table keys)"],
    ),
    (
        "unknown key typo",
        lambda d: acme(d)["sftp"].update(usernmae="wharf"),
        ["partners[acme].sftp.usernmae: unknown key; did you mean username?"],
    ),
    (
        "unknown key far from any field",
        lambda d: acme(d).update(colour="blue"),
        ["partners[acme].colour: unknown key; expected one of id, name, enabled, sftp, mailbox, processing, "
         "routes, outbound, expect"],
    ),
    (
        "unknown top-level key",
        lambda d: d.update(partner=[]),
        ["partner: unknown key; did you mean partners?"],
    ),
    (
        "two default routes",
        lambda d: acme(d)["routes"].extend([
            {"name": "fallback", "default": True, "destinations": [{"kind": "event"}]},
            {"name": "fallback-2", "default": True, "destinations": [{"kind": "event"}]},
        ]),
        ["partners[acme].routes[2].default: only one route can be the default; route 'fallback' already is"],
    ),
    (
        "duplicate route names",
        lambda d: acme(d)["routes"].append({"name": "all", "destinations": [{"kind": "event"}]}),
        ["partners[acme].routes[1].name: is already used by routes[0]; route names must be unique"],
    ),
    (
        "route without destinations",
        lambda d: acme(d)["routes"][0].update(destinations=[]),
        ["partners[acme].routes[0].destinations: must list at least one destination"],
    ),
    (
        "missing env var",
        lambda d: acme(d)["sftp"].update(username="${ACME_SFTP_USER}"),
        ["partners[acme].sftp.username: environment variable ACME_SFTP_USER is not set and has no default"],
    ),
    (
        "malformed env reference",
        lambda d: acme(d)["sftp"].update(host="${ACME HOST}"),
        ["partners[acme].sftp.host: ${ACME HOST} is not a variable reference; use ${NAME} or ${NAME:-default}"],
    ),
    (
        "enum column without values",
        lambda d: acme(d)["processing"]["rules"][0]["csv"]["columns"].update(currency={"type": "enum"}),
        ["partners[acme].processing.rules[0].csv.columns.currency.values: is required when type is enum"],
    ),
    (
        "unquoted NO in enum values",
        lambda d: acme(d)["processing"]["rules"][0]["csv"]["columns"].update(
            country={"type": "enum", "values": ["GB", False]}
        ),
        ["partners[acme].processing.rules[0].csv.columns.country.values[1]: must be text; quote values such as "
         "'NO', 'yes', 'on' or 'off'"],
    ),
    (
        "regex column that does not compile",
        lambda d: acme(d)["processing"]["rules"][0]["csv"]["columns"].update(
            **{"order no": {"type": "regex", "pattern": "[A-Z"}}
        ),
        ['partners[acme].processing.rules[0].csv.columns["order no"].pattern: is not a valid regular expression: '
         "unterminated character set at position 0"],
    ),
    (
        "date format without directives",
        lambda d: acme(d)["processing"]["rules"][0]["csv"]["columns"].update(
            issued={"type": "date", "format": "YYYY-MM-DD"}
        ),
        ["partners[acme].processing.rules[0].csv.columns.issued.format: is not a valid strftime date format "
         "such as %Y-%m-%d"],
    ),
    (
        "csv options on a json rule",
        lambda d: acme(d)["processing"]["rules"][0].update(type="json"),
        ["partners[acme].processing.rules[0].csv: only applies when type is csv or auto (it is json)"],
    ),
    (
        "size with a unit typo",
        lambda d: acme(d)["processing"]["rules"][0].update(max_bytes="10 MiBs"),
        ['partners[acme].processing.rules[0].max_bytes: must be a size in bytes, such as 1048576 or "1 MiB"'],
    ),
    (
        "secret in transform options",
        lambda d: acme(d)["processing"]["rules"][0].update(
            transform={"name": "pgp_decrypt", "options": {"passphrase": "x"}}
        ),
        ["partners[acme].processing.rules[0].transform.options.passphrase: inline secrets are not allowed; put "
         "the value in Key Vault and give its name in a key ending in _secret"],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_mistake_gives_exactly_its_message(mutate: Mutation, expected: list[str]) -> None:
    doc = catalogue()
    mutate(doc)
    assert problems_of(doc) == expected


def test_the_valid_base_catalogue_loads() -> None:
    catalog = parse_catalog(catalogue(), env={})
    assert [p.id for p in catalog.partners] == ["acme", "globex"]
    destination = catalog.get("globex").routes[0].destinations[0]
    assert isinstance(destination, SftpDestination) and destination.partner == "acme"


def test_secret_values_never_reach_the_error() -> None:
    doc = catalogue()
    acme(doc)["sftp"]["auth"] = {"password": "hunter2", "password_secret": "hunter2!"}
    with pytest.raises(CatalogError) as caught:
        parse_catalog(doc, env={})
    assert "hunter2" not in str(caught.value)
    assert len(caught.value.problems) == 2


def test_yaml_syntax_error_gives_line_and_column() -> None:
    text = "partners:\n  - id: acme\n    name: ACME\n   sftp: {}\n"
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, source="partners.yaml")
    assert caught.value.problems == [
        "invalid YAML at line 4, column 4: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection at line 2)"
    ]
    assert str(caught.value) == (
        "partners.yaml: invalid YAML at line 4, column 4: expected <block end>, but found "
        "'<block mapping start>' (while parsing a block collection at line 2)"
    )


def test_duplicate_yaml_key_is_an_error() -> None:
    text = "partners:\n  - id: acme\n    name: ACME\n    id: acme2\n"
    assert problems_of(text) == ["invalid YAML at line 4, column 5: duplicate key 'id' (first at line 2)"]


def test_one_document_only() -> None:
    assert problems_of("partners: []\n---\npartners: []\n") == [
        "invalid YAML at line 2, column 1: expected a single document in the stream at line 1, "
        "but found another document"
    ]


def test_unquoted_cron_star_is_reported_as_yaml() -> None:
    text = "partners:\n  - id: acme\n    name: ACME\n    sftp:\n      schedule: */5 * * * *\n"
    assert problems_of(text) == [
        "invalid YAML at line 5, column 18: expected alphabetic or numeric character, but found '/' "
        "(while scanning an alias at line 5)"
    ]


def test_report_lists_every_problem_with_file_and_line() -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(FIXTURES / "broken.yaml")
    source = str(FIXTURES / "broken.yaml")
    assert isinstance(caught.value, ConfigurationError)
    assert str(caught.value) == "\n".join([
        f"{source}:7: partners[acme].sftp.prot: unknown key; did you mean port?",
        f"{source}:10: partners[acme].sftp.auth.password: inline secrets are not allowed; put the value in "
        "Key Vault and use password_secret: <secret name> instead",
        f"{source}:12: partners[acme].sftp.host_keys[0]: is not a valid SHA256 fingerprint: expected SHA256: "
        "and 43 base64 characters",
        f"{source}:13: partners[acme].sftp.remote_dirs[0]: must be an absolute path (starting with /)",
        f"{source}:19: partners[acme].routes[0].destinations[0].path: unknown placeholder {{date}}; use "
        "{partner}, {yyyy}, {MM}, {dd}, {name}, {job_id}, {stem} or {ext}",
        f"{source}:21: partners[acme].routes[0].destinations[1].partner: no partner 'globex' in the catalogue",
        f"{source}:22: partners[acme].id: is used by more than one partner (entries 1 and 2); partner ids must be "
        "unique",
    ])
    assert [d.line for d in caught.value.details] == [7, 10, 12, 13, 19, 21, 22]


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as caught:
        load_catalog(tmp_path / "nope.yaml")
    assert str(caught.value) == f"{tmp_path / 'nope.yaml'}: file not found"

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(CatalogError) as caught:
        load_catalog(empty)
    assert caught.value.problems == ["the catalogue is empty; it needs a top-level partners: list"]


def test_top_level_must_be_a_mapping_with_partners() -> None:
    assert problems_of("- id: acme\n") == ["the top level must be a mapping with a partners: list"]
    assert problems_of("defaults: {}\n") == ["partners: is required (a list of partners)"]
    assert problems_of("partners: {id: acme}\n") == ["partners: must be a list of partners"]
    assert parse_catalog("partners: []\n").partners == []


# --- interpolation -----------------------------------------------------------------------------------------


def test_interpolation_defaults_escapes_and_coercion() -> None:
    doc = catalogue()
    sftp = acme(doc)["sftp"]
    sftp.update(
        port="${ACME_PORT}",
        username="${ACME_USER:-wharf}",
        host="${ACME_HOST:-sftp.acme.example}",
        remote_dirs=["/outbound/${ACME_SUBDIR:-in}"],
    )
    acme(doc)["name"] = "ACME $${NOT_A_VAR} costs $5"
    env = {"ACME_PORT": "22", "ACME_USER": "", "ACME_SUBDIR": "x"}
    partner = parse_catalog(doc, env=env).get("acme")
    assert partner.sftp is not None
    assert partner.sftp.port == 22
    assert partner.sftp.username == "wharf"  # :- also replaces an empty value
    assert partner.sftp.remote_dirs == ["/outbound/x"]
    assert partner.name == "ACME ${NOT_A_VAR} costs $5"


def test_interpolated_value_is_still_validated() -> None:
    doc = catalogue()
    acme(doc)["sftp"]["port"] = "${ACME_PORT}"
    assert problems_of(doc, env={"ACME_PORT": "0"}) == ["partners[acme].sftp.port: must be between 1 and 65535"]


# --- defaults --------------------------------------------------------------------------------------------


def test_missing_variable_in_defaults_is_reported_once() -> None:
    doc = catalogue()
    doc["partners"].append(copy.deepcopy(acme(doc)) | {"id": "acme-2"})
    doc["defaults"] = {"sftp": {"username": "${SFTP_USER}"}}
    for partner in doc["partners"][::2]:
        del partner["sftp"]["username"]
    assert problems_of(doc) == [
        "defaults.sftp.username: environment variable SFTP_USER is not set and has no default"
    ]


def test_defaults_fill_blocks_but_partner_values_win() -> None:
    doc = catalogue()
    doc["defaults"] = {
        "sftp": {"min_age_seconds": 120, "post_action": "move", "move_to": "/archive", "port": 22},
        "mailbox": {"folder": "Inbox/Partners"},
    }
    acme(doc)["sftp"]["min_age_seconds"] = 5
    catalog = parse_catalog(doc, env={})
    sftp = catalog.get("acme").sftp
    mailbox = catalog.get("globex").mailbox
    assert sftp is not None and mailbox is not None
    assert (sftp.min_age_seconds, sftp.post_action, sftp.move_to) == (5, "move", "/archive")
    assert mailbox.folder == "Inbox/Partners"


def test_post_action_and_its_companions_are_inherited_together() -> None:
    doc = catalogue()
    doc["defaults"] = {"sftp": {"post_action": "move", "move_to": "/archive"}}
    acme(doc)["sftp"]["post_action"] = "delete"
    sftp = parse_catalog(doc, env={}).get("acme").sftp
    assert sftp is not None and (sftp.post_action, sftp.move_to) == ("delete", None)


def test_problems_in_defaults_are_reported_once_where_written() -> None:
    doc = catalogue()
    doc["partners"].append(copy.deepcopy(acme(doc)) | {"id": "acme-2"})
    doc["defaults"] = {"sftp": {"schedule": "every 5 minutes", "timeout": 3}, "mail": {}}
    assert problems_of(doc) == [
        "defaults.sftp.timeout: unknown key; did you mean connect_timeout_seconds or operation_timeout_seconds?",
        "defaults.mail: unknown key; defaults can hold sftp and mailbox",
        "defaults.sftp.schedule: must be a cron expression with 6 fields (second minute hour day month weekday, "
        "as Azure Functions timers use) or 5 fields (standard cron)",
    ]


# --- the Catalog API -------------------------------------------------------------------------------------


def test_get_raises_a_not_found_key_error_with_a_clear_message() -> None:
    catalog = parse_catalog(catalogue(), env={})
    with pytest.raises(PartnerNotFoundError) as caught:
        catalog.get("acmee")
    assert isinstance(caught.value, NotFoundError) and isinstance(caught.value, KeyError)
    assert str(caught.value) == "partner 'acmee' is not in the catalogue; did you mean 'acme'?"
    with pytest.raises(KeyError) as unknown:
        catalog.get("zzz")
    assert str(unknown.value) == "partner 'zzz' is not in the catalogue"  # never the list of every partner
    assert "acme" in catalog and "zzz" not in catalog


def test_transform_options_name_secrets_like_everything_else() -> None:
    doc = catalogue()
    acme(doc)["processing"]["rules"][0]["transform"] = {
        "name": "pgp_decrypt", "options": {"private_key_secret": "acme-pgp-key", "armor": True}
    }
    assert parse_catalog(doc, env={}).secret_names() == ["acme-pgp-key", "acme-sftp-key", "graph-client-secret"]
    acme(doc)["processing"]["rules"][0]["transform"]["options"]["private_key_secret"] = "s3cr3t!"
    assert problems_of(doc) == [
        "partners[acme].processing.rules[0].transform.options.private_key_secret: must be a Key Vault secret name "
        "(1-127 letters, digits and dashes), not the secret itself"
    ]


def test_partner_lists_and_secret_names_skip_disabled_partners() -> None:
    doc = catalogue()
    globex(doc)["enabled"] = False
    catalog = parse_catalog(doc, env={})
    assert [p.id for p in catalog.sftp_partners()] == ["acme"]
    assert catalog.mailbox_partners() == []
    assert [p.id for p in catalog.mailbox_partners(include_disabled=True)] == ["globex"]
    assert catalog.secret_names() == ["acme-sftp-key"]
    assert catalog.secret_names(include_disabled=True) == ["acme-sftp-key", "graph-client-secret"]


def test_catalog_built_in_code_is_cross_checked_too() -> None:
    doc = catalogue()
    globex(doc)["routes"][0]["destinations"][0]["partner"] = "initech"
    partners = [Partner.model_validate(p) for p in doc["partners"]]
    with pytest.raises(ValidationError) as caught:
        Catalog(partners=partners)
    assert format_problems(caught.value) == [
        "partners[1].routes[0].destinations[0].partner: no partner 'initech' in the catalogue"
    ]


def test_format_problems_converts_validation_errors_from_models() -> None:
    with pytest.raises(ValidationError) as caught:
        Partner.model_validate({"id": "x", "name": "", "routes": [{"name": "r", "destinations": [{}]}]})
    assert format_problems(caught.value) == [
        "id: must be 2-40 lowercase letters, digits and dashes, starting and ending with a letter or digit "
        "(it is used in blob paths and table keys)",
        "name: must not be empty",
        "routes[0].destinations[0].kind: is required: one of blob, sftp, email, event",
    ]


# --- helpers the services share ---------------------------------------------------------------------------


def test_sftp_file_selection() -> None:
    doc = catalogue()
    acme(doc)["sftp"].update(include=["*.csv", "*.xml"], exclude=["tmp_*"], post_action="rename")
    sftp = parse_catalog(doc, env={}).get("acme").sftp
    assert sftp is not None
    assert sftp.wants("Orders.CSV")
    assert not sftp.wants("tmp_orders.csv")
    assert not sftp.wants("orders.json")
    assert not sftp.wants("orders.csv.done")  # our own renamed file
    assert sftp.rename_suffix == ".done"


def test_glob_match_is_case_insensitive_on_names() -> None:
    assert glob_match("Orders.CSV", "*.csv")
    assert not glob_match("orders.csv.tmp", "*.csv")


def test_next_run_reads_both_cron_forms() -> None:
    after = datetime(2024, 1, 1, 0, 1, 30, tzinfo=UTC)
    assert next_run("0 */5 * * * *", after) == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert next_run("*/5 * * * *", after) == datetime(2024, 1, 1, 0, 5, tzinfo=UTC)


def test_host_keys_hashed_and_fingerprint_forms() -> None:
    salt = b"0123456789abcdef0123"
    digest = hmac.new(salt, b"[sftp.acme.example]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} ssh-ed25519 {ED25519}"
    key = parse_host_key(hashed)
    assert key.matches_host("sftp.acme.example", 2222)
    assert not key.matches_host("sftp.acme.example", 22)
    assert key.fingerprint == FINGERPRINT
    assert parse_host_key(FINGERPRINT + "=").fingerprint == FINGERPRINT
    assert parse_host_key(f"*.acme.example,!bad.acme.example ssh-ed25519 {ED25519}").matches_host("x.acme.example")
    assert not parse_host_key(f"*.acme.example,!bad.acme.example ssh-ed25519 {ED25519}").matches_host(
        "bad.acme.example"
    )
