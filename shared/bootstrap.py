"""The one place adapters are wired: build_services(settings) -> Services; get_services() caches it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from shared.adapters.http import storage_options

if TYPE_CHECKING:
    from shared.catalog import Catalog
    from shared.ports import (
        BlobStore,
        Breakers,
        Deliveries,
        FileSinkFactory,
        FileSourceFactory,
        JobStore,
        LastPolls,
        Ledger,
        MailboxFactory,
        MailSenderFactory,
        MessageQueue,
        Publisher,
        Secrets,
        SlaWindows,
        Slots,
    )
    from shared.services.partner_keys import PartnerKeyStore
    from shared.settings import Settings


@dataclass
class Services:
    """Everything a use case needs, built lazily so cold start and indexing stay cheap."""

    settings: Settings
    overrides: dict[str, Any] = field(default_factory=dict)
    _catalog_cache: tuple[int, Catalog] | None = field(default=None, repr=False)

    def _credential(self) -> Any:
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    @cached_property
    def blobs(self) -> BlobStore:
        if "blobs" in self.overrides:
            return self.overrides["blobs"]
        from azure.storage.blob import BlobServiceClient

        from shared.adapters.blobs import BlobStoreClient

        conn = self.settings.storage_connection_string
        limits = self.settings.storage_limits
        if conn:
            return BlobStoreClient.from_connection_string(conn, limits=limits)
        return BlobStoreClient(BlobServiceClient(self.settings.service_url("blob"), self._credential(),
                                                 **storage_options("blob", limits)))

    @cached_property
    def jobs(self) -> JobStore:
        if "jobs" in self.overrides:
            return self.overrides["jobs"]
        from azure.data.tables import TableServiceClient

        from shared.adapters.tables import JobStoreClient

        conn = self.settings.storage_connection_string
        prefix = self.settings.table_prefix
        limits = self.settings.storage_limits
        if conn:
            return JobStoreClient.from_connection_string(conn, prefix=prefix, limits=limits)
        service = TableServiceClient(self.settings.service_url("table"), credential=self._credential(),
                                     **storage_options("table", limits))
        return JobStoreClient(service, prefix=prefix)

    @cached_property
    def queues(self) -> MessageQueue:
        if "queues" in self.overrides:
            return self.overrides["queues"]
        from azure.storage.queue import QueueServiceClient

        from shared.adapters.queues import QueueClientAdapter

        conn = self.settings.storage_connection_string
        limits = self.settings.storage_limits
        if conn:
            return QueueClientAdapter.from_connection_string(conn, limits=limits)
        return QueueClientAdapter(QueueServiceClient(self.settings.service_url("queue"), self._credential(),
                                                     **storage_options("queue", limits)))

    @cached_property
    def publisher(self) -> Publisher:
        if "publisher" in self.overrides:
            return self.overrides["publisher"]
        from shared.adapters.publishers import QueuePublisher, ServiceBusPublisher

        s = self.settings
        if s.publisher == "servicebus":
            return ServiceBusPublisher.from_settings(namespace=s.servicebus_namespace,
                                                     connection=s.servicebus_connection, topic=s.servicebus_topic)
        return QueuePublisher(self.queues, s.events_queue)

    @cached_property
    def secrets(self) -> Secrets:
        if "secrets" in self.overrides:
            return self.overrides["secrets"]
        from shared.adapters.secrets import KeyVaultSecrets, LocalSecrets

        if self.settings.key_vault_url:
            return KeyVaultSecrets(self.settings.key_vault_url, ttl=self.settings.secret_cache_seconds)
        return LocalSecrets(file=self.settings.secrets_file)

    def _tables(self, adapter: Any) -> Any:
        conn = self.settings.storage_connection_string
        prefix = self.settings.table_prefix
        limits = self.settings.storage_limits
        if conn:
            return adapter.from_connection_string(conn, prefix=prefix, limits=limits)
        from azure.data.tables import TableServiceClient

        return adapter(TableServiceClient(self.settings.service_url("table"), credential=self._credential(),
                                          **storage_options("table", limits)),
                       prefix=prefix)

    @cached_property
    def ledger(self) -> Ledger:
        if "ledger" in self.overrides:
            return self.overrides["ledger"]
        from shared.adapters.ledger import LedgerClient

        return self._tables(LedgerClient)

    @cached_property
    def breakers(self) -> Breakers:
        if "breakers" in self.overrides:
            return self.overrides["breakers"]
        from shared.adapters.ledger import BreakersClient

        return self._tables(BreakersClient)

    @cached_property
    def last_polls(self) -> LastPolls:
        """The latest poll's summary per channel and partner (what GET /api/v1/partners shows as last_poll)."""
        if "last_polls" in self.overrides:
            return self.overrides["last_polls"]
        from shared.adapters.ledger import InProcessLastPolls, LastPollsClient

        if "breakers" in self.overrides:  # no table storage to share (a fake breakers store): within this process
            return InProcessLastPolls()
        return self._tables(LastPollsClient)

    @cached_property
    def sla_windows(self) -> SlaWindows:
        """Evaluated SLA windows, one row each: the insert-if-absent that makes each window alert once."""
        if "sla_windows" in self.overrides:
            return self.overrides["sla_windows"]
        from shared.adapters.sla import SlaWindowsClient

        return self._tables(SlaWindowsClient)

    @cached_property
    def slots(self) -> Slots:
        """Counting semaphores every instance shares (blob leases): e.g. a partner's concurrent SFTP sessions."""
        if "slots" in self.overrides:
            return self.overrides["slots"]
        from azure.storage.blob import BlobServiceClient

        from shared.adapters.slots import BlobLeaseSlots, InProcessSlots

        if "blobs" in self.overrides:  # no blob storage to share (a fake blob store): slots within this process
            return InProcessSlots()

        conn = self.settings.storage_connection_string
        if conn:
            return BlobLeaseSlots.from_connection_string(conn, limits=self.settings.storage_limits)
        return BlobLeaseSlots(BlobServiceClient(self.settings.service_url("blob"), self._credential(),
                                                **storage_options("blob", self.settings.storage_limits)))

    @cached_property
    def file_sources(self) -> FileSourceFactory:
        """Opens SFTP sessions from a partner's catalogue block (credentials from `secrets`)."""
        if "file_sources" in self.overrides:
            return self.overrides["file_sources"]
        from shared.adapters.sftp import SftpConnector

        return SftpConnector(self.secrets)

    @cached_property
    def file_sinks(self) -> FileSinkFactory:
        """Opens SFTP sessions for outbound delivery from the receiving partner's catalogue block."""
        if "file_sinks" in self.overrides:
            return self.overrides["file_sinks"]
        from shared.adapters.sftp import SftpConnector

        return SftpConnector(self.secrets, lean_write=self.settings.sftp_lean_write)

    @cached_property
    def deliveries(self) -> Deliveries:
        """One record per (job, destination): what exactly-once delivery is decided on."""
        if "deliveries" in self.overrides:
            return self.overrides["deliveries"]
        from shared.adapters.deliveries import DeliveriesClient

        return self._tables(DeliveriesClient)

    @cached_property
    def partner_keys(self) -> PartnerKeyStore:
        """Salted hashes of partner API keys (uploads through the API)."""
        if "partner_keys" in self.overrides:
            return self.overrides["partner_keys"]
        from shared.adapters.partner_keys import PartnerKeysClient

        return self._tables(PartnerKeysClient)

    @cached_property
    def mailboxes(self) -> MailboxFactory:
        """Opens Graph mailboxes from a partner's catalogue block (GRAPH_BASE_URL may point at the test server)."""
        if "mailboxes" in self.overrides:
            return self.overrides["mailboxes"]
        from shared.adapters.graph_mail import GraphMailboxes

        s = self.settings
        return GraphMailboxes(self.secrets, base_url=s.graph_base_url, local_token=s.graph_local_token,
                              authority=s.graph_authority)

    @cached_property
    def mail_senders(self) -> MailSenderFactory:
        """Sends email from a sender mailbox through Graph (GRAPH_BASE_URL may point at the test server)."""
        if "mail_senders" in self.overrides:
            return self.overrides["mail_senders"]
        from shared.adapters.graph_mail import GraphMailSenders

        s = self.settings
        return GraphMailSenders(self.secrets, base_url=s.graph_base_url, local_token=s.graph_local_token,
                              authority=s.graph_authority)

    @property
    def catalog(self) -> Catalog:
        """The partner catalogue, reloaded when its file changes (fix the catalogue, then replay)."""
        if "catalog" in self.overrides:
            return self.overrides["catalog"]
        from shared.catalog import load_catalog

        path = self.settings.catalog_path
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            stamp = -1  # let the loader report the missing file with its own message
        cached = self._catalog_cache
        if cached is None or cached[0] != stamp:
            cached = (stamp, load_catalog(path))
            self._catalog_cache = cached
        return cached[1]

    def queue_names(self) -> list[str]:
        """Every queue under the configured names, `-poison` twins included (shared/resources.py)."""
        from shared.resources import queue_names

        s = self.settings
        return queue_names(poll=s.poll_queue, landed=s.landed_queue, events=s.events_queue,
                           transfer_batches=s.transfer_queue, redeliveries=s.redelivery_queue)

    def ensure_resources(self) -> None:
        """Create every container, queue and table; safe to call any number of times."""
        from shared.resources import CONTAINERS

        self.blobs.ensure_containers(CONTAINERS)
        self.queues.ensure_queues(self.queue_names())
        self.jobs.ensure_tables()


def build_services(settings: Settings | None = None, **overrides: Any) -> Services:
    """Services over `settings`, whose secret-looking values (storage and Service Bus connection strings, keys)
    are registered for redaction first: an error that quotes one is never stored, published or logged."""
    from shared.observability.redaction import register_settings_secrets
    from shared.settings import Settings

    settings = settings or Settings()
    register_settings_secrets(settings)
    return Services(settings=settings, overrides=dict(overrides))


@cache
def get_services() -> Services:
    """Per-process services for trigger functions (built on first use, never at import).

    Telemetry is configured here, once: every trigger body calls get_services() first, and
    function_app.py stays free of start-up work (indexing must not start exporters)."""
    from shared.observability.setup import configure_telemetry
    from shared.plugins import load_plugins

    services = build_services()
    configure_telemetry(services.settings)
    load_plugins()  # destination kinds, transforms and validators of installed packages (a broken one is logged)
    return services
