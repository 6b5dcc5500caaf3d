"""Transfer batches: one partner's large backlog spread over every instance's worker.

A queue-triggered poll whose listing holds more than WHARF_TRANSFER_BATCH_FILES files to take claims them in
batches and puts each on the transfer-batches queue (shared/services/poll_sftp.py). Here a worker handles one
message: a bad one is dead-lettered with its reason (shared/services/poison.py); a good one is transferred in the
poll's trace (`run_transfer_batch`). A batch that cannot run now (no free SFTP session slot, the partner's server
down, its circuit open) is put back on the queue with a growing delay, at most MAX_DEFERRALS times; then, or when
the partner is disabled, its claims are released (ledger FAILED with the reason, retried by a later poll) and the
message ends: nothing waits in silence. `work` is the same loop for `wharf poll --worker`, outside the host.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from shared.domain.errors import NotFoundError, WharfError
from shared.domain.jobs import JobType
from shared.domain.ledger import LedgerState
from shared.domain.transfer_batches import TransferBatch
from shared.observability.tracing import continued_from, log_fields, messaging_attrs, span
from shared.services import poison
from shared.services.landing import Arrival, Claim, Landing
from shared.services.polls import PollOptions, PollSummary

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

MAX_DEFERRALS = 8  # put back at most this often (30 s, 60 s, ... 10 min apart: about half an hour in all)
_DEFER_FIRST, _DEFER_MAX = 30, 600
_WORKER_VISIBILITY = 600  # seconds a `wharf poll --worker` hides the message it works on (the function timeout)
_HOST_MAX_DEQUEUE = 5  # host.json maxDequeueCount: a message failing this often goes to the poison queue


def handle(services: Services, batch: TransferBatch, *, options: PollOptions | None = None) -> PollSummary:
    """Transfer one batch; put it back or release it when it cannot run now (see the module's docstring)."""
    from shared.services.poll_sftp import run_transfer_batch

    fields = {"partner": batch.partner, "batch_id": batch.batch_id}
    summary = run_transfer_batch(services, batch, options=options)
    if summary.status in ("failed", "circuit_open"):
        if batch.deferrals < MAX_DEFERRALS:
            delay = min(_DEFER_MAX, _DEFER_FIRST * 2 ** batch.deferrals)
            again = batch.model_copy(update={"deferrals": batch.deferrals + 1})
            services.queues.send(services.settings.transfer_queue, again.to_message(), visibility_timeout=delay)
            log.warning("transfer batch %s could not run (%s: %s); put back, due again in %d s (deferral %d of %d)",
                        batch.batch_id, summary.status, summary.error, delay, batch.deferrals + 1, MAX_DEFERRALS,
                        extra=log_fields(**fields))
        else:
            release(services, batch, f"transfer batch {batch.batch_id} could not run after {MAX_DEFERRALS} "
                                     f"deferrals: {summary.error}")
    elif summary.status == "disabled":
        release(services, batch, f"partner {batch.partner} is disabled; transfer batch {batch.batch_id} released")
    return summary


def release(services: Services, batch: TransferBatch, reason: str) -> int:
    """The batch's claims still held by its `batch:` owner become FAILED with `reason` (a later poll takes them
    over, as it does any failed attempt); returns how many."""
    landing = Landing(services, batch.partner, channel="sftp", job_type=JobType.SFTP_INGEST, owner=batch.owner)
    released = 0
    with span("sftp.release_batch", {"wharf.partner": batch.partner, "wharf.batch_id": batch.batch_id}) as s:
        entries = services.ledger.get_many(batch.partner, batch.keys)
        for entry in entries.values():
            if entry.state is LedgerState.CLAIMED and entry.owner == batch.owner:
                arrival = Arrival(channel=entry.channel, path=entry.path, name=entry.path.rsplit("/", 1)[-1],
                                  size=entry.size, mtime=entry.mtime, source="")
                if landing.fail(Claim(arrival, entry), reason) is not None:
                    released += 1
        s.set_attribute("wharf.files", released)
    log.warning("%s (%d claims released for a later poll)", reason, released,
                extra=log_fields(partner=batch.partner, batch_id=batch.batch_id))
    return released


def on_delivery(services: Services, delivery: poison.Delivery, *, options: PollOptions | None = None
                ) -> PollSummary | None:
    """What the queue trigger (and `work`) does with one delivery: check it, then handle it in the poll's trace.
    None when the message was bad and is dead-lettered."""
    accepted = poison.accept_transfer_batch(services, delivery)
    if accepted is None:
        return None
    batch, carrier = accepted
    with continued_from(carrier), span("queue.process transfer-batch", {
            **messaging_attrs("azure_storage_queue", delivery.queue, "process", message_id=delivery.id or None),
            "wharf.partner": batch.partner, "wharf.batch_id": batch.batch_id}):
        return handle(services, batch, options=options)


def work(services: Services, *, idle_exit: float | None = None, max_batches: int | None = None,
         options: PollOptions | None = None, stop: threading.Event | None = None,
         on_summary: Callable[[PollSummary], None] | None = None) -> int:
    """`wharf poll --worker`: take transfer batches off the queue one at a time until stopped, `max_batches`
    handled, or the queue stayed empty `idle_exit` seconds (empty: nothing to receive and nothing in flight
    with another worker either, by the queue's approximate count). A batch that raises is made visible again
    and goes to the poison queue after the host's maxDequeueCount, as the host would. Returns the batches
    handled."""
    queue = services.settings.transfer_queue
    stop = stop or threading.Event()
    handled, idle_since, pause = 0, time.monotonic(), 0.1
    while not stop.is_set() and (max_batches is None or handled < max_batches):
        messages = services.queues.receive(queue, max_messages=1, visibility_timeout=_WORKER_VISIBILITY)
        if not messages:
            if idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                if services.queues.depth(queue) == 0:
                    break
                idle_since = time.monotonic()  # batches in flight elsewhere may come back (a worker died)
            stop.wait(pause)
            pause = min(pause * 2, 2.0)
            continue
        pause = 0.1
        message = messages[0]
        delivery = poison.Delivery(queue=queue, id=message.id, body=message.body,
                                   dequeue_count=message.dequeue_count, inserted_at=message.inserted_at)
        try:
            summary = on_delivery(services, delivery, options=options)
        except (AzureError, WharfError, OSError) as exc:
            _failed(services, queue, message, exc)
        else:
            _settle(services, queue, message)
            handled += 1
            if summary is not None and on_summary is not None:
                on_summary(summary)
        idle_since = time.monotonic()
    return handled


def _settle(services: Services, queue: str, message: Any) -> None:
    try:
        services.queues.delete(queue, message.id, message.pop_receipt)
    except NotFoundError:  # hidden too long and received again elsewhere: that delivery settles it
        log.warning("transfer batch message %s was received again elsewhere before it was deleted", message.id)


def _failed(services: Services, queue: str, message: Any, exc: BaseException) -> None:
    log.exception("transfer batch message %s failed (delivery %d): %s", message.id, message.dequeue_count, exc)
    try:
        if message.dequeue_count >= _HOST_MAX_DEQUEUE:
            services.queues.send_raw(poison.poison_queue(queue), message.body)
            services.queues.delete(queue, message.id, message.pop_receipt)
        else:
            services.queues.release(queue, message.id, message.pop_receipt)
    except (AzureError, WharfError) as settle_exc:  # the visibility timeout brings it back anyway
        log.warning("could not settle transfer batch message %s: %s", message.id, settle_exc)
