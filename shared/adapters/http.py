"""HTTP transport options shared by the Azure Storage clients."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import timedelta
from time import perf_counter
from typing import Any, Literal

import requests
from azure.core.pipeline.transport import RequestsTransport
from requests.structures import CaseInsensitiveDict

# What `requests` reads from the environment when a session trusts it: proxies and .netrc (case-insensitive
# names), and CA bundles (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE: exact names, requests' own order).
_PROXY_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "netrc")
_CA_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
_ENV_SETTINGS = (*_PROXY_SETTINGS, *(name.lower() for name in _CA_BUNDLES))
_STORAGE_BLOCK = 256 * 1024  # what the Blob and Queue SDKs give their own transport (DATA_BLOCK_SIZE)


def env_settings_wanted(environ: Any = None) -> bool:
    """True when the environment configures a proxy or CA bundle, so the transport must honour it."""
    env = os.environ if environ is None else environ
    return any(name in {k.lower() for k in env} for name in _ENV_SETTINGS)


def transport_options(environ: Any = None) -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client's transport.

    With no proxy configured, the requests transport is told not to consult the environment: it otherwise
    scans every environment variable on every request (proxies, bypass lists, ~/.netrc; ~0.5 ms of CPU each on
    a Functions worker, whose environment is large), which is a fifth of a small file's bookkeeping. A CA bundle
    alone (REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, as many containers set) does not need that scan: it is read
    once here and given to the transport as `connection_verify`, which is what requests would do with it.
    """
    env = os.environ if environ is None else environ
    if any(name in {k.lower() for k in env} for name in _PROXY_SETTINGS):
        return {"use_env_settings": True}
    options: dict[str, Any] = {"use_env_settings": False}
    bundle = next((env[name] for name in _CA_BUNDLES if env.get(name)), None)
    if bundle:
        options["connection_verify"] = bundle
    return options


class LeanSession(requests.Session):
    """A requests session for the storage clients that skips what they never use: cookies (storage does not set
    any; this session neither stores nor sends them), auth objects and hooks (the SDK's policies sign and inspect
    requests), proxies and the environment (the session is used only when `transport_options` found no proxy
    or NETRC setting), redirects (azure-core's RedirectPolicy follows them; the transport asks requests not to).

    All that costs ~0.2 ms of CPU per call in `Session.request` above the adapter's send (a 10 KiB Put Blob's
    client side measured 679 µs on requests' session, 471 µs on this one: decision 194). A call that asks for
    any of it (or a session whose state holds some) takes requests' own path unchanged."""

    def request(self, method: str, url: str, params: Any = None, data: Any = None,  # type: ignore[override]
                headers: Any = None, cookies: Any = None, files: Any = None, auth: Any = None, timeout: Any = None,
                allow_redirects: bool = True, proxies: Any = None, hooks: Any = None, stream: bool | None = None,
                verify: Any = None, cert: Any = None, json: Any = None) -> requests.Response:
        if (allow_redirects or self.trust_env or params or cookies or files or auth or proxies or hooks
                or json is not None or len(self.cookies) or self.auth or self.params or self.proxies
                or any(self.hooks.values())):
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert,
                                   json=json)
        merged: CaseInsensitiveDict[Any] = CaseInsensitiveDict(self.headers)
        merged.update(headers or {})
        prep = requests.PreparedRequest()
        prep.prepare_method(method)
        prep.prepare_url(url, None)
        prep.prepare_headers({k: v for k, v in merged.items() if v is not None})
        prep.prepare_body(data, None, None)
        prep.prepare_auth(None, url)  # credentials in the URL's userinfo only (storage URLs have none)
        stream = self.stream if stream is None else stream
        adapter = self.get_adapter(url=prep.url or "")
        start = perf_counter()
        response = adapter.send(prep, stream=stream, timeout=timeout,
                                verify=self.verify if verify is None else verify,
                                cert=self.cert if cert is None else cert, proxies={})
        response.elapsed = timedelta(seconds=perf_counter() - start)
        if not stream:
            response.content  # noqa: B018 - read the body now, as requests does
        return response


class LeanRequestsTransport(RequestsTransport):
    """azure-core's RequestsTransport on a LeanSession (everything else, its configuration included, is its own)."""

    session: requests.Session | None

    def open(self) -> None:
        if not self.session and self._session_owner:
            self.session = LeanSession()
            self._init_session(self.session)
        super().open()


@dataclass(frozen=True)
class StorageLimits:
    """How long one storage call may take before it fails (WHARF_STORAGE_* settings; README "Operating").

    The SDKs' defaults wait out a storage that is gone for a long time (Blob and Queue: 3 retries 15 s, 18 s and
    24 s apart, about 80 s a call; Tables: up to 10 retries): a poll then spends minutes on every file. Bounded
    here: `retries` retries after the first try, `backoff` seconds before the first and doubling after (so
    1 + 2 + 4 s with the defaults), a connection given `connect_timeout` seconds and a response `read_timeout`
    seconds of silence."""

    retries: int = 3
    backoff: float = 1.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0


def storage_options(kind: Literal["blob", "queue", "table"], limits: StorageLimits | None = None,
                    environ: Any = None) -> dict[str, Any]:
    """Keyword arguments for a Blob, Queue or Table service client: the transport's (`transport_options`),
    timeouts and a bounded retry policy (Blob and Queue: the storage SDK's ExponentialRetry with the waits
    above; Tables: azure-core's RetryPolicy, whose first retry does not wait)."""
    lim = limits or StorageLimits()
    options: dict[str, Any] = {**transport_options(environ), "connection_timeout": lim.connect_timeout,
                               "read_timeout": lim.read_timeout}
    if not options["use_env_settings"]:
        # The lean session (no cookies, hooks, proxies or environment), configured as the SDK would configure its
        # own RequestsTransport: the same timeouts, CA bundle and, for Blob and Queue, the storage SDK's read size.
        transport = {k: v for k, v in options.items() if k != "use_env_settings"}
        if kind != "table":
            transport["connection_data_block_size"] = _STORAGE_BLOCK
        options["transport"] = LeanRequestsTransport(use_env_settings=False, **transport)
    retries = max(0, lim.retries)
    if kind == "table":
        # azure-core waits backoff * 2 ** (n - 1) before retry n > 1; every kind of error counts against the total.
        options.update(retry_total=retries, retry_connect=retries, retry_read=retries, retry_status=retries,
                       retry_backoff_factor=lim.backoff, retry_backoff_max=max(lim.backoff * 2 ** retries, 1.0))
    else:
        options["retry_policy"] = _storage_retry(kind, lim.backoff, retries)
    return options


def _storage_retry(kind: Literal["blob", "queue"], backoff: float, retries: int) -> Any:
    """The storage SDK's ExponentialRetry (which retries what it should: connection errors, timeouts, 408, 5xx
    but 501/505) with waits of `backoff`, 2x, 4x ... seconds, +-25 % jitter; its own formula
    (initial + base ** n) cannot start below `base` seconds nor double from a small start."""
    if kind == "blob":
        from azure.storage.blob import ExponentialRetry
    else:
        from azure.storage.queue import ExponentialRetry  # type: ignore[assignment]

    class BoundedRetry(ExponentialRetry):
        def get_backoff_time(self, settings: dict[str, Any]) -> float:
            wait = backoff * 2 ** max(0, int(settings.get("count", 1)) - 1)
            return random.uniform(wait * 0.75, wait * 1.25)

    return BoundedRetry(retry_total=retries)
