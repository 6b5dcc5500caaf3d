"""Who is asking: an automation key, an Entra ID bearer token, or a partner API key; and what they may do.

Roles: `Wharf.Read` (GETs), `Wharf.Operate` (poll, replay, resets, content, uploads; implies Read). A partner
key carries only `upload` for its own partner. Reasons are given to the caller; a token's value never is, and
never reaches a log."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

import jwt

from shared.api.config import ApiSettings
from shared.api.http import ApiRequest
from shared.api.problems import Problem

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

READ = "Wharf.Read"
OPERATE = "Wharf.Operate"
UPLOAD = "upload"  # partner keys: upload for `Principal.partner` only
PARTNER_KEY_HEADER = "x-wharf-partner-key"


@dataclass(frozen=True)
class Principal:
    kind: str  # function_key | entra | partner_key
    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    partner: str = ""  # partner keys only

    def may(self, role: str) -> bool:
        if role == READ:
            return READ in self.roles or OPERATE in self.roles
        return role in self.roles


def _unauthorized(reason: str) -> Problem:
    return Problem(401, reason, code="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="wharf"'})


class EntraValidator:
    """Checks Entra ID access tokens: signature with the tenant's JWKS (cached; fetched again once when a token
    names a `kid` not in the cache), issuer, audience, exp, nbf and an algorithm allow-list (asymmetric only)."""

    def __init__(self, cfg: ApiSettings) -> None:
        self._cfg = cfg
        self._algorithms = cfg.allowed_algorithms
        self._jwks = jwt.PyJWKClient(cfg.effective_jwks_url, cache_keys=True, lifespan=cfg.jwks_cache_seconds,
                                     timeout=10, cooldown_duration=cfg.jwks_refresh_cooldown_seconds)

    def validate(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise _unauthorized("the bearer token is not a well-formed JWT") from None
        alg = str(header.get("alg", ""))
        if alg not in self._algorithms:
            raise _unauthorized(f"token algorithm {alg!r} is not allowed (allowed: {', '.join(self._algorithms)})")
        kid = header.get("kid")
        if not kid:
            raise _unauthorized("the token names no signing key (kid)")
        try:
            key = self._jwks.get_signing_key(str(kid))
        except jwt.PyJWKClientConnectionError:
            raise Problem(503, "the identity provider's signing keys could not be fetched",
                          code="jwks-unavailable") from None
        except jwt.PyJWKClientError:
            raise _unauthorized("the token's signing key is not one of the tenant's keys") from None
        try:
            return jwt.decode(token, key.key, algorithms=self._algorithms, audience=self._cfg.audience,
                              issuer=self._cfg.effective_issuer, leeway=self._cfg.leeway_seconds,
                              options={"require": ["exp", "iss", "aud"]})
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _unauthorized("the token is not valid yet (nbf)") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _unauthorized("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise _unauthorized("the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise _unauthorized("the token is not valid") from None


_validators: dict[tuple[str, ...], EntraValidator] = {}
_lock = threading.Lock()


def entra_validator(cfg: ApiSettings) -> EntraValidator:
    """One validator (and JWKS cache) per configuration."""
    key = (cfg.effective_jwks_url, cfg.effective_issuer, cfg.audience, cfg.algorithms,
           str(cfg.jwks_refresh_cooldown_seconds))
    with _lock:
        if key not in _validators:
            _validators[key] = EntraValidator(cfg)
        return _validators[key]


def authenticate(services: Services, cfg: ApiSettings, req: ApiRequest, *, partner: str = "") -> Principal:
    """The caller, or 401. A partner key is checked against `partner` (the route's): a key of another
    partner is refused as if unknown."""
    auth = req.header("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        if not (cfg.audience and cfg.effective_issuer and cfg.effective_jwks_url):
            raise _unauthorized("bearer tokens are not configured (WHARF_AUTH_TENANT_ID, WHARF_AUTH_AUDIENCE)")
        claims = entra_validator(cfg).validate(token.strip())
        roles = claims.get("roles") or []
        name = str(claims.get("preferred_username") or claims.get("upn") or claims.get("appid")
                   or claims.get("azp") or claims.get("oid") or claims.get("sub") or "entra")
        return Principal("entra", name, frozenset(str(r) for r in roles if isinstance(r, str)))
    supplied = req.header("x-functions-key") or req.query.get("code", "")
    if supplied:
        if cfg.function_key and hmac.compare_digest(supplied.encode(), cfg.function_key.encode()):
            return Principal("function_key", "function-key", frozenset({READ, OPERATE}))
        raise _unauthorized("the function key is not valid")
    partner_key = req.header(PARTNER_KEY_HEADER)
    if partner_key:
        from shared.services.partner_keys import check_key

        row = check_key(services, partner, partner_key) if partner else None
        if row is None:
            raise _unauthorized("the partner key is not valid for this partner")
        return Principal("partner_key", f"{partner}/{row.key_id}", frozenset({UPLOAD}), partner=partner)
    session = session_principal(cfg, req)
    if session is not None:
        return session
    raise _unauthorized("credentials required: a bearer token (Entra ID), a function key "
                        "(x-functions-key) or, for uploads, a partner key (X-Wharf-Partner-Key)")


DEV_COOKIE = "wharf_dev"
_SESSION_KINDS = ("easyauth", "dev")  # cookie-borne: their unsafe requests need the CSRF token
_process_secret = secrets.token_hex(32)


def _secret(cfg: ApiSettings) -> bytes:
    return (cfg.console_secret or _process_secret).encode()


def _sign(cfg: ApiSettings, text: str) -> str:
    return hmac.new(_secret(cfg), text.encode(), hashlib.sha256).hexdigest()[:32]


def dev_cookie(cfg: ApiSettings, name: str, role: str) -> str:
    clean = "".join(c for c in name if c.isalnum() or c in "-_.@")[:64] or "developer"
    value = f"{role}|{clean}"
    return f"{value}|{_sign(cfg, value)}"


def csrf_token(cfg: ApiSettings, principal: Principal) -> str:
    return _sign(cfg, f"csrf|{principal.kind}|{principal.name}")


def needs_csrf(principal: Principal) -> bool:
    return principal.kind in _SESSION_KINDS


def _cookies(req: ApiRequest) -> dict[str, str]:
    jar = SimpleCookie()
    try:
        jar.load(req.header("cookie"))
    except CookieError:
        return {}
    return {k: v.value for k, v in jar.items()}


def session_principal(cfg: ApiSettings, req: ApiRequest) -> Principal | None:
    """The console's signed-in user: Easy Auth's principal (Azure) or the development sign-in cookie (local)."""
    if cfg.easyauth_enabled and req.header("x-ms-client-principal"):
        return _easyauth(req)
    if cfg.dev_signin:
        raw = _cookies(req).get(DEV_COOKIE, "")
        role, _, rest = raw.partition("|")
        name, _, sig = rest.partition("|")
        if raw and hmac.compare_digest(sig, _sign(cfg, f"{role}|{name}")) and role in ("reader", "operator"):
            roles = {READ} | ({OPERATE} if role == "operator" else set())
            return Principal("dev", f"dev:{name}", frozenset(roles))
    return None


def _easyauth(req: ApiRequest) -> Principal:
    """X-MS-CLIENT-PRINCIPAL: base64 JSON {auth_typ, name_typ, role_typ, claims: [{typ, val}]} set by App Service
    after it validated the Entra ID sign-in. Anything else is refused."""
    if req.header("x-ms-client-principal-idp").lower() != "aad":
        raise _unauthorized("the signed-in principal is not from Entra ID")
    try:
        data = json.loads(base64.b64decode(req.header("x-ms-client-principal"), validate=False))
        claims = [(str(c["typ"]), str(c["val"])) for c in data["claims"]]
        role_typ = str(data.get("role_typ") or "roles")
        name_typ = str(data.get("name_typ") or "name")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _unauthorized("the signed-in principal header is malformed") from None
    roles = frozenset(v for t, v in claims if t in (role_typ, "roles"))
    name = next((v for t, v in claims if t in (name_typ, "preferred_username", "name")), "entra-user")
    return Principal("easyauth", name[:200], roles)


def authorize(principal: Principal, role: str, *, partner: str = "") -> None:
    """403 with the reason when `principal` may not do what needs `role`."""
    if role == UPLOAD:
        if principal.kind == "partner_key":
            if principal.partner != partner:
                raise Problem(403, f"this partner key is for {principal.partner}, not {partner}", code="forbidden")
            return
        role = OPERATE
    if not principal.may(role):
        raise Problem(403, f"this needs the app role {role}; the caller has "
                           f"{', '.join(sorted(principal.roles)) or 'no roles'}", code="forbidden")
