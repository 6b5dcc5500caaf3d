"""OpenPGP on email destinations (#18): the real msgraph-sdk against the Graph test server, records and the staged
ciphertext in Azurite, real gpg on the receiving side.

What the server received as the attachment decrypts and verifies with the partner's gpg to the original file;
it is named with the suffix and typed application/pgp-encrypted; a retry after a failed send attaches the very
same staged ciphertext (same sha256, same internetMessageId, one message); the result (the file.routed event)
and the Deliveries row name fingerprints, never key material."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.graph_mail import GraphMailSenders
from shared.adapters.secrets import LocalSecrets, env_name
from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.delivery import DeliveryState
from shared.domain.errors import ConfigurationError
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.services.deliver_email import EmailOptions, deliver_email
from shared.services.pgp import PGP_CONTENT_TYPE
from shared.settings import Settings
from tests.gpg_home import PASSPHRASE, GpgHome, own_pgp_temp_dir, stored_key, wharf_keyrings
from tests.graph_server import TEST_TOKEN, GraphTestServer

pytestmark = [pytest.mark.graph, pytest.mark.azurite, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

MIB = 1024 * 1024
AUTH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "11111111-2222-3333-4444-555555555555",
        "client_secret_secret": "graph-send-secret"}
WHARF = stored_key("wharf-ed25519")  # signs what Wharf sends
BANK = stored_key("bank-rsa3072")  # the receiving partner: Wharf encrypts to its public key
SECRETS = {env_name("bank-pgp-pub"): BANK.public, env_name("wharf-sign-key"): WHARF.secret,
           env_name("wharf-sign-pass"): PASSPHRASE}
PGP = {"encrypt_to_secret": "bank-pgp-pub", "sign_with_secret": "wharf-sign-key",
       "sign_passphrase_secret": "wharf-sign-pass"}


@pytest.fixture(autouse=True)
def _own_keyrings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from own_pgp_temp_dir(monkeypatch)


@pytest.fixture(scope="module")
def services(azurite: str) -> Iterator[Services]:
    from azure.data.tables import TableServiceClient

    from shared.bootstrap import build_services
    from shared.resources import TABLES

    tag = uuid.uuid4().hex[:12]
    settings = Settings(AzureWebJobsStorage=azurite, WHARF_TABLE_PREFIX=f"ep{tag}", POLL_QUEUE=f"poll-{tag}",
                        LANDED_QUEUE=f"landed-{tag}", WHARF_EVENTS_QUEUE=f"events-{tag}")
    svc = build_services(settings)
    svc.overrides["secrets"] = LocalSecrets(env=SECRETS)
    svc.blobs.ensure_containers(["staging"])
    svc.jobs.ensure_tables()
    yield svc
    tables = TableServiceClient.from_connection_string(settings.storage_connection_string or "")
    for name in TABLES:
        tables.delete_table(f"{settings.table_prefix}{name}")


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphTestServer]:
    with GraphTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def bank() -> Iterator[GpgHome]:
    """The receiving partner's gpg: its own secret key, Wharf's public key to verify with."""
    home = GpgHome(BANK)
    home.import_key(WHARF.public)
    yield home
    home.close()


class EmailPgpOut:
    """A job of a fresh partner whose default route emails its output, encrypted, from a fresh sender mailbox."""

    def __init__(self, services: Services, graph: GraphTestServer, *also: dict[str, Any], **pgp: Any) -> None:
        self.services, self.graph = services, graph
        tag = uuid.uuid4().hex[:10]
        self.partner = f"pgp{tag}"
        self.sender = f"p{tag}@wharf.test"
        self.user = graph.add_user(self.sender)
        destination = {"kind": "email", "to": ["ops@bank.example"], "mailbox": self.sender, "auth": AUTH,
                       "pgp": {**PGP, **pgp}}
        self.catalog = parse_catalog({"partners": [{"id": self.partner, "name": "source", "routes": [
            {"name": "out", "default": True, "destinations": [destination, *also]}]}]}, env={})
        services.overrides["catalog"] = self.catalog
        services.overrides["mail_senders"] = GraphMailSenders(
            LocalSecrets(env={}), base_url=graph.base_url, local_token=TEST_TOKEN, retry_delay=0.05, max_retries=3,
            backoff_factor=0.05, jitter=0.05, max_retry_wait=5)
        self.job_id = new_job_id()
        services.jobs.append(self.job_id, EventType.CREATED, {"partner": self.partner, "file_name": "orders.csv",
                                                              "source": "test"})

    def stage(self, data: bytes, name: str = "orders.csv") -> None:
        info = self.services.blobs.upload_stream("staging", f"{self.partner}/{self.job_id}/{name}", [data],
                                                 content_type="text/csv")
        self.output = {"container": "staging", "path": info.path, "name": name, "bytes": info.size,
                       "sha256": info.sha256, "content_type": "text/csv"}

    def planned(self, index: int = 0) -> dict[str, Any]:
        """The destination as plan_routes returns it, before the orchestration history redacts it."""
        return self.catalog.get(self.partner).routes[0].destinations[index].model_dump(mode="json")

    def ref(self, index: int = 0) -> dict[str, Any]:
        return {"job_id": self.job_id, "partner": self.partner, "route": "out", "index": index}

    def deliver(self, dest: dict[str, Any] | None = None) -> dict[str, Any]:
        dest = self.planned() if dest is None else dest
        return deliver_email(self.services, self.services.jobs.get_job(self.job_id), self.ref(), self.output, dest,
                             opts=EmailOptions(sent_lookups=2, sent_lookup_wait=0.05, sleep=lambda s: None,
                                               chunk_size=MIB))

    def record(self) -> Any:
        return self.services.deliveries.get(self.job_id, 0)

    def sent(self) -> list[Any]:
        return self.graph.sent_by(self.record().message_id)

    def ciphertexts(self) -> list[Any]:
        return list(self.services.blobs.list_blobs("staging", prefix=f"{self.partner}/{self.job_id}/pgp/"))


def _decrypted(bank: GpgHome, tmp_path: Path, attachment: Any) -> tuple[bytes, str]:
    """The attachment as the partner's gpg reads it: (plaintext, gpg's status lines)."""
    got = tmp_path / attachment.name
    got.write_bytes(b"".join(attachment.chunks()))
    done = bank.gpg("--passphrase", PASSPHRASE, "--status-fd", "2", "--decrypt", str(got))
    return done.stdout, done.stderr.decode(errors="replace")


def _no_key_material(*texts: str) -> None:
    for text in texts:
        for material in (WHARF.secret, BANK.public, PASSPHRASE, "BEGIN PGP"):
            assert material not in text


@pytest.mark.parametrize(("armor", "suffix"), [(False, ".pgp"), (True, ".asc")])
def test_an_encrypted_attachment_decrypts_and_verifies_with_gpg_to_the_original(
        services: Services, graph: GraphTestServer, bank: GpgHome, tmp_path: Path, armor: bool, suffix: str) -> None:
    out = EmailPgpOut(services, graph, armor=armor, suffix=suffix)
    data = b"order,amount\n" + b"PO-1,10.00\n" * 2000
    out.stage(data)
    result = out.deliver()

    [sent] = out.sent()
    assert sent.via == "sendMail"
    [att] = sent.message.attachments
    assert (att.name, att.content_type) == (f"orders.csv{suffix}", PGP_CONTENT_TYPE)
    body = b"".join(att.chunks())
    assert body.startswith(b"-----BEGIN PGP MESSAGE-----") is armor and b"PO-1" not in body
    plain, status = _decrypted(bank, tmp_path, att)
    assert plain == data
    assert f"[GNUPG:] VALIDSIG {WHARF.fingerprint.upper()}" in status
    assert "[GNUPG:] DECRYPTION_OKAY" in status

    # What was recorded is the ciphertext that was sent, and the fingerprints that made it.
    [cipher] = out.ciphertexts()
    rec = out.record()
    assert rec.state is DeliveryState.SENT and rec.sha256 == cipher.sha256 == att.sha256() != out.output["sha256"]
    assert rec.bytes == cipher.size == att.size
    assert result["pgp"] == {"recipients": [BANK.fingerprint], "signer": WHARF.fingerprint,
                             "plain_sha256": hashlib.sha256(data).hexdigest()}
    assert f"pgp encrypted to {BANK.fingerprint}, signed by {WHARF.fingerprint}" in rec.verified
    assert rec.verified.startswith("sendMail inline")
    logs = [entry.message for entry in services.jobs.logs(out.job_id)]
    assert any(BANK.fingerprint in m and WHARF.fingerprint in m for m in logs)
    _no_key_material(json.dumps(result), repr(rec), *logs)
    assert wharf_keyrings() == set()  # the temporary keyring (and the ciphertext file in it) is gone


def test_a_retry_attaches_the_same_staged_ciphertext_and_sends_once(
        services: Services, graph: GraphTestServer, bank: GpgHome, tmp_path: Path) -> None:
    """Over 3 MB: draft + upload session in 1 MiB chunks. The draft's send fails once; the retry finds the
    complete draft and sends it: the ciphertext is not made again (a new encryption differs byte for byte)."""
    out = EmailPgpOut(services, graph, compress=False)
    data = os.urandom(3 * MIB + 11)
    out.stage(data, name="orders.bin")
    route = rf"POST /v1.0/users/{out.sender}/messages/.*/send$"
    graph.fail(route, 500)
    with pytest.raises(Exception, match="500"):
        out.deliver()
    first = out.record()
    [cipher] = out.ciphertexts()
    assert first.state is DeliveryState.FAILED and first.sha256 == cipher.sha256 and out.sent() == []

    result = out.deliver()
    [again] = out.ciphertexts()
    assert (again.sha256, again.etag) == (cipher.sha256, cipher.etag)  # reused, not encrypted again
    rec = out.record()
    assert (rec.state, rec.attempts, rec.message_id) == (DeliveryState.SENT, 2, first.message_id)
    [sent] = out.sent()  # one message
    assert sent.via == "draft" and len(graph.log(rf"/users/{out.sender}/messages/.*/createUploadSession$")) == 1
    [att] = sent.message.attachments
    assert att.name == "orders.bin.pgp" and att.sha256() == cipher.sha256 == rec.sha256
    plain, status = _decrypted(bank, tmp_path, att)
    assert plain == data and f"[GNUPG:] VALIDSIG {WHARF.fingerprint.upper()}" in status
    assert result["pgp"]["recipients"] == [BANK.fingerprint]
    assert rec.verified.count("pgp encrypted to") == 1
    graph.clear_faults()


def test_an_email_destination_takes_a_pgp_block_in_the_catalogue() -> None:
    from shared.catalog import CatalogError

    dest = {"kind": "email", "to": ["a@b.example"], "mailbox": "out@contoso.example", "auth": AUTH,
            "pgp": {"encrypt_to_secret": "bank-pgp-pub", "armor": True, "suffix": ".asc"}}
    doc = {"partners": [{"id": "acme", "name": "A", "routes": [{"name": "r", "default": True,
                                                                 "destinations": [dest]}]}]}
    parsed = parse_catalog(doc, env={}).get("acme").routes[0].destinations[0]
    assert parsed.pgp is not None and (parsed.pgp.encrypt_to_secret, parsed.pgp.armor) == ("bank-pgp-pub", True)
    from shared.services.secrets_check import referenced_secrets  # `wharf secrets check` sees the key's secret

    assert [w for w in referenced_secrets(parse_catalog(doc, env={}))["bank-pgp-pub"] if ".pgp." in w] == [
        "acme.routes[0].destinations[0].pgp.encrypt_to_secret"]
    dest["pgp"] = {"sign_with_secret": "wharf-sign-key"}  # no recipients
    with pytest.raises(CatalogError, match="encrypt_to_secret"):
        parse_catalog(doc, env={})


def test_a_plan_whose_secret_names_the_history_redacted_encrypts_with_the_catalogues_block(
        services: Services, graph: GraphTestServer, bank: GpgHome, tmp_path: Path) -> None:
    """plan_routes is an activity: its result (the destinations) goes through redact_data, which turns every
    `*_secret` value into `***`. The email and blob deliveries read the block from the catalogue then."""
    from shared.observability.redaction import redact_data
    from shared.services.process import _deliver_blob

    services.blobs.ensure_containers(["processed"])
    out = EmailPgpOut(services, graph, {"kind": "blob", "container": "processed", "pgp": PGP})
    data = b"order,amount\nPO-7,70.00\n"
    out.stage(data)
    planned = [redact_data(out.planned(i)) for i in (0, 1)]
    assert planned[0]["pgp"]["encrypt_to_secret"] == planned[1]["pgp"]["sign_with_secret"] == "***"

    result = out.deliver(planned[0])
    [sent] = out.sent()
    plain, status = _decrypted(bank, tmp_path, sent.message.attachments[0])
    assert plain == data and f"[GNUPG:] VALIDSIG {WHARF.fingerprint.upper()}" in status
    assert result["pgp"]["recipients"] == [BANK.fingerprint]

    job = services.jobs.get_job(out.job_id)
    routed = _deliver_blob(services, job, out.ref(1), out.output, planned[1])
    assert routed["pgp"]["signer"] == WHARF.fingerprint
    blob = tmp_path / "blob.pgp"
    container, _, path = routed["target"].partition("/")
    blob.write_bytes(b"".join(services.blobs.open_read(container, path)))
    done = bank.gpg("--passphrase", PASSPHRASE, "--status-fd", "2", "--decrypt", str(blob))
    assert done.stdout == data

    # The route changed since the plan: the redacted names are not looked up as secrets.
    services.overrides["catalog"] = parse_catalog({"partners": [{"id": out.partner, "name": "source"}]}, env={})
    with pytest.raises(ConfigurationError, match=r"route 'out' destination 1: its pgp block's secret names"):
        _deliver_blob(services, job, out.ref(1), out.output, planned[1])
