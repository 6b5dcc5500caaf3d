"""Rotation without restart for Graph: the app's client secret (or certificate) is rotated at the Entra ID
stand-in and in the secrets store between two polls while Wharf's cache still holds the old value. The real
azure-identity credential gets its tokens from the stand-in (tests/graph_server/authority.py, HTTPS) and the real
msgraph-sdk calls the Graph test server with them. Two ways a rotation shows: Entra ID refuses the old secret when
a new token is needed (AADSTS7000215), or Graph refuses the token in hand (401). Either way the poll re-reads
the secret once, bypassing the cache, lands its mail, and the breaker records no failure. The outbound email path
opens its client through the same layer (GraphMailSenders -> mailbox_client) and is tested the same way."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shared.adapters import graph_mail
from shared.adapters.graph_mail import GraphMailboxes, GraphMailSenders
from shared.adapters.secrets import CachedSecrets, LocalSecrets, env_name
from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.errors import ConfigurationError
from shared.ports import OutgoingMail
from shared.services.poll_mailbox import poll_mailbox
from shared.services.polls import PollOptions, PollSummary
from tests.graph_server import GraphTestServer, file_attachment
from tests.graph_server.authority import EntraTestAuthority, self_signed

pytestmark = [pytest.mark.graph, pytest.mark.azurite, pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TENANT = "contoso.onmicrosoft.com"
SECRET_NAME = "rot-graph-secret"
CERT_NAME = "rot-graph-cert"


class CountingSecrets(LocalSecrets):
    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env=env)
        self.reads = 0

    def get(self, name: str) -> str:
        self.reads += 1
        return super().get(name)


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphTestServer]:
    with GraphTestServer() as server:
        yield server


@pytest.fixture(scope="module")
def authority(graph: GraphTestServer) -> Iterator[EntraTestAuthority]:
    with EntraTestAuthority(graph) as auth:
        yield auth


@pytest.fixture(autouse=True)
def _trust_the_authority(authority: EntraTestAuthority, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # azure-identity talks to the authority through azure-core's requests transport: trust its certificate.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(authority.ca_file))
    yield
    for key in [k for k in graph_mail._CLIENTS if k[0] == "app" and k[2] == authority.url]:
        graph_mail._CLIENTS.pop(key).close()


@dataclass
class Env:
    services: Services
    graph: GraphTestServer
    authority: EntraTestAuthority
    partner: str
    client_id: str
    mailbox: str
    store: CountingSecrets
    env: dict[str, str]
    secrets: CachedSecrets

    def poll(self) -> PollSummary:
        return poll_mailbox(self.services, self.partner, options=PollOptions(breaker_threshold=1),
                            requested_by="test")

    def mail(self, name: str) -> None:
        self.graph.model.user(self.mailbox).add_message(  # type: ignore[union-attr]
            "Inbox/Rot", subject=name, sender="ops@rot.example",
            attachments=[file_attachment(name, b"id\n1\n", content_type="text/csv")])

    def breaker_failures(self) -> int:
        return self.services.breakers.get("mail", self.partner).failures


def _env(services: Services, graph: GraphTestServer, authority: EntraTestAuthority, *, certificate: bool,
         value: str) -> Env:
    uid = uuid.uuid4().hex[:8]
    client_id = str(uuid.uuid4())
    mailbox = f"rot-{uid}@wharf.test"
    graph.add_user(mailbox).folder_path("Inbox/Rot")
    name = CERT_NAME if certificate else SECRET_NAME
    env = {env_name(name): value}
    store = CountingSecrets(env)
    secrets = CachedSecrets(store, ttl=3600)  # a long cache: only a refusal makes Wharf read the secret again
    services.overrides["secrets"] = secrets
    services.overrides["mailboxes"] = GraphMailboxes(secrets, base_url=graph.base_url, authority=authority.url,
                                                     retry_delay=0.05, backoff_factor=0.05, jitter=0.05,
                                                     max_retry_wait=5)
    auth = {"tenant_id": TENANT, "client_id": client_id,
            ("certificate_secret" if certificate else "client_secret_secret"): name}
    partner = f"rot{uid}"
    services.overrides["catalog"] = parse_catalog({"partners": [{
        "id": partner, "name": "Rotation partner",
        "mailbox": {"mailbox": mailbox, "folder": "Inbox/Rot", "sender_allow": ["ops@rot.example"],
                    "attachment_globs": ["*.csv"], "auth": auth}}]})
    return Env(services, graph, authority, partner, client_id, mailbox, store, env, secrets)


@pytest.mark.parametrize("revoke", [False, True], ids=["entra-refuses-old-secret", "graph-401-on-old-token"])
def test_a_rotated_client_secret_takes_effect_on_the_next_poll(
        services: Services, graph: GraphTestServer, authority: EntraTestAuthority, revoke: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    e = _env(services, graph, authority, certificate=False, value="old-client-secret-1")
    # Without revocation the token in hand stays good at Graph (as after a real rotation); a short token
    # lifetime makes every call need a new token, as when it expires, and Entra ID then refuses the old secret.
    authority.register_app(TENANT, e.client_id, secret="old-client-secret-1", token_lifetime=3599 if revoke else 60)
    e.mail("a.csv")
    first = e.poll()
    assert (first.status, first.landed) == ("ok", 1), first
    before = len(authority.granted(e.client_id))
    assert before >= 1 and all(r.granted for r in authority.granted(e.client_id))
    if revoke:
        assert before == 1

    # Rotation: Entra ID knows only the new secret; the store holds it; Wharf's cache still the old one.
    authority.rotate_secret(e.client_id, "new-client-secret-2", revoke_tokens=revoke)
    e.env[env_name(SECRET_NAME)] = "new-client-secret-2"
    assert e.secrets.get(SECRET_NAME) == "old-client-secret-1"
    reads = e.store.reads
    e.mail("b.csv")
    with caplog.at_level(logging.INFO):
        second = e.poll()
    assert (second.status, second.landed) == ("ok", 1), second
    assert e.breaker_failures() == 0
    assert e.store.reads == reads + 1  # read again once, bypassing the cache
    assert e.secrets.get(SECRET_NAME) == "new-client-secret-2"  # and the cache now holds the new value
    grants = [(r.granted, r.error) for r in authority.granted(e.client_id)][before:]
    refused = [r for r in graph.log(e.mailbox) if r.status == 401]
    if revoke:  # Graph said 401 to the old token: re-read, new credential, new token, the request sent again
        assert grants == [(True, "")]
        assert len(refused) == 1
    else:  # Entra ID refused the old secret once, then granted the new one (every call after)
        assert grants[0] == (False, "7000215") and len(grants) > 1 and all(g for g, _ in grants[1:])
        assert refused == []
    text = caplog.text + repr(second) + "".join(str(j.error) for j in services.jobs.list_jobs(partner=e.partner))
    assert "old-client-secret-1" not in text and "new-client-secret-2" not in text

    # The third poll needs no further read: the new credential is in use.
    e.mail("c.csv")
    reads = e.store.reads
    assert e.poll().landed == 1
    assert e.store.reads == reads and e.breaker_failures() == 0


def test_a_wrong_secret_that_did_not_change_fails_once_and_counts(
        services: Services, graph: GraphTestServer, authority: EntraTestAuthority) -> None:
    e = _env(services, graph, authority, certificate=False, value="never-registered")
    authority.register_app(TENANT, e.client_id, secret="the-real-secret")
    e.mail("a.csv")
    reads = e.store.reads
    failed = e.poll()
    assert failed.status == "failed" and failed.landed == 0
    assert "Entra ID refused the app's credential (AADSTS7000215)" in (failed.error or "")
    assert "never-registered" not in (failed.error or "") and "the-real-secret" not in (failed.error or "")
    # One fresh read (nothing changed), one token request with it: not tried twice with the same secret.
    assert e.store.reads == reads + 2  # the first (cache miss) read and the one fresh read
    assert [r.error for r in authority.granted(e.client_id)] == ["7000215"]
    assert e.breaker_failures() == 1


def test_a_rotated_certificate_takes_effect_on_the_next_poll(
        services: Services, graph: GraphTestServer, authority: EntraTestAuthority) -> None:
    old_pem, old_key, old_der = self_signed("wharf-graph-app-1")
    new_pem, new_key, new_der = self_signed("wharf-graph-app-2")
    e = _env(services, graph, authority, certificate=True, value=(old_pem + old_key).decode())
    authority.register_app(TENANT, e.client_id, certificate_der=old_der)
    e.mail("a.csv")
    assert e.poll().landed == 1

    authority.rotate_certificate(e.client_id, new_der, revoke_tokens=True)
    e.env[env_name(CERT_NAME)] = (new_pem + new_key).decode()
    e.mail("b.csv")
    second = e.poll()
    assert (second.status, second.landed) == ("ok", 1), second
    assert e.breaker_failures() == 0
    assert [(r.kind, r.granted) for r in authority.granted(e.client_id)] == [("assertion", True)] * 2


def test_outbound_email_reauthenticates_through_the_same_layer(
        graph: GraphTestServer, authority: EntraTestAuthority) -> None:
    """deliver_email opens its sender through GraphMailSenders -> mailbox_client: a send after a rotation
    (Graph 401 on the old token) re-reads the secret and goes out once."""
    client_id = str(uuid.uuid4())
    sender = f"send-{uuid.uuid4().hex[:8]}@wharf.test"
    graph.add_user(sender)
    authority.register_app(TENANT, client_id, secret="send-secret-1")
    env = {env_name("rot-send-secret"): "send-secret-1"}
    store = CountingSecrets(env)
    secrets = CachedSecrets(store, ttl=3600)
    senders = GraphMailSenders(secrets, base_url=graph.base_url, authority=authority.url, retry_delay=0.05,
                               backoff_factor=0.05, jitter=0.05, max_retry_wait=5)
    auth: Any = type("Auth", (), {"tenant_id": TENANT, "client_id": client_id,
                                  "client_secret_secret": "rot-send-secret", "certificate_secret": None})()

    def mail(n: int) -> OutgoingMail:
        return OutgoingMail(subject=f"report {n}", body="see attachment", to=["bank@partner.example"],
                            internet_message_id=f"<rot-{n}-{uuid.uuid4().hex}@wharf.test>")

    first = mail(1)
    senders.open(sender, auth).send_mail(sender, first)
    authority.rotate_secret(client_id, "send-secret-2", revoke_tokens=True)
    env[env_name("rot-send-secret")] = "send-secret-2"
    second = mail(2)
    senders.open(sender, auth).send_mail(sender, second)
    assert len(graph.sent_by(first.internet_message_id)) == 1
    assert len(graph.sent_by(second.internet_message_id)) == 1  # sent once: the 401 request was not applied
    assert [r.granted for r in authority.granted(client_id)] == [True, True]

    # A 401 with a secret that did not change is the original error (ConfigurationError), not retried.
    authority.rotate_secret(client_id, "send-secret-3", revoke_tokens=True)
    third = mail(3)
    with pytest.raises(ConfigurationError, match="401"):
        senders.open(sender, auth).send_mail(sender, third)
    assert graph.sent_by(third.internet_message_id) == []



def test_an_unreachable_authority_is_an_outage_not_a_crash(graph: GraphTestServer) -> None:
    """A token request that gets no answer (Entra ID down) is DependencyUnavailableError, as a Graph outage is:
    the poll reports it and the breaker counts it (before, azure-core's error escaped the poll's mapping)."""
    from shared.adapters.graph_mail import GraphMailClient
    from shared.domain.errors import DependencyUnavailableError
    from tests.integration.sshd_server import free_port

    client = GraphMailClient.with_app_secret(TENANT, str(uuid.uuid4()), lambda fresh: "some-secret",
                                             authority=f"https://127.0.0.1:{free_port()}", base_url=graph.base_url,
                                             max_retries=0)
    try:
        with pytest.raises(DependencyUnavailableError, match="token request failed"):
            client.resolve_folder("nobody@wharf.test", "Inbox")
    finally:
        client.close()
