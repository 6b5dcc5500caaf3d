"""What `wharf` prints, and exits with, when a command fails: one line naming what failed, never a traceback
(`wharf --debug ...` adds it) and never a secret (URLs without their query strings, messages redacted)."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.observability.redaction import redact

EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and failed (the message says why)
EXIT_NOT_FOUND = 2  # what was asked for does not exist (argparse's usage errors exit 2 too)
EXIT_STORAGE = 3  # storage could not be reached, timed out, refused the credentials or answered an error
EXIT_NOT_SET_UP = 4  # a table, queue or container Wharf needs does not exist: run `wharf resources ensure`

_MISSING = {"TableNotFound": "table", "QueueNotFound": "queue", "ContainerNotFound": "container"}
_ERRNO_TEXT = {errno.ECONNREFUSED: "connection refused", errno.ETIMEDOUT: "timed out",
               errno.EHOSTUNREACH: "host unreachable", errno.ENETUNREACH: "network unreachable",
               errno.ECONNRESET: "connection reset"}


@dataclass(frozen=True)
class Failure:
    code: int
    message: str


def describe(exc: BaseException) -> Failure | None:
    """One line and an exit code for an Azure SDK error a command let through; None for anything else."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, HttpResponseError) and getattr(exc, "response", None) is not None:
        return _http_failure(exc)
    if isinstance(exc, ClientAuthenticationError):  # no response: the credential itself could not be had
        first = (str(exc).strip().splitlines() or ["no details"])[0]
        return Failure(EXIT_STORAGE, redact(f"error: no Azure credential for storage: {first[:300]}"))
    if isinstance(exc, ServiceRequestError):
        service, where = _endpoint(exc)
        return Failure(EXIT_STORAGE, redact(f"error: {service} at {where} is unreachable ({_cause(exc)})"))
    if isinstance(exc, ServiceResponseError):
        service, where = _endpoint(exc)
        return Failure(EXIT_STORAGE, redact(f"error: {service} at {where} did not answer ({_cause(exc)})"))
    return None


def _http_failure(exc: BaseException) -> Failure:
    from azure.core.exceptions import ClientAuthenticationError

    response = getattr(exc, "response", None)
    url = str(getattr(getattr(response, "request", None), "url", "") or "")
    service, where = _service(url)
    raw_code = getattr(exc, "error_code", None)
    code = str(getattr(raw_code, "value", raw_code) or "")
    status = getattr(exc, "status_code", None) or getattr(response, "status_code", "?")
    if code in _MISSING:
        name = _resource_name(url)
        what = f"the {_MISSING[code]} {name}" if name else f"a {_MISSING[code]} Wharf needs"
        return Failure(EXIT_NOT_SET_UP, redact(f"error: {what} does not exist in {service} at {where}: "
                                               "run `wharf resources ensure`"))
    if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
        detail = f"HTTP {status}" + (f" {code}" if code else "")
        return Failure(EXIT_STORAGE, redact(f"error: {service} at {where} refused the credentials ({detail})"))
    detail = f"HTTP {status}" + (f" {code}" if code else "")
    return Failure(EXIT_STORAGE, redact(f"error: {service} at {where} answered {detail}"))


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, what it wraps (`inner_exception`, urllib3's `reason`) and what caused it, in order."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out and len(out) < 20:
        out.append(current)
        reason = getattr(current, "reason", None)
        inner = getattr(current, "inner_exception", None)
        current = next((e for e in (inner, reason if isinstance(reason, BaseException) else None,
                                    current.__cause__, current.__context__) if isinstance(e, BaseException)), None)
    return out


def _cause(exc: BaseException) -> str:
    for e in _chain(exc):
        if isinstance(e, socket.gaierror):
            return "host name not resolved"
        if isinstance(e, TimeoutError) or type(e).__name__ in ("ConnectTimeoutError", "ReadTimeoutError"):
            return "timed out"
        if isinstance(e, OSError) and e.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[e.errno]
        if type(e).__name__ == "SSLError":
            return "TLS failed"
    return "connection failed"


def _endpoint(exc: BaseException) -> tuple[str, str]:
    """(what, where) from the connection urllib3 tried: `table storage`, `http://127.0.0.1:10002`."""
    for e in _chain(exc):
        conn = getattr(e, "conn", None) or getattr(e, "pool", None)  # urllib3's connection, or its pool
        host = getattr(conn, "host", None)
        if isinstance(host, str) and host:
            scheme = getattr(conn, "scheme", None) or ("https" if "HTTPS" in type(conn).__name__ else "http")
            port = getattr(conn, "port", None)
            return _service(f"{scheme}://{host}" + (f":{port}" if port else ""))
        url = getattr(getattr(e, "request", None), "url", None)
        if url:
            return _service(str(url))
    return "storage", "the configured endpoint"


def _service(url: str) -> tuple[str, str]:
    """(`table storage`, `scheme://host[:port]`) for a request URL (its path and query string left out)."""
    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the configured endpoint"
    host = (parts.hostname or "").lower()
    for service in ("table", "queue", "blob"):
        if f".{service}." in host:
            return f"{service} storage", where
    port = parts.port
    known = _configured_ports()
    if port is not None and port in known:
        return f"{known[port]} storage", where
    return "storage", where


def _configured_ports() -> dict[int, str]:
    """Port -> service of the endpoints in the storage connection string (Azurite's 10000-10002, or others)."""
    import os

    conn = os.environ.get("AzureWebJobsStorage", "")
    if conn.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
        from shared.settings import azurite_connection_string

        conn = azurite_connection_string()
    out: dict[int, str] = {}
    for part in conn.split(";"):
        key, _, value = part.partition("=")
        service = {"blobendpoint": "blob", "queueendpoint": "queue", "tableendpoint": "table"}.get(key.strip().lower())
        if service:
            try:
                port = urlsplit(value.strip()).port
            except ValueError:
                continue
            if port is not None:
                out[port] = service
    return out


def _resource_name(url: str) -> str:
    """`IntegrationJob` from `.../devstoreaccount1/IntegrationJob()?...` (path-style) or `.../IntegrationJob(...)`."""
    parts = urlsplit(url)
    segments = [s for s in parts.path.split("/") if s]
    if segments and _path_style(parts.hostname or ""):
        segments = segments[1:]  # the account name comes first on Azurite and IP endpoints
    if not segments:
        return ""
    name = re.split(r"[(]", segments[0], maxsplit=1)[0]
    return name if re.fullmatch(r"[A-Za-z0-9-]{1,63}", name) else ""


def _path_style(host: str) -> bool:
    if host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare name (a container's host name on a compose network)
    return True
