"""`transfer-batches` queue: one claim batch of one partner's SFTP listing, transferred by any instance's worker.

A poll whose listing holds more files than a batch claims them in batches (ledger CLAIMED, owner
`batch:<batch id>`) and puts one TransferBatch per batch on the queue; whichever worker takes the message adopts
the batch's claims (ETag-conditional, so two deliveries of one message never transfer a file twice) and lands
them. The message names ledger keys only: paths, sizes and mtimes are read back from the ledger, so a message is
small (a key is 64 hex characters) and carries no partner path. Like every queue message it is untrusted input.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from shared.domain.messages import Identifier, PartnerId, _Message

#: Files per TransferBatch at most: 500 keys of 64 characters keep a message near 35 KiB (the limit is 48 KiB).
MAX_BATCH_KEYS = 500
#: The ledger owner a queued claim carries until a worker adopts it.
BATCH_OWNER_PREFIX = "batch:"

LedgerKey = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class TransferBatch(_Message):
    """One claim batch: transfer these ledger entries of `partner` (claimed by `batch:<batch_id>`).

    `listed_at` (seconds since the epoch) is when the poll's listing saw the files, the first of the two looks
    of the stability rule; `settle_seconds` the interval the second look must follow it by. `deferrals` counts
    how often the batch was put back because every SFTP session of the partner was busy."""

    partner: PartnerId
    batch_id: Identifier
    keys: list[LedgerKey] = Field(min_length=1, max_length=MAX_BATCH_KEYS)
    listed_at: float = Field(ge=0)
    settle_seconds: float = Field(default=1.0, ge=0, le=3600)
    requested_by: str = Field(default="timer", max_length=200)
    deferrals: int = Field(default=0, ge=0, le=1000)

    @property
    def owner(self) -> str:
        return batch_owner(self.batch_id)


def batch_owner(batch_id: str) -> str:
    return f"{BATCH_OWNER_PREFIX}{batch_id}"


def is_batch_owner(owner: str) -> bool:
    return owner.startswith(BATCH_OWNER_PREFIX)
