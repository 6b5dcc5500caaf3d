"""uploads:prepare: a short-lived URL to PUT one blob into drop/{partner}/ (create only, nothing else).

In Azure (identity-based storage) a user delegation SAS signed with a key Entra ID gives the app's identity;
locally (a connection string with an account key, Azurite) an account-key SAS, marked `local_account_sas`."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from shared.api.models import PrepareUpload
from shared.api.problems import Problem
from shared.domain.jobs import utcnow
from shared.observability.tracing import span

if TYPE_CHECKING:
    from shared.bootstrap import Services

_CONTAINER = "drop"


def _account_key(conn: str) -> tuple[str, str]:
    parts = dict(p.split("=", 1) for p in conn.split(";") if "=" in p)
    return parts.get("AccountName", ""), parts.get("AccountKey", "")


def upload_url(services: Services, path: str, *, minutes: int) -> PrepareUpload:
    now = utcnow()
    expires = now + timedelta(minutes=minutes)
    permission = BlobSasPermissions(create=True, write=True)
    headers = {"x-ms-blob-type": "BlockBlob", "If-None-Match": "*"}
    with span("api.uploads.prepare", {"wharf.path": path}):
        conn = services.settings.storage_connection_string
        if conn:
            account, key = _account_key(conn)
            if not key:
                raise Problem(501, "the storage connection has no account key to sign an upload URL with",
                              code="not-available")
            client = BlobServiceClient.from_connection_string(conn)
            sas = generate_blob_sas(account, _CONTAINER, path, account_key=key, permission=permission,
                                    expiry=expires, start=now - timedelta(minutes=1))
            kind = "local_account_sas"
        else:
            from azure.identity import DefaultAzureCredential

            client = BlobServiceClient(services.settings.service_url("blob"), credential=DefaultAzureCredential())
            delegation = client.get_user_delegation_key(now - timedelta(minutes=1), expires)
            sas = generate_blob_sas(client.account_name or "", _CONTAINER, path, user_delegation_key=delegation,
                                    permission=permission, expiry=expires, start=now - timedelta(minutes=1))
            kind = "user_delegation_sas"
        url = client.get_blob_client(_CONTAINER, path).url + "?" + sas
    return PrepareUpload(upload_url=url, method="PUT", headers=headers, blob_path=f"{_CONTAINER}/{path}",
                         expires_at=expires, kind=kind)
