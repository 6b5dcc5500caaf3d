"""Entra ID bearer tokens against a local JWKS server with keys made here: every bad token is a 401 (or 403 for a
missing role) with its reason, an unknown kid refetches the key set once, and no token value reaches a log."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from shared.api import auth
from tests.api_world import ApiWorld

ISSUER = "https://login.microsoftonline.com/tenant-test/v2.0"
AUDIENCE = "api://wharf-test"


class Jwks:
    def __init__(self) -> None:
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps({"keys": [
                    {**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "use": "sig", "alg": "RS256"}
                    for kid, k in jwks.keys.items()]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/keys"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    auth._validators.clear()
    yield server
    server.server.shutdown()
    server.server.server_close()
    auth._validators.clear()


def _token(key: Any, kid: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "nbf": now - 10, "iat": now - 10,
            "preferred_username": "ops@example.com", "roles": ["Wharf.Read"], **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": kid})


def _world(jwks: Jwks, cooldown: float = 0) -> ApiWorld:
    return ApiWorld(WHARF_AUTH_ISSUER=ISSUER, WHARF_AUTH_AUDIENCE=AUDIENCE, WHARF_AUTH_JWKS_URL=jwks.url,
                    WHARF_AUTH_JWKS_COOLDOWN_SECONDS=cooldown)


def _call(w: ApiWorld, token: str, method: str = "GET", path: str = "/jobs") -> tuple[int, str]:
    r = w.call(method, path, headers={"Authorization": f"Bearer {token}"}, key=False)
    return r.status, json.loads(r.read())["detail"] if r.status >= 400 else ""


def test_a_valid_token_reads_and_its_role_decides_what_else(jwks: Jwks) -> None:
    key = jwks.add("k1")
    w = _world(jwks)
    assert _call(w, _token(key, "k1"))[0] == 200
    w.job()
    code, detail = _call(w, _token(key, "k1"), "POST", "/partners/acme/poll")
    assert code == 403 and "Wharf.Operate" in detail
    assert _call(w, _token(key, "k1", roles=["Wharf.Operate"]), "POST", "/partners/acme/poll")[0] == 202
    code, detail = _call(w, _token(key, "k1", roles=None))
    assert code == 403 and "no roles" in detail


@pytest.mark.parametrize(("claims", "reason"), [
    ({"exp": int(time.time()) - 3600}, "expired"),
    ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ({"aud": "api://someone-else"}, "another audience"),
    ({"iss": "https://login.microsoftonline.com/other/v2.0"}, "another issuer"),
    ({"exp": None}, "'exp'"),
])
def test_bad_claims_are_401_with_the_reason(jwks: Jwks, claims: dict[str, Any], reason: str) -> None:
    key = jwks.add("k1")
    code, detail = _call(_world(jwks), _token(key, "k1", **claims))
    assert code == 401 and reason in detail


def test_alg_none_and_hs256_with_the_public_key_are_refused(jwks: Jwks) -> None:
    key = jwks.add("k1")
    w = _world(jwks)
    claims = jwt.decode(_token(key, "k1"), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    code, detail = _call(w, unsigned)
    assert code == 401 and "'none' is not allowed" in detail
    # The classic confusion: HS256 with the RSA public key (PEM) as the HMAC secret. PyJWT refuses to sign
    # with a PEM, so the token is made by hand.
    import base64
    import hashlib
    import hmac

    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    code, detail = _call(w, f"{head}.{body}.{sig}")
    assert code == 401 and "'HS256' is not allowed" in detail
    assert _call(w, "not-a-jwt")[1] == "the bearer token is not a well-formed JWT"


def test_an_unknown_kid_refetches_the_keys_once_then_refuses(jwks: Jwks) -> None:
    old = jwks.add("k1")
    w = _world(jwks)
    assert _call(w, _token(old, "k1"))[0] == 200
    fetched = jwks.fetches
    assert _call(w, _token(old, "k1"))[0] == 200 and jwks.fetches == fetched  # cached
    new = jwks.add("k2")  # the tenant rolled its keys
    assert _call(w, _token(new, "k2"))[0] == 200 and jwks.fetches == fetched + 1
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    code, detail = _call(w, _token(stranger, "k9"))
    assert code == 401 and "not one of the tenant's keys" in detail
    code, detail = _call(w, _token(stranger, "k1"))  # a known kid, signed by someone else
    assert code == 401 and "signature" in detail


def test_unknown_kids_refetch_at_most_once_per_cooldown(jwks: Jwks) -> None:
    key = jwks.add("k1")
    w = _world(jwks, cooldown=3600)
    assert _call(w, _token(key, "k1"))[0] == 200
    fetched = jwks.fetches
    for i in range(5):
        assert _call(w, _token(key, f"made-up-{i}"))[0] == 401
    assert jwks.fetches <= fetched + 1


def test_no_token_value_in_any_log(jwks: Jwks, caplog: pytest.LogCaptureFixture) -> None:
    key = jwks.add("k1")
    w = _world(jwks)
    caplog.set_level(logging.DEBUG)
    tokens = [_token(key, "k1"), _token(key, "k1", exp=int(time.time()) - 3600), _token(key, "k1", roles=[])]
    for t in tokens:
        _call(w, t)
        _call(w, t, "POST", "/partners/acme/poll")
    text = "\n".join(r.getMessage() + " " + json.dumps(r.__dict__, default=str) for r in caplog.records)
    assert "api GET /api/v1/jobs" in text  # the requests were logged ...
    for t in tokens:
        assert t not in text and t.split(".")[2] not in text  # ... never their tokens


def test_without_configuration_a_bearer_token_is_refused(jwks: Jwks) -> None:
    key = jwks.add("k1")
    code, detail = _call(ApiWorld(), _token(key, "k1"))
    assert code == 401 and "not configured" in detail
