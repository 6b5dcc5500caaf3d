"""Mailbox over Microsoft Graph with msgraph-sdk: folders, paged messages, attachments streamed from `$value`.

Why `$value` bypasses `.content.get()`: the SDK's primitive "bytes" response reads the whole body
into memory (`response.content`), and its native response handler only sees the response after
httpx has read it too. So the download is built by the SDK (its request builder makes the
RequestInformation: URL template, encoded ids, base URL), authenticated by the same auth provider
(`convert_to_native_async`) and sent through the same httpx client and middleware pipeline (retry
with Retry-After, redirects, telemetry), but with `send(..., stream=True)`; the body is then read in
chunks. Nothing in the download path holds more than one chunk.

The SDK is async; Wharf's services are sync. Each client owns one event loop on a daemon thread
and runs every call there; a stream is pulled one chunk per hop, so back-pressure is preserved.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from azure.core.exceptions import AzureError, ClientAuthenticationError
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from kiota_http.kiota_client_factory import KiotaClientFactory
from kiota_http.middleware import BaseMiddleware, RetryHandler
from kiota_http.middleware.options import RetryHandlerOption
from opentelemetry.trace import SpanKind

with warnings.catch_warnings():
    # msgraph-sdk warns about its own generated classes when they are defined, not when used.
    warnings.simplefilter("ignore", DeprecationWarning)
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.models.attachment_item import AttachmentItem
    from msgraph.generated.models.attachment_type import AttachmentType
    from msgraph.generated.models.body_type import BodyType
    from msgraph.generated.models.email_address import EmailAddress
    from msgraph.generated.models.file_attachment import FileAttachment
    from msgraph.generated.models.item_body import ItemBody
    from msgraph.generated.models.message import Message
    from msgraph.generated.models.recipient import Recipient
    from msgraph.generated.users.item.mail_folders.item.child_folders.child_folders_request_builder import (
        ChildFoldersRequestBuilder,
    )
    from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import MessagesRequestBuilder
    from msgraph.generated.users.item.mail_folders.mail_folders_request_builder import MailFoldersRequestBuilder
    from msgraph.generated.users.item.messages.item.attachments.attachments_request_builder import (
        AttachmentsRequestBuilder,
    )
    from msgraph.generated.users.item.messages.item.attachments.create_upload_session.create_upload_session_post_request_body import (  # noqa: E501
        CreateUploadSessionPostRequestBody,
    )
    from msgraph.generated.users.item.messages.item.move.move_post_request_body import MovePostRequestBody
    from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody
    from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder
    from msgraph_core import GraphClientFactory
    from msgraph_core.middleware import GraphTelemetryHandler
    from msgraph_core.middleware.options import GraphTelemetryHandlerOption

from shared.adapters.secrets import fresh_secret
from shared.domain.errors import ConfigurationError, DependencyUnavailableError, NotFoundError, WharfError
from shared.observability.redaction import register_secret
from shared.observability.tracing import span
from shared.ports import FileToAttach, MailAttachment, MailMessage, OutgoingMail

GRAPH_V1 = "https://graph.microsoft.com/v1.0"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WELL_KNOWN_FOLDERS = frozenset({
    "inbox", "archive", "deleteditems", "drafts", "sentitems", "junkemail", "outbox", "msgfolderroot",
    "clutter", "conversationhistory", "recoverableitemsdeletions", "scheduled", "searchfolders",
})
MESSAGE_FIELDS = ["id", "internetMessageId", "subject", "from", "receivedDateTime", "isRead", "hasAttachments"]
# contentBytes is left out on purpose: without $select Graph inlines every file base64 in the listing.
ATTACHMENT_FIELDS = ["id", "name", "contentType", "size", "isInline", "lastModifiedDateTime"]
DEFAULT_CHUNK = 1024 * 1024
#: Graph's limits for a file attachment: inline in the request below 3 MB, through an upload session up to 150 MB.
INLINE_ATTACHMENT_LIMIT = 3_000_000
UPLOAD_SESSION_LIMIT = 150 * 1024 * 1024
#: One PUT of an upload session: Graph takes at most 4 MB per request; 10 x 320 KiB stays under it.
UPLOAD_CHUNK = 10 * 320 * 1024
_RETRY_STATUSES = frozenset({429, 503, 504})

T = TypeVar("T")
log = logging.getLogger(__name__)


class GraphRequestError(WharfError):
    """Graph refused a request as malformed (HTTP 400): a bug or an unsupported query, not an outage."""


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


class StaticTokenProvider(AccessTokenProvider):
    """A fixed bearer token for the local Graph test server. Refuses any host but loopback, so a
    test token can never be sent to (or stand in for login to) the real Graph."""

    def __init__(self, token: str, allowed_hosts: Sequence[str] = tuple(LOOPBACK_HOSTS)) -> None:
        if not set(allowed_hosts) <= LOOPBACK_HOSTS:
            raise ConfigurationError("a static Graph token is for the local test server only (loopback hosts)")
        self._token = token
        self._validator = AllowedHostsValidator(list(allowed_hosts))

    async def get_authorization_token(self, uri: str, additional_authentication_context: dict[str, Any] | None = None
                                      ) -> str:
        return self._token if self._validator.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._validator


class CappedRetryHandler(RetryHandler):
    """kiota's RetryHandler (429/503/504, Retry-After honoured) with every wait capped.

    kiota waits whatever Retry-After says, uncapped. Here a Retry-After above `max_wait` is not
    waited at all: the throttled response is returned, the call fails as DependencyUnavailableError
    and the poll backs off (breaker, next schedule) instead of parking a worker for minutes.
    """

    def __init__(self, options: RetryHandlerOption, *, max_wait: float, backoff_factor: float = 0.5,
                 jitter: float = 1.0) -> None:
        super().__init__(options)
        if not 0 < max_wait < RetryHandlerOption.MAX_DELAY:
            # kiota skips the retry when the delay reaches MAX_DELAY: a larger cap would disable retries.
            raise ValueError(f"max_wait must be between 0 and {RetryHandlerOption.MAX_DELAY} seconds")
        self.max_wait = max_wait
        self.backoff_factor = backoff_factor
        self.jitter = jitter

    def get_delay_time(self, retry_count: int, response: httpx.Response | None = None,
                       delay: float = RetryHandlerOption.DEFAULT_DELAY) -> float:
        retry_after = self._get_retry_after(response)
        if retry_after:
            return retry_after if retry_after <= self.max_wait else RetryHandlerOption.MAX_DELAY
        # No Retry-After: exponential backoff from `delay`, with jitter so instances spread out.
        backoff = delay + self.backoff_factor * 2 ** retry_count + random.uniform(0, self.jitter)
        return min(backoff, self.max_wait)


class RotatingCredential:
    """An azure-identity TokenCredential built from one Key Vault secret (client secret or certificate) that
    follows the secret's rotation without a restart.

    `read(fresh)` returns the secret (`fresh=True`: bypassing any cache). When Entra ID refuses the credential
    (a token request fails with ClientAuthenticationError) or Graph answers 401 (ReauthenticateHandler), the
    secret is read again once, bypassing the cache; when it changed, a new credential is built from it (its own
    token cache) and the call is tried again, before anything counts as a failure. When it did not change, the
    original refusal stands and is not tried twice. The secret's value is never logged; only a digest is kept
    to compare it.
    """

    def __init__(self, build: Callable[[str], Any], read: Callable[[bool], str], *, name: str = "") -> None:
        self._build, self._read, self.name = build, read, name
        self._lock = threading.Lock()
        value = read(False)
        self._digest = _digest(value)
        self._inner = build(value)
        self.rotations = 0  # how many times a changed secret replaced the credential (for tests and logs)

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        inner = self._inner
        try:
            return inner.get_token(*scopes, **kwargs)
        except ClientAuthenticationError:
            if not self.reread(stale=inner):
                raise
        return self._inner.get_token(*scopes, **kwargs)

    @property
    def current(self) -> Any:
        return self._inner

    def update(self, value: str) -> None:
        """Take a value read elsewhere (the cached secret changed): a new credential when it differs."""
        with self._lock:
            if _digest(value) != self._digest:
                self._replace(value)

    def reread(self, *, stale: Any = None) -> bool:
        """Read the secret again, bypassing the cache. True when the credential now differs from `stale` (the
        one that was refused; default the current one): the secret changed, here or in another thread."""
        with self._lock:
            if stale is not None and self._inner is not stale:
                return True  # another call already replaced it
            value = self._read(True)
            if _digest(value) == self._digest:
                return False
            self._replace(value)
            return True

    def _replace(self, value: str) -> None:
        old, self._inner, self._digest = self._inner, self._build(value), _digest(value)
        self.rotations += 1
        close = getattr(old, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - closing the replaced credential's transport is best effort
                log.debug("closing the replaced Graph credential failed: %s", type(exc).__name__)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if callable(close):
            close()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ReauthenticateHandler(BaseMiddleware):
    """On a 401 from Graph: the credential re-reads its secret once (bypassing the cache); when it changed, the
    request is sent again with a token from the new credential. Otherwise the 401 is returned as it was."""

    def __init__(self, credential: RotatingCredential, tokens: AccessTokenProvider) -> None:
        super().__init__()
        self._credential, self._tokens = credential, tokens  # the auth provider's: same scopes, CAE, hosts

    async def send(self, request: httpx.Request, transport: httpx.AsyncBaseTransport) -> httpx.Response:
        used = self._credential.current
        response = await super().send(request, transport)
        if response.status_code != 401 or "authorization" not in request.headers:
            return response
        if not await asyncio.to_thread(self._credential.reread, stale=used):
            return response
        await response.aread()
        await response.aclose()
        token = await self._tokens.get_authorization_token(str(request.url))
        request.headers["Authorization"] = f"Bearer {token}"
        with span("graph.reauthenticate", {"wharf.secret.name": self._credential.name}):
            return await super().send(request, transport)


class _LoopThread:
    """One asyncio loop on a daemon thread; sync callers submit coroutines to it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()  # do not leave it running on the loop
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


def _error_code(exc: APIError) -> str:
    main = getattr(exc, "error", None)
    return str(getattr(main, "code", "") or "") if main is not None else ""


def _map_status(status: int, code: str, retry_after: str | None, what: str) -> WharfError:
    detail = f"HTTP {status}" + (f" {code}" if code else "")
    if status == 404:
        return NotFoundError(f"{what}: not found ({detail})")
    if status in (401, 403):
        return ConfigurationError(f"{what}: Graph refused the app's credentials or permissions ({detail}); "
                                  "check the app registration, its Mail.ReadWrite (to send: Mail.Send) permission and "
                                  "the secret")
    if status == 400:
        return GraphRequestError(f"{what}: bad request ({detail})")
    if retry_after:
        detail += f", retry after {retry_after}s"
    return DependencyUnavailableError("graph", f"{what}: {detail}")


def _map_error(exc: BaseException, what: str) -> WharfError:
    """Graph/httpx failures as Wharf errors. Messages name the operation and Graph's error code only."""
    if isinstance(exc, APIError):
        headers = exc.response_headers or {}
        retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
        return _map_status(exc.response_status_code or 0, _error_code(exc), retry_after, what)
    code = next((w.rstrip(":") for w in str(getattr(exc, "message", "") or "").split() if w.startswith("AADSTS")),
                "") if isinstance(exc, AzureError) else ""
    if isinstance(exc, ClientAuthenticationError) and code:
        # Entra ID refused the app's credential (after one fresh read of the secret): say which AADSTS code only.
        # (azure-identity also raises ClientAuthenticationError when Entra ID could not be reached: no code.)
        return ConfigurationError(f"{what}: Entra ID refused the app's credential ({code}); "
                                  "check the client secret or certificate in Key Vault and the app registration")
    if isinstance(exc, AzureError):  # the token request did not get an answer (Entra ID unreachable, 5xx)
        return DependencyUnavailableError("graph", f"{what}: token request failed ({type(exc).__name__})")
    if isinstance(exc, httpx.HTTPError):
        return DependencyUnavailableError("graph", f"{what}: {type(exc).__name__}")
    if isinstance(exc, TimeoutError):
        return DependencyUnavailableError("graph", f"{what}: timed out")
    raise exc


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _odata_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _attachment_kind(odata_type: str | None) -> str:
    t = (odata_type or "").lower()
    if t.endswith("itemattachment"):
        return "item"
    if t.endswith("referenceattachment"):
        return "reference"
    return "file"


def app_credential(tenant_id: str, client_id: str, *, client_secret: str | None = None,
                   certificate: str | bytes | None = None, password: str | None = None,
                   authority: str | None = None) -> Any:
    """azure-identity's ClientSecretCredential or CertificateCredential for an app registration. `authority`: the
    Entra ID host (WHARF_GRAPH_AUTHORITY, e.g. https://login.microsoftonline.us; default azure-identity's, which
    also honours AZURE_AUTHORITY_HOST). A loopback authority (the tests' Entra stand-in) skips instance discovery."""
    from azure.identity import CertificateCredential, ClientSecretCredential

    kwargs: dict[str, Any] = {}
    if authority:
        kwargs["authority"] = authority
        if _is_loopback(authority):
            kwargs["disable_instance_discovery"] = True
    if certificate is None:
        return ClientSecretCredential(tenant_id, client_id, client_secret or "", **kwargs)
    data = certificate.encode() if isinstance(certificate, str) else certificate
    if not data.lstrip().startswith(b"-----BEGIN"):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError as exc:
            raise ConfigurationError("the mailbox certificate secret is neither PEM nor base64 PKCS#12") from exc
    return CertificateCredential(tenant_id, client_id, certificate_data=data, password=password, **kwargs)


class GraphMailClient:
    """Mailbox over Microsoft Graph (msgraph-sdk), sync facade over the async SDK.

    Build with `with_client_secret`, `with_certificate` (an Entra app registration with
    application permission Mail.ReadWrite, ideally scoped to the mailbox by an access policy)
    or, for the local Graph test server only, `with_static_token`.

    Retries: 429/503/504 are retried by kiota's RetryHandler (Retry-After honoured) up to
    `max_retries` times; a single wait never exceeds `max_retry_wait` seconds.
    """

    def __init__(self, auth_provider: AuthenticationProvider, *, base_url: str = GRAPH_V1,
                 max_retries: int = 3, retry_delay: float = 3.0, max_retry_wait: float = 60.0,
                 backoff_factor: float = 0.5, jitter: float = 1.0, timeout: float = 60.0,
                 chunk_size: int = DEFAULT_CHUNK,
                 reauthenticate: tuple[RotatingCredential, AccessTokenProvider] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credential = reauthenticate[0] if reauthenticate else None
        self._chunk_size = chunk_size
        self._timeout = timeout
        self._max_retries, self._retry_delay, self._max_retry_wait = max_retries, retry_delay, max_retry_wait
        self._backoff_factor, self._jitter = backoff_factor, jitter
        self._upload_http: httpx.AsyncClient | None = None  # upload URLs are pre-authenticated: no bearer token
        self._loop = _LoopThread("graph-mail")
        http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
                                 base_url=self.base_url, follow_redirects=False)
        # kiota's default pipeline with the retry handler swapped for the capped one, then Graph's telemetry.
        handlers = KiotaClientFactory.get_default_middleware(None)
        retry = CappedRetryHandler(RetryHandlerOption(delay=retry_delay, max_retries=max_retries),
                                   max_wait=max_retry_wait, backoff_factor=backoff_factor, jitter=jitter)
        handlers = [retry if isinstance(h, RetryHandler) else h for h in handlers]
        if reauthenticate is not None:  # outermost: a request refused with 401 goes through the whole chain again
            handlers.insert(0, ReauthenticateHandler(*reauthenticate))
        handlers.append(GraphTelemetryHandler(GraphTelemetryHandlerOption()))
        self._http = GraphClientFactory.create_with_custom_middleware(handlers, client=http)
        self._adapter = GraphRequestAdapter(auth_provider, client=self._http)
        self._adapter.base_url = self.base_url
        self._client = GraphServiceClient(request_adapter=self._adapter)

    # --- construction --------------------------------------------------------------------------

    @classmethod
    def with_credential(cls, credential: Any, *, base_url: str = GRAPH_V1, **options: Any) -> GraphMailClient:
        """Any azure-identity TokenCredential; the scope is `<graph host>/.default`. A RotatingCredential also
        re-reads its secret on a 401 from Graph (ReauthenticateHandler)."""
        from kiota_authentication_azure.azure_identity_authentication_provider import (
            AzureIdentityAuthenticationProvider,
        )

        parts = urlsplit(base_url)
        if parts.scheme != "https" and not _is_loopback(base_url):
            raise ConfigurationError("the Graph base URL must be https")
        host = parts.hostname or ""
        provider = AzureIdentityAuthenticationProvider(credential, scopes=[f"https://{host}/.default"],
                                                       allowed_hosts=[host])
        if isinstance(credential, RotatingCredential):
            options["reauthenticate"] = (credential, provider.access_token_provider)
        return cls(provider, base_url=base_url, **options)

    @classmethod
    def with_client_secret(cls, tenant_id: str, client_id: str, client_secret: str, *, base_url: str = GRAPH_V1,
                           authority: str | None = None, **options: Any) -> GraphMailClient:
        return cls.with_credential(app_credential(tenant_id, client_id, client_secret=client_secret,
                                                  authority=authority), base_url=base_url, **options)

    @classmethod
    def with_certificate(cls, tenant_id: str, client_id: str, certificate: str | bytes, *,
                         password: str | None = None, base_url: str = GRAPH_V1, authority: str | None = None,
                         **options: Any) -> GraphMailClient:
        """`certificate`: PEM (certificate and private key) or base64 PKCS#12, as Key Vault stores them."""
        return cls.with_credential(app_credential(tenant_id, client_id, certificate=certificate, password=password,
                                                  authority=authority), base_url=base_url, **options)

    @classmethod
    def with_app_secret(cls, tenant_id: str, client_id: str, read_secret: Callable[[bool], str], *,
                        certificate: bool = False, authority: str | None = None, base_url: str = GRAPH_V1,
                        secret_name: str = "", **options: Any) -> GraphMailClient:
        """The app's client secret (or certificate, `certificate=True`) read through `read_secret(fresh)`, so an
        authentication failure re-reads it once, bypassing the cache (RotatingCredential)."""
        def build(value: str) -> Any:
            if certificate:
                return app_credential(tenant_id, client_id, certificate=value, authority=authority)
            return app_credential(tenant_id, client_id, client_secret=value, authority=authority)

        return cls.with_credential(RotatingCredential(build, read_secret, name=secret_name), base_url=base_url,
                                   **options)

    @classmethod
    def with_static_token(cls, base_url: str, token: str, **options: Any) -> GraphMailClient:
        """Local Graph test server only: a fixed bearer token, no call to login.microsoftonline.com."""
        if not _is_loopback(base_url):
            raise ConfigurationError("a static Graph token is only accepted for a loopback base URL (the test server)")
        host = urlsplit(base_url).hostname or "127.0.0.1"
        provider = BaseBearerTokenAuthenticationProvider(StaticTokenProvider(token, [host]))
        return cls(provider, base_url=base_url, **options)

    def close(self) -> None:
        try:
            self._loop.run(self._http.aclose(), timeout=5)
            if self._upload_http is not None:
                self._loop.run(self._upload_http.aclose(), timeout=5)
        finally:
            self._loop.stop()

    def __enter__(self) -> GraphMailClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------

    def _user(self, mailbox: str) -> UserItemRequestBuilder:
        return self._client.users.by_user_id(mailbox)

    def _call(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        parts = urlsplit(self.base_url)
        attrs = {"server.address": parts.hostname, "server.port": parts.port, "wharf.graph.operation": what}
        with span("graph.request", attrs, kind=SpanKind.CLIENT):
            try:
                return self._loop.run(coro)
            except (APIError, httpx.HTTPError, TimeoutError, AzureError) as exc:
                raise _map_error(exc, what) from exc

    # --- Mailbox ---------------------------------------------------------------------------------

    def resolve_folder(self, mailbox: str, path: str) -> str:
        parts = [p.strip() for p in path.split("/") if p.strip()]
        if not parts:
            raise ConfigurationError("empty mail folder path")
        folders = self._user(mailbox).mail_folders
        first = parts[0]
        if first.lower() in WELL_KNOWN_FOLDERS:
            found = self._call(folders.by_mail_folder_id(first.lower()).get(), f"folder {first}")
            folder_id = found.id if found else None
        else:
            query = MailFoldersRequestBuilder.MailFoldersRequestBuilderGetQueryParameters(
                filter=f"displayName eq {_odata_string(first)}", select=["id", "displayName"], top=10)
            page = self._call(folders.get(RequestConfiguration(query_parameters=query)), f"folder {first}")
            folder_id = next((f.id for f in (page.value if page else None) or []), None)
        if not folder_id:
            raise NotFoundError(f"mail folder {first!r} not found")
        walked = first
        for part in parts[1:]:
            walked += "/" + part
            child_query = ChildFoldersRequestBuilder.ChildFoldersRequestBuilderGetQueryParameters(
                filter=f"displayName eq {_odata_string(part)}", select=["id", "displayName"], top=10)
            children = self._call(
                folders.by_mail_folder_id(folder_id).child_folders.get(
                    RequestConfiguration(query_parameters=child_query)), f"folder {walked}")
            folder_id = next((f.id for f in (children.value if children else None) or []), None)
            if not folder_id:
                raise NotFoundError(f"mail folder {walked!r} not found")
        return folder_id

    def list_messages(
        self, mailbox: str, folder_id: str, *, unread_only: bool = False, with_attachments: bool = False,
        received_after: datetime | None = None, page_size: int = 50,
    ) -> Iterator[MailMessage]:
        clauses = []
        # Graph requires $orderby properties to lead the $filter ("InefficientFilter" otherwise).
        if received_after is not None:
            clauses.append(f"receivedDateTime ge {_odata_datetime(received_after)}")
        if unread_only:
            clauses.append("isRead eq false")
        if with_attachments:
            clauses.append("hasAttachments eq true")
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=" and ".join(clauses) or None, top=page_size, select=MESSAGE_FIELDS,
            orderby=["receivedDateTime asc"] if received_after is not None else None)
        builder = self._user(mailbox).mail_folders.by_mail_folder_id(folder_id).messages
        page = self._call(builder.get(RequestConfiguration(query_parameters=query)), "list messages")
        while page is not None:
            for m in page.value or []:
                yield self._message(m)
            if not page.odata_next_link:
                return
            page = self._call(builder.with_url(page.odata_next_link).get(), "list messages (next page)")

    @staticmethod
    def _message(m: Message) -> MailMessage:
        sender = ""
        if m.from_ and m.from_.email_address and m.from_.email_address.address:
            sender = m.from_.email_address.address.strip().lower()
        return MailMessage(
            id=str(m.id), internet_message_id=m.internet_message_id or "", sender=sender, subject=m.subject or "",
            received_at=m.received_date_time or datetime.fromtimestamp(0, UTC), is_read=bool(m.is_read),
            has_attachments=bool(m.has_attachments),
        )

    def list_attachments(self, mailbox: str, message_id: str) -> list[MailAttachment]:
        query = AttachmentsRequestBuilder.AttachmentsRequestBuilderGetQueryParameters(select=ATTACHMENT_FIELDS)
        builder = self._user(mailbox).messages.by_message_id(message_id).attachments
        page = self._call(builder.get(RequestConfiguration(query_parameters=query)), "list attachments")
        out: list[MailAttachment] = []
        while page is not None:
            for a in page.value or []:
                out.append(MailAttachment(
                    id=str(a.id), name=a.name or "", content_type=a.content_type or "application/octet-stream",
                    size=int(a.size or 0), kind=_attachment_kind(a.odata_type), is_inline=bool(a.is_inline)))
            next_link = page.odata_next_link
            if not next_link:
                break
            page = self._call(builder.with_url(next_link).get(), "list attachments (next page)")
        return out

    def open_attachment(self, mailbox: str, message_id: str, attachment_id: str) -> Iterator[bytes]:
        # The SDK has no builder for an attachment's `$value`: take the attachment item builder's URL
        # template (ids encoded by the SDK) and path, and address the raw stream under it.
        item = self._user(mailbox).messages.by_message_id(message_id).attachments.by_attachment_id(attachment_id)
        return self._stream_value(item, "application/octet-stream", "download attachment")

    def open_mime(self, mailbox: str, message_id: str) -> Iterator[bytes]:
        """A message's MIME source through `$value`, streamed (the SDK's `content.get()` reads it whole)."""
        item = self._user(mailbox).messages.by_message_id(message_id)
        return self._stream_value(item, "message/rfc822", "download message MIME")

    def _stream_value(self, item: Any, accept: str, what: str) -> Iterator[bytes]:
        request_info = RequestInformation(Method.GET, item.url_template.split("{?", 1)[0] + "/$value",
                                          dict(item.path_parameters))
        request_info.headers.try_add("Accept", accept)

        async def start() -> httpx.Response:
            self._adapter.set_base_url_for_request_information(request_info)  # a 401 is re-authenticated below
            request = await self._adapter.convert_to_native_async(request_info)
            response = await self._http.send(request, stream=True)
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                raise _status_error(response, what)
            return response

        response = self._call(start(), what)
        expected = response.headers.get("Content-Length")
        received = 0
        chunks = response.aiter_bytes(self._chunk_size)
        try:
            while True:
                try:
                    chunk = self._loop.run(_next_chunk(chunks), timeout=self._timeout * 2)
                except StopAsyncIteration:
                    break
                except (httpx.HTTPError, TimeoutError) as exc:
                    raise _map_error(exc, what) from exc
                received += len(chunk)
                yield chunk
            if expected is not None and received != int(expected):
                raise DependencyUnavailableError("graph", f"{what}: got {received} of {expected} bytes")
        finally:
            # A stream its caller dropped on an error (storage gone mid-upload) may be closed only when the process
            # exits, by then the loop thread no longer runs: waiting on it gave a 10 s pause and a traceback
            # after a clean "error:" line. The connection goes with the process.
            if not sys.is_finalizing():
                self._loop.run(response.aclose(), timeout=10)

    def mark_read(self, mailbox: str, message_id: str) -> None:
        self._call(self._user(mailbox).messages.by_message_id(message_id).patch(Message(is_read=True)), "mark read")

    def move(self, mailbox: str, message_id: str, folder_id: str) -> str:
        moved = self._call(self._user(mailbox).messages.by_message_id(message_id).move.post(
            MovePostRequestBody(destination_id=folder_id)), "move message")
        if moved is None or not moved.id:
            raise DependencyUnavailableError("graph", "move message: no message in the response")
        return str(moved.id)

    # --- MailSender ------------------------------------------------------------------------------

    @staticmethod
    def _outgoing(mail: OutgoingMail) -> Message:
        def recipients(addresses: Sequence[str]) -> list[Recipient]:
            return [Recipient(email_address=EmailAddress(address=a)) for a in addresses]

        return Message(
            subject=mail.subject, internet_message_id=mail.internet_message_id,
            body=ItemBody(content_type=BodyType.Html if mail.html else BodyType.Text, content=mail.body),
            to_recipients=recipients(mail.to), cc_recipients=recipients(mail.cc),
            bcc_recipients=recipients(mail.bcc), is_delivery_receipt_requested=mail.receipt)

    def send_mail(self, mailbox: str, mail: OutgoingMail, attachment: FileToAttach | None = None) -> None:
        message = self._outgoing(mail)
        if attachment is not None:
            if attachment.size >= INLINE_ATTACHMENT_LIMIT:
                raise ValueError(f"{attachment.size} bytes is too large for sendMail; use a draft and an upload "
                                 "session")
            data = b"".join(attachment.chunks)  # under 3 MB: what sendMail carries (base64) in one request
            message.attachments = [FileAttachment(odata_type="#microsoft.graph.fileAttachment", name=attachment.name,
                                                  content_type=attachment.content_type, content_bytes=data)]
        self._call(self._user(mailbox).send_mail.post(SendMailPostRequestBody(message=message,
                                                                              save_to_sent_items=True)), "sendMail")

    def create_draft(self, mailbox: str, mail: OutgoingMail) -> str:
        draft = self._call(self._user(mailbox).messages.post(self._outgoing(mail)), "create draft")
        if draft is None or not draft.id:
            raise DependencyUnavailableError("graph", "create draft: no message in the response")
        return str(draft.id)

    def send_draft(self, mailbox: str, draft_id: str) -> None:
        self._call(self._user(mailbox).messages.by_message_id(draft_id).send.post(), "send draft")

    def delete_message(self, mailbox: str, message_id: str) -> None:
        self._call(self._user(mailbox).messages.by_message_id(message_id).delete(), "delete message")

    def find_by_internet_message_id(self, mailbox: str, folder: str, internet_message_id: str) -> list[MailMessage]:
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=f"internetMessageId eq {_odata_string(internet_message_id)}", select=MESSAGE_FIELDS, top=10)
        builder = self._user(mailbox).mail_folders.by_mail_folder_id(folder).messages
        page = self._call(builder.get(RequestConfiguration(query_parameters=query)), f"find message in {folder}")
        return [self._message(m) for m in (page.value if page else None) or []]

    def upload_attachment(self, mailbox: str, draft_id: str, attachment: FileToAttach, *,
                          chunk_size: int = UPLOAD_CHUNK) -> int:
        """createUploadSession on the draft, then the bytes PUT to its upload URL in order, `chunk_size` at a
        time with `Content-Range: bytes a-b/total`. Memory: one chunk. The upload URL carries its own token: it
        is registered as a secret (never logged) and sent without the bearer token, as Graph requires."""
        if attachment.size > UPLOAD_SESSION_LIMIT:
            raise ValueError(f"{attachment.size} bytes is over Graph's {UPLOAD_SESSION_LIMIT} byte attachment limit")
        if not 0 < chunk_size <= 4 * 1024 * 1024:
            raise ValueError("chunk_size must be between 1 byte and 4 MiB")
        body = CreateUploadSessionPostRequestBody(attachment_item=AttachmentItem(
            attachment_type=AttachmentType.File, name=attachment.name, size=attachment.size,
            content_type=attachment.content_type))
        session = self._call(self._user(mailbox).messages.by_message_id(draft_id).attachments
                             .create_upload_session.post(body), "create upload session")
        url = session.upload_url if session is not None else None
        if not url:
            raise DependencyUnavailableError("graph", "create upload session: no upload URL in the response")
        register_secret(url)
        query = urlsplit(url).query
        for part in query.split("&"):
            register_secret(part.partition("=")[2])
        sent = 0
        with span("graph.upload_session", {"file.size": attachment.size, "wharf.chunk_size": chunk_size}) as s:
            for chunk in _reblock(attachment.chunks, chunk_size):
                if sent + len(chunk) > attachment.size:
                    raise DependencyUnavailableError("graph", "upload session: the file is longer than its size")
                self._loop.run(self._put_range(url, chunk, sent, attachment.size), timeout=self._timeout * 4)
                sent += len(chunk)
            s.set_attribute("wharf.bytes_uploaded", sent)
        if sent != attachment.size:
            raise DependencyUnavailableError("graph", f"upload session: read {sent} of {attachment.size} bytes")
        return sent

    async def _put_range(self, url: str, chunk: bytes, start: int, total: int) -> None:
        """One PUT of the upload session; 429/503/504 (and a lost connection) retried honouring Retry-After."""
        if self._upload_http is None:
            self._upload_http = httpx.AsyncClient(timeout=httpx.Timeout(self._timeout, connect=min(self._timeout,
                                                                                                  15.0)))
        what = f"upload bytes {start}-{start + len(chunk) - 1}/{total}"
        headers = {"Content-Range": f"bytes {start}-{start + len(chunk) - 1}/{total}",
                   "Content-Type": "application/octet-stream", "Content-Length": str(len(chunk))}
        for attempt in range(self._max_retries + 1):
            retry_after: str | None = None
            try:
                # Not `content=chunk`: the body goes through a one-shot stream that lets go of the chunk once sent.
                # httpx's Response and its BoundAsyncStream refer to each other, so every response is cyclic
                # garbage that keeps its Request (and a `content=` body) alive until the cyclic collector's old
                # generation runs; in a process with the SDK loaded that is rarely, and a 30 MiB upload kept
                # ~28 MiB of sent chunks (#15).
                response = await self._upload_http.put(url, content=_SentOnce(chunk), headers=headers)
            except httpx.TransportError as exc:
                if attempt >= self._max_retries:
                    raise DependencyUnavailableError("graph", f"{what}: {type(exc).__name__}") from None
            else:
                if response.status_code in (200, 201):
                    return
                retry_after = response.headers.get("Retry-After")
                if response.status_code not in _RETRY_STATUSES or attempt >= self._max_retries:
                    raise _status_error(response, what)
            wait = self._retry_wait(attempt, retry_after)
            if wait is None:
                raise DependencyUnavailableError("graph", f"{what}: throttled, retry after {retry_after}s")
            await asyncio.sleep(wait)

    def _retry_wait(self, attempt: int, retry_after: str | None) -> float | None:
        """Retry-After when given (None when over the cap: not waited), else the client's backoff."""
        if retry_after:
            try:
                seconds = float(retry_after)
            except ValueError:
                seconds = self._retry_delay
            return seconds if seconds <= self._max_retry_wait else None
        backoff = self._retry_delay + self._backoff_factor * 2 ** attempt + random.uniform(0, self._jitter)
        return min(backoff, self._max_retry_wait)


class _SentOnce:
    """A request body that hands its bytes to the transport once and keeps no reference to them after."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        data, self._data = self._data, None
        if data is None:
            raise RuntimeError("a request body is sent once; a retry builds a new one")
        yield data


def _reblock(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Chunks of exactly `size` bytes (the last one shorter); holds at most one chunk and one input block. An input
    block that is already one whole chunk passes through uncopied (the blob is read in ranges of the upload's
    chunk size), else each chunk is copied once out of the buffer."""
    buf = bytearray()
    for piece in chunks:
        if not buf and len(piece) == size:
            yield piece
            continue
        buf += piece
        del piece
        while len(buf) >= size:
            with memoryview(buf) as view:
                out = bytes(view[:size])
            del buf[:size]
            yield out
            del out
    if buf:
        yield bytes(buf)


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    return await chunks.__anext__()


def _status_error(response: httpx.Response, what: str) -> WharfError:
    """The same mapping as for SDK calls, for the one request sent outside the SDK's response handling."""
    try:
        code = str(response.json().get("error", {}).get("code", ""))
    except ValueError:
        code = ""
    return _map_status(response.status_code, code, response.headers.get("Retry-After"), what)


_CLIENTS: dict[tuple[str, ...], GraphMailClient] = {}
_CLIENTS_LOCK = threading.Lock()


def mailbox_client(auth: Any, secrets: Any, *, base_url: str = GRAPH_V1, local_token: str | None = None,
                   authority: str | None = None, **options: Any) -> GraphMailClient:
    """The client for a partner's app registration (the catalogue's `mailbox.auth`), cached per
    process so tokens and connections are reused across polls.

    A loopback `base_url` (the Graph test server) takes `local_token` instead and never calls
    Entra ID, unless an `authority` is given (the tests' Entra stand-in). Secret values are read from
    `secrets` and never logged. Rotation: the client's RotatingCredential takes a changed cached value
    here, and re-reads the secret bypassing the cache when Entra ID or Graph refuses it (once, before the
    call counts as failed).
    """
    if _is_loopback(base_url) and not authority:
        if not local_token:
            raise ConfigurationError("GRAPH_BASE_URL is a local test server: set WHARF_GRAPH_LOCAL_TOKEN to its token")
        token = local_token
        key: tuple[str, ...] = ("static", base_url, hashlib.sha256(token.encode()).hexdigest())
        with _CLIENTS_LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = GraphMailClient.with_static_token(base_url, token, **options)
            return _CLIENTS[key]
    name = auth.certificate_secret or auth.client_secret_secret
    key = ("app", base_url, authority or "", auth.tenant_id, auth.client_id, name)

    def read(fresh: bool) -> str:
        return fresh_secret(secrets, name) if fresh else str(secrets.get(name))

    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = GraphMailClient.with_app_secret(
                auth.tenant_id, auth.client_id, read, certificate=bool(auth.certificate_secret), authority=authority,
                base_url=base_url, secret_name=name, **options)
            return client
    if client.credential is not None:
        client.credential.update(read(False))  # the cached value changed (its ttl ran out): use it now
    return client


class GraphMailSenders:
    """MailSenderFactory: the GraphMailClient that sends from a mailbox with an app registration (`auth`)."""

    def __init__(self, secrets: Any, *, base_url: str = GRAPH_V1, local_token: str | None = None,
                 authority: str | None = None, **options: Any) -> None:
        self._secrets, self._base_url, self._local_token, self._options = secrets, base_url, local_token, options
        self._authority = authority

    def open(self, mailbox: str, auth: Any) -> GraphMailClient:
        return mailbox_client(auth, self._secrets, base_url=self._base_url, local_token=self._local_token,
                              authority=self._authority, **self._options)


class GraphMailboxes:
    """MailboxFactory: the GraphMailClient for a partner's `mailbox` catalogue block."""

    def __init__(self, secrets: Any, *, base_url: str = GRAPH_V1, local_token: str | None = None,
                 authority: str | None = None, **options: Any) -> None:
        self._secrets = secrets
        self._base_url = base_url
        self._local_token = local_token
        self._authority = authority
        self._options = options

    def open(self, partner_id: str, config: Any) -> GraphMailClient:
        return mailbox_client(config.auth, self._secrets, base_url=self._base_url, local_token=self._local_token,
                              authority=self._authority, **self._options)
