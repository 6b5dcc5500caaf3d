"""An Entra ID stand-in for the Graph test server: the OAuth 2.0 client-credentials token endpoint (client secret
or a certificate's signed client assertion) over HTTPS, as azure-identity (MSAL) requires.

`azure.identity.ClientSecretCredential(tenant, client_id, secret, authority=authority.url,
disable_instance_discovery=True)` gets real tokens from it (trust `authority.ca_file`, e.g. REQUESTS_CA_BUNDLE);
the tokens are then accepted by the GraphTestServer it was given. `rotate_secret` changes an app's secret the way
a rotation in Entra ID does once the old secret is deleted: the old one is refused (AADSTS7000215) and, with
`revoke_tokens`, the tokens issued with it stop working at Graph (401), as a revoked grant would.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import ssl
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.graph_server.server import GraphTestServer


@dataclass
class App:
    tenant: str
    client_id: str
    secret: str | None = None
    certificate_der: bytes | None = None  # the app registration's certificate (public part)
    token_lifetime: int = 3599  # below 300 s MSAL does not reuse a token: every call asks for a new one
    tokens: set[str] = field(default_factory=set)


@dataclass
class TokenRequest:
    tenant: str
    client_id: str
    kind: str  # "secret" | "assertion"
    granted: bool
    error: str = ""


def self_signed(common_name: str, *, days: int = 30, ip: str | None = None) -> tuple[bytes, bytes, bytes]:
    """(certificate PEM, private key PEM, certificate DER) of a new RSA 2048 self-signed certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days)))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.public_bytes(serialization.Encoding.DER)


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class EntraTestAuthority:
    """Start with `with EntraTestAuthority(graph) as authority:`; `authority.url` is the authority to give
    azure-identity, `authority.ca_file` the certificate to trust for it."""

    def __init__(self, graph: GraphTestServer, *, host: str = "127.0.0.1") -> None:
        self.graph = graph
        self.apps: dict[str, App] = {}
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="wharf-entra-")
        cert_pem, key_pem, _ = self_signed(host, ip=host)
        self.ca_file = Path(self._dir.name) / "authority.pem"
        self.ca_file.write_bytes(cert_pem)
        key_file = Path(self._dir.name) / "authority.key"
        key_file.write_bytes(key_pem)
        handler = type("Handler", (_Handler,), {"authority": self})
        self._httpd = ThreadingHTTPServer((host, 0), handler)
        self._httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.ca_file), str(key_file))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> EntraTestAuthority:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="entra-test-authority", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._dir.cleanup()

    def __enter__(self) -> EntraTestAuthority:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- app registrations ---------------------------------------------------------------------------

    def register_app(self, tenant: str, client_id: str, *, secret: str | None = None,
                     certificate_der: bytes | None = None, token_lifetime: int = 3599) -> App:
        with self._lock:
            app = self.apps[client_id] = App(tenant, client_id, secret, certificate_der, token_lifetime)
            return app

    def rotate_secret(self, client_id: str, secret: str, *, revoke_tokens: bool = False) -> None:
        """The app's secret is now `secret`; the old one is refused. `revoke_tokens`: Graph refuses the tokens
        issued so far (401), so a client holding a cached token has to get a new one."""
        self._rotate(client_id, revoke_tokens, secret=secret)

    def rotate_certificate(self, client_id: str, certificate_der: bytes, *, revoke_tokens: bool = False) -> None:
        self._rotate(client_id, revoke_tokens, certificate_der=certificate_der)

    def _rotate(self, client_id: str, revoke: bool, **change: Any) -> None:
        with self._lock:
            app = self.apps[client_id]
            for k, v in change.items():
                setattr(app, k, v)
            if revoke:
                with self.graph._lock:
                    self.graph.app_tokens.difference_update(app.tokens)
                app.tokens.clear()

    def granted(self, client_id: str) -> list[TokenRequest]:
        return [r for r in self.requests if r.client_id == client_id]

    # --- token endpoint ------------------------------------------------------------------------------

    def _token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        client_id = form.get("client_id", "")
        kind = "assertion" if "client_assertion" in form else "secret"
        with self._lock:
            app = self.apps.get(client_id)
            if form.get("grant_type") != "client_credentials":
                return 400, _oauth_error("unsupported_grant_type", 70003, "grant type not supported")
            if app is None or app.tenant != tenant:
                error = _oauth_error("unauthorized_client", 700016,
                                     f"Application with identifier '{client_id}' was not found in the directory")
                self.requests.append(TokenRequest(tenant, client_id, kind, False, "700016"))
                return 400, error
            ok = (form.get("client_secret") == app.secret and app.secret is not None) if kind == "secret" else \
                self._assertion_ok(app, form.get("client_assertion", ""))
            if not ok:
                self.requests.append(TokenRequest(tenant, client_id, kind, False, "7000215"))
                return 401, _oauth_error("invalid_client", 7000215 if kind == "secret" else 700027,
                                         "Invalid client secret provided." if kind == "secret" else
                                         "Client assertion failed signature validation.")
            token = "entra-" + uuid.uuid4().hex
            app.tokens.add(token)
            with self.graph._lock:
                self.graph.app_tokens.add(token)
            self.requests.append(TokenRequest(tenant, client_id, kind, True))
        return 200, {"token_type": "Bearer", "expires_in": app.token_lifetime, "ext_expires_in": app.token_lifetime,
                     "access_token": token}

    @staticmethod
    def _assertion_ok(app: App, assertion: str) -> bool:
        """A client assertion JWT (RS256 or PS256) signed by the key of the app's registered certificate."""
        if app.certificate_der is None:
            return False
        try:
            header_b64, payload_b64, sig_b64 = assertion.split(".")
            header = json.loads(_b64url(header_b64))
            payload = json.loads(_b64url(payload_b64))
            cert = x509.load_der_x509_certificate(app.certificate_der)
            public = cert.public_key()
            signed = f"{header_b64}.{payload_b64}".encode()
            if not isinstance(public, rsa.RSAPublicKey):
                return False
            pad: Any = padding.PSS(padding.MGF1(hashes.SHA256()), 32) if header.get("alg") == "PS256" \
                else padding.PKCS1v15()
            public.verify(_b64url(sig_b64), signed, pad, hashes.SHA256())
        except (ValueError, KeyError, TypeError, InvalidSignature):
            return False
        thumb = base64.urlsafe_b64encode(hashlib.sha256(app.certificate_der).digest()).decode().rstrip("=")
        sha1 = hashlib.sha1(app.certificate_der, usedforsecurity=False).digest()  # x5t is SHA-1 by definition
        thumb1 = base64.urlsafe_b64encode(sha1).decode().rstrip("=")
        presented = str(header.get("x5t#S256", header.get("x5t", ""))).rstrip("=")
        return (payload.get("sub") == app.client_id and payload.get("iss") == app.client_id
                and float(payload.get("exp", 0)) > dt.datetime.now(dt.UTC).timestamp() and presented in (thumb, thumb1))


def _oauth_error(error: str, code: int, text: str) -> dict[str, Any]:
    return {"error": error, "error_description": f"AADSTS{code}: {text}", "error_codes": [code],
            "timestamp": dt.datetime.now(dt.UTC).isoformat(), "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4())}


class _Handler(BaseHTTPRequestHandler):
    authority: EntraTestAuthority
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        if len(parts) >= 2 and parts[-2:] == [".well-known", "openid-configuration"]:
            tenant = parts[0]
            base = f"{self.authority.url}/{tenant}"
            self._send(200, {"token_endpoint": f"{base}/oauth2/v2.0/token",
                             "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                             "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                             "issuer": f"{base}/v2.0", "jwks_uri": f"{base}/discovery/v2.0/keys",
                             "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                             "response_types_supported": ["code", "id_token", "token"],
                             "subject_types_supported": ["pairwise"],
                             "id_token_signing_alg_values_supported": ["RS256"]})
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        parts = urlsplit(self.path).path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            form = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
            status, payload = self.authority._token(parts[0], form)
            self._send(status, payload)
        else:
            self._send(404, {"error": "not_found"})
