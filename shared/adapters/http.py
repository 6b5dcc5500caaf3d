"""HTTP transport options shared by the Azure Storage clients."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Literal

# What `requests` reads from the environment when a session trusts it: proxies and .netrc (case-insensitive
# names), and CA bundles (REQUESTS_CA_BUNDLE, then CURL_CA_BUNDLE: exact names, requests' own order).
_PROXY_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "netrc")
_CA_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
_ENV_SETTINGS = (*_PROXY_SETTINGS, *(name.lower() for name in _CA_BUNDLES))


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
