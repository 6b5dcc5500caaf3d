"""HTTP transport options shared by the Azure Storage clients."""

from __future__ import annotations

import os
from typing import Any

# What `requests` reads from the environment when a session trusts it (proxies, CA bundles, .netrc).
_ENV_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "requests_ca_bundle", "curl_ca_bundle",
                 "netrc")


def env_settings_wanted(environ: Any = None) -> bool:
    """True when the environment configures a proxy or CA bundle, so the transport must honour it."""
    env = os.environ if environ is None else environ
    return any(name in {k.lower() for k in env} for name in _ENV_SETTINGS)


def transport_options(environ: Any = None) -> dict[str, Any]:
    """Keyword arguments for an Azure SDK client's transport.

    With no proxy or CA bundle configured, the requests transport is told not to consult the environment: it
    otherwise scans every environment variable on every request (~0.5 ms of CPU each on a Functions worker,
    whose environment is large), which is a fifth of a small file's bookkeeping.
    """
    return {"use_env_settings": env_settings_wanted(environ)}
