"""Application settings (pydantic-settings), read lazily: build Settings() inside get_services()."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from shared.adapters.http import StorageLimits

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(host: str = "127.0.0.1", blob: int = 10000, queue: int = 10001,
                              table: int = 10002) -> str:
    """The explicit connection string for a local Azurite (what UseDevelopmentStorage=true means)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{AZURITE_ACCOUNT};"
    )


class Settings(BaseSettings):
    """Every setting the app reads. Names are the app-setting names used in Azure and local.settings.json."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=False)

    # Storage: a connection string (Azurite locally), or identity-based via the account name.
    storage_connection: str | None = Field(default=None, validation_alias=AliasChoices("AzureWebJobsStorage"))
    storage_account_name: str | None = Field(
        default=None, validation_alias=AliasChoices("AzureWebJobsStorage__accountName")
    )

    catalog_path: Path = Field(default=Path("partners.yaml"), validation_alias=AliasChoices("WHARF_CATALOG_PATH"))
    # Secrets: Key Vault in Azure; env (WHARF_SECRET_<NAME>) or an ignored JSON file locally.
    key_vault_url: str | None = Field(default=None, validation_alias=AliasChoices("KEY_VAULT_URL"))
    # How long a Key Vault secret is reused before it is read again; an authentication failure re-reads at once.
    secret_cache_seconds: float = Field(default=300.0, ge=0, le=86_400,
                                        validation_alias=AliasChoices("WHARF_SECRET_CACHE_SECONDS"))
    secrets_file: Path | None = Field(default=None, validation_alias=AliasChoices("WHARF_SECRETS_FILE"))

    # Events to other systems.
    publisher: Literal["queue", "servicebus"] = Field(default="queue", validation_alias=AliasChoices("WHARF_PUBLISHER"))
    events_queue: str = Field(default="wharf-events", validation_alias=AliasChoices("WHARF_EVENTS_QUEUE"))
    servicebus_namespace: str | None = Field(
        default=None, validation_alias=AliasChoices("SERVICEBUS_FULLY_QUALIFIED_NAMESPACE")
    )
    servicebus_connection: str | None = Field(
        default=None, validation_alias=AliasChoices("SERVICEBUS_CONNECTION_STRING")
    )
    servicebus_topic: str = Field(default="wharf-events", validation_alias=AliasChoices("SERVICEBUS_TOPIC"))

    # Queue names (also used in trigger bindings as %POLL_QUEUE% / %LANDED_QUEUE%).
    poll_queue: str = Field(default="poll-requests", validation_alias=AliasChoices("POLL_QUEUE"))
    landed_queue: str = Field(default="file-landed", validation_alias=AliasChoices("LANDED_QUEUE"))
    # One partner's backlog over several instances (shared/services/poll_sftp.py, functions/transfers.py): a
    # queue-triggered poll whose listing has more than WHARF_TRANSFER_BATCH_FILES files to take claims them in
    # batches of that size and puts each batch on TRANSFER_QUEUE (%TRANSFER_QUEUE% in the binding), for any
    # instance's worker. A batch claim not adopted by a worker within WHARF_TRANSFER_BATCH_LEASE_MINUTES is taken
    # over by a later poll.
    transfer_queue: str = Field(default="transfer-batches", validation_alias=AliasChoices("TRANSFER_QUEUE"))
    # Redeliveries an operator asks for (`wharf redeliver`, POST /api/v1/jobs/{id}/deliveries/{n}/redeliver) are
    # queued on REDELIVERY_QUEUE (%REDELIVERY_QUEUE% in the binding) and sent by the function app's worker.
    redelivery_queue: str = Field(default="redeliveries", validation_alias=AliasChoices("REDELIVERY_QUEUE"))
    transfer_batch_files: int = Field(default=200, ge=1, le=500,
                                      validation_alias=AliasChoices("WHARF_TRANSFER_BATCH_FILES"))
    transfer_batch_lease_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60,
                                                validation_alias=AliasChoices("WHARF_TRANSFER_BATCH_LEASE_MINUTES"))
    # Concurrent SFTP sessions per partner across every worker and instance (blob-lease slots in the `locks`
    # container); a partner's catalogue `sftp.max_sessions` overrides the default. A worker that holds no session
    # waits up to WHARF_SFTP_SESSION_WAIT_SECONDS for a free slot.
    sftp_max_sessions: int = Field(default=4, ge=1, le=64, validation_alias=AliasChoices("WHARF_SFTP_MAX_SESSIONS"))
    sftp_session_wait_seconds: float = Field(default=120, ge=0, le=3600,
                                             validation_alias=AliasChoices("WHARF_SFTP_SESSION_WAIT_SECONDS"))
    # Outbound SFTP writes on an AES-GCM connection build, encrypt and send their SSH packets themselves
    # (shared/adapters/sftp_lean.py, decision 193); false keeps paramiko's own write path for every delivery.
    sftp_lean_write: bool = Field(default=True, validation_alias=AliasChoices("WHARF_SFTP_LEAN_WRITE"))

    # How long one storage call (Blob, Queue, Table) may take before it fails: retries after the first try,
    # the wait before the first retry (doubling after), the connect timeout and the read timeout (seconds of
    # silence). A poll stops at the first call that fails this way (README "When storage goes away").
    storage_retries: int = Field(default=3, ge=0, le=20, validation_alias=AliasChoices("WHARF_STORAGE_RETRIES"))
    storage_retry_backoff_seconds: float = Field(
        default=1, ge=0, le=60, validation_alias=AliasChoices("WHARF_STORAGE_RETRY_BACKOFF_SECONDS"))
    storage_connect_timeout_seconds: float = Field(
        default=5, gt=0, le=300, validation_alias=AliasChoices("WHARF_STORAGE_CONNECT_TIMEOUT_SECONDS"))
    storage_read_timeout_seconds: float = Field(
        default=30, gt=0, le=3600, validation_alias=AliasChoices("WHARF_STORAGE_READ_TIMEOUT_SECONDS"))

    # A poll's claim on a file lasts this long unless renewed (every third of it while the file streams); a
    # claim left by a poll that crashed or stopped (storage unavailable) is taken over once it has run out.
    poll_lease_seconds: float = Field(default=600, ge=10, le=24 * 3600,
                                      validation_alias=AliasChoices("WHARF_POLL_LEASE_SECONDS"))

    # Table name prefix lets tests and several deployments share one account.
    table_prefix: str = Field(default="", validation_alias=AliasChoices("WHARF_TABLE_PREFIX"))

    # The jobs sweep (timer jobs_sweep, every 5 minutes; shared/services/sweep.py): a PENDING job with no
    # orchestration, untouched this many minutes, is re-sent to the file-landed queue, at most
    # WHARF_PENDING_RESEND_MAX times, then FAILED; a RUNNING job untouched WHARF_STALE_RUNNING_MINUTES whose
    # orchestration has ended (or is gone) gets its terminal state. A run acts on at most WHARF_SWEEP_MAX_JOBS.
    pending_resend_minutes: float = Field(default=10, ge=0, le=7 * 24 * 60,
                                          validation_alias=AliasChoices("WHARF_PENDING_RESEND_MINUTES"))
    pending_resend_max: int = Field(default=3, ge=0, le=100, validation_alias=AliasChoices("WHARF_PENDING_RESEND_MAX"))
    stale_running_minutes: float = Field(default=30, ge=0, le=7 * 24 * 60,
                                         validation_alias=AliasChoices("WHARF_STALE_RUNNING_MINUTES"))
    # A job neither COMPLETED nor FAILED this many minutes after its creation is stalled: the sweep records
    # job.stalled once and counts wharf.jobs.stalled; `wharf jobs resume` / POST /api/v1/jobs/{id}/resume.
    stalled_minutes: float = Field(default=30, ge=1, le=7 * 24 * 60,
                                   validation_alias=AliasChoices("WHARF_STALLED_MINUTES"))
    sweep_max_jobs: int = Field(default=50, ge=1, le=5000, validation_alias=AliasChoices("WHARF_SWEEP_MAX_JOBS"))
    # A Deliveries row PENDING or SENDING untouched this many minutes (more than functionTimeout, so no attempt
    # can still be running) was left by a crash: the sweep re-queues a redelivery (at most
    # WHARF_REDELIVERY_REQUEUE_MAX times, then FAILED with the reason) and marks a route's own delivery of a job
    # that has ended FAILED with the reason (`wharf redeliver` sends it again).
    delivery_stale_minutes: float = Field(default=30, ge=1, le=7 * 24 * 60,
                                          validation_alias=AliasChoices("WHARF_DELIVERY_STALE_MINUTES"))
    redelivery_requeue_max: int = Field(default=3, ge=0, le=100,
                                        validation_alias=AliasChoices("WHARF_REDELIVERY_REQUEUE_MAX"))
    # How far back (by creation time) the sweep looks for PENDING/RUNNING jobs, through the JobsByTime index
    # (status and time range in the query): older jobs are not read at all. They were marked stalled long before.
    sweep_window_days: float = Field(default=7, ge=1, le=400, validation_alias=AliasChoices("WHARF_SWEEP_WINDOW_DAYS"))

    # SLA checks (timer sla_check, every 5 minutes; shared/services/sla.py): a window is evaluated once it has
    # been closed WHARF_SLA_GRACE_SECONDS (files claimed just before the close are recorded by then); windows
    # that closed in the last WHARF_SLA_LOOKBACK_HOURS are caught up after an outage (a new expectation: only
    # from its first check on).
    sla_grace_seconds: float = Field(default=300, ge=0, le=24 * 3600,
                                     validation_alias=AliasChoices("WHARF_SLA_GRACE_SECONDS"))
    sla_lookback_hours: float = Field(default=48, gt=0, le=30 * 24,
                                      validation_alias=AliasChoices("WHARF_SLA_LOOKBACK_HOURS"))

    # Microsoft Graph (mailbox partners). Locally the Graph test server: a loopback base URL plus a
    # static token (used only for loopback URLs; the real Graph always gets the partner's app credential).
    graph_base_url: str = Field(default="https://graph.microsoft.com/v1.0",
                                validation_alias=AliasChoices("GRAPH_BASE_URL"))
    graph_local_token: str | None = Field(default=None, validation_alias=AliasChoices("WHARF_GRAPH_LOCAL_TOKEN"))
    # The Entra ID authority the app credentials log in at (a national cloud, e.g. https://login.microsoftonline.us);
    # unset: azure-identity's default (login.microsoftonline.com, or AZURE_AUTHORITY_HOST).
    graph_authority: str | None = Field(default=None, validation_alias=AliasChoices("WHARF_GRAPH_AUTHORITY"))

    # Telemetry.
    appinsights_connection: str | None = Field(
        default=None, validation_alias=AliasChoices("APPLICATIONINSIGHTS_CONNECTION_STRING")
    )
    otlp_endpoint: str | None = Field(default=None, validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT"))

    @cached_property
    def storage_mode(self) -> Literal["connection_string", "identity"]:
        if self.storage_connection:
            return "connection_string"
        if self.storage_account_name:
            return "identity"
        raise ValueError(
            "storage is not configured: set AzureWebJobsStorage (a connection string) "
            "or AzureWebJobsStorage__accountName (identity-based)"
        )

    @property
    def storage_limits(self) -> StorageLimits:
        from shared.adapters.http import StorageLimits

        return StorageLimits(retries=self.storage_retries, backoff=self.storage_retry_backoff_seconds,
                             connect_timeout=self.storage_connect_timeout_seconds,
                             read_timeout=self.storage_read_timeout_seconds)

    @property
    def storage_connection_string(self) -> str | None:
        """The connection string, with UseDevelopmentStorage=true expanded to Azurite's endpoints."""
        if not self.storage_connection:
            return None
        if self.storage_connection.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
            return azurite_connection_string()
        return self.storage_connection

    def service_url(self, service: Literal["blob", "queue", "table"]) -> str:
        """Endpoint for identity-based storage (AzureWebJobsStorage__accountName)."""
        if not self.storage_account_name:
            raise ValueError("AzureWebJobsStorage__accountName is not set")
        return f"https://{self.storage_account_name}.{service}.core.windows.net"
