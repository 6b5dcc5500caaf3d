"""Every blob container, storage queue and table Wharf uses: the one list.

`wharf resources ensure` (Services.ensure_resources) creates these locally, and `infra/modules/storage.bicep`
declares the same names in Azure; tests/unit/test_infra_resources.py fails when the two drift. Queue names
are settings (POLL_QUEUE, LANDED_QUEUE, WHARF_EVENTS_QUEUE); the defaults below are what the Bicep sets. A
queue a trigger reads has a `-poison` twin (the host moves a message there after maxDequeueCount tries, and
Wharf moves a malformed one there at once). Table names get WHARF_TABLE_PREFIX in front (tests, shared
accounts); Azure uses no prefix. Durable Functions' own task-hub queues, tables and lease container are made
by the extension at run time and are not listed here.
"""

from __future__ import annotations

POISON_SUFFIX = "-poison"

# Blob containers.
INBOUND = "inbound"
DROP = "drop"
PROCESSED = "processed"
QUARANTINE = "quarantine"
ARCHIVE = "archive"
OUTBOUND = "outbound"
REPORTS = "reports"
STAGING = "staging"
LOCKS = "locks"  # blob-lease slots (shared/adapters/slots.py): e.g. a partner's concurrent SFTP sessions
CONTAINERS: tuple[str, ...] = (INBOUND, DROP, PROCESSED, QUARANTINE, ARCHIVE, OUTBOUND, REPORTS, STAGING, LOCKS)
#: Event Grid triggers and the container whose BlobCreated events each gets (scripts/azd/postdeploy.sh makes one
#: subscription per entry, subject-filtered to the container; devhost's DEVHOST_EVENTGRID_BLOBS emulates them).
#: Literal strings: scripts/bindings.py reads this with ast (stdlib only, on the deployer's machine).
EVENT_GRID_TRIGGERS: dict[str, str] = {"intake_drop": "drop", "intake_outbound": "outbound"}
EVENT_GRID_CONTAINERS: tuple[str, ...] = tuple(EVENT_GRID_TRIGGERS.values())

# Storage queues (defaults of the queue-name settings).
POLL_QUEUE = "poll-requests"
LANDED_QUEUE = "file-landed"
EVENTS_QUEUE = "wharf-events"
TRANSFER_BATCHES_QUEUE = "transfer-batches"
REDELIVERY_QUEUE = "redeliveries"  # redeliveries an operator asked for (wharf redeliver, the API), one per record
#: Queues that triggers read, so each has a `-poison` twin.
TRIGGER_QUEUES: tuple[str, ...] = (POLL_QUEUE, LANDED_QUEUE, TRANSFER_BATCHES_QUEUE, REDELIVERY_QUEUE)

# Tables.
JOBS_TABLE = "IntegrationJob"
TRANSFERS_TABLE = "FileTransfer"
LOGS_TABLE = "IntegrationLog"
EVENTS_TABLE = "JobEvents"
LEDGER_TABLE = "Ledger"
BREAKERS_TABLE = "Breakers"
DELIVERIES_TABLE = "Deliveries"
SLA_TABLE = "SlaWindows"
JOBS_BY_TIME_TABLE = "JobsByTime"  # the jobs list index (PK creation month, RK inverted time): API v1 paging
PARTNER_KEYS_TABLE = "PartnerKeys"  # partner API keys (salted hashes) for uploads
LAST_POLLS_TABLE = "LastPolls"  # the latest poll's summary per channel and partner (PK channel, RK partner)
TABLES: tuple[str, ...] = (JOBS_TABLE, TRANSFERS_TABLE, LOGS_TABLE, EVENTS_TABLE, LEDGER_TABLE, BREAKERS_TABLE,
                           DELIVERIES_TABLE, SLA_TABLE, JOBS_BY_TIME_TABLE, PARTNER_KEYS_TABLE, LAST_POLLS_TABLE)

# Service Bus (WHARF_PUBLISHER=servicebus): the topic events go to, and the subscription infra creates on it.
EVENTS_TOPIC = "wharf-events"
EVENTS_SUBSCRIPTION = "wharf-consumers"


def poison(queue: str) -> str:
    """The poison twin of a trigger queue."""
    return f"{queue}{POISON_SUFFIX}"


def queue_names(*, poll: str = POLL_QUEUE, landed: str = LANDED_QUEUE, events: str = EVENTS_QUEUE,
                transfer_batches: str = TRANSFER_BATCHES_QUEUE, redeliveries: str = REDELIVERY_QUEUE) -> list[str]:
    """Every queue, poison twins included, for the given (configured) names."""
    triggers = [poll, landed, transfer_batches, redeliveries]
    return [*triggers, events, *(poison(n) for n in triggers)]


#: Every queue under the default names (what the Bicep declares).
QUEUES: tuple[str, ...] = tuple(queue_names())

