"""Storage clients' transport options: the environment is scanned per request only when a proxy needs it (#14)."""

from __future__ import annotations

from typing import Any

from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

from shared.adapters.http import LeanRequestsTransport, LeanSession, StorageLimits, storage_options, transport_options
from shared.settings import azurite_connection_string

BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _transport(client: Any) -> RequestsTransport:
    transport = client._client._client._pipeline._transport
    while not isinstance(transport, RequestsTransport):  # the storage SDKs wrap the shared transport
        transport = transport._transport
    return transport


def test_a_ca_bundle_alone_is_passed_once_and_the_environment_is_not_scanned_per_request() -> None:
    assert transport_options({"REQUESTS_CA_BUNDLE": BUNDLE, "PATH": "/bin"}) == {
        "use_env_settings": False, "connection_verify": BUNDLE}
    assert transport_options({"CURL_CA_BUNDLE": BUNDLE}) == {"use_env_settings": False, "connection_verify": BUNDLE}
    # requests' own order: REQUESTS_CA_BUNDLE wins over CURL_CA_BUNDLE
    assert transport_options({"CURL_CA_BUNDLE": "/other", "REQUESTS_CA_BUNDLE": BUNDLE})["connection_verify"] == BUNDLE
    assert transport_options({"REQUESTS_CA_BUNDLE": ""}) == {"use_env_settings": False}
    assert transport_options({}) == {"use_env_settings": False}


def test_a_proxy_or_netrc_keeps_the_environment_settings() -> None:
    for name in ("HTTPS_PROXY", "http_proxy", "NO_PROXY", "all_proxy", "NETRC"):
        assert transport_options({name: "x", "REQUESTS_CA_BUNDLE": BUNDLE}) == {"use_env_settings": True}, name


def test_every_storage_client_gets_the_bundle_and_a_session_that_does_not_trust_the_environment() -> None:
    conn = azurite_connection_string()
    env = {"REQUESTS_CA_BUNDLE": BUNDLE}
    for cls, kind in ((BlobServiceClient, "blob"), (QueueServiceClient, "queue"), (TableServiceClient, "table")):
        client = cls.from_connection_string(conn, **storage_options(kind, environ=env))  # type: ignore[arg-type]
        transport = _transport(client)
        assert transport.connection_config.verify == BUNDLE, kind
        assert transport._use_env_settings is False, kind


def test_without_a_proxy_every_storage_client_sends_through_the_lean_session_with_its_limits() -> None:
    conn = azurite_connection_string()
    limits = StorageLimits(connect_timeout=2.5, read_timeout=7.0)
    for cls, kind in ((BlobServiceClient, "blob"), (QueueServiceClient, "queue"), (TableServiceClient, "table")):
        client = cls.from_connection_string(conn, **storage_options(kind, limits, environ={}))  # type: ignore[arg-type]
        transport = _transport(client)
        assert isinstance(transport, LeanRequestsTransport), kind
        config = transport.connection_config
        assert (config.timeout, config.read_timeout) == (2.5, 7.0), kind
        # Blob and Queue: the read size their SDKs give their own transport (downloads stream in these blocks).
        assert config.data_block_size == (4096 if kind == "table" else 256 * 1024), kind
        transport.open()
        assert isinstance(transport.session, LeanSession) and transport.session.trust_env is False, kind
    proxied = storage_options("blob", environ={"HTTPS_PROXY": "http://proxy:3128"})
    assert "transport" not in proxied and proxied["use_env_settings"] is True  # the SDK's own, scanning session
