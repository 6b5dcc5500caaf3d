"""Transfer-batch trigger: any instance's worker lands one claim batch of a partner's large SFTP backlog."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from shared.bootstrap import get_services
from shared.metrics import record_queue_age
from shared.services import poison, transfers

bp = df.Blueprint()


@bp.function_name("transfer_batch_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%TRANSFER_QUEUE%", connection="AzureWebJobsStorage")
def transfer_batch_worker(msg: func.QueueMessage) -> None:
    services = get_services()
    queue = services.settings.transfer_queue
    record_queue_age(queue, msg.insertion_time)
    # A bad message is dead-lettered with its reason; a batch that cannot run now is put back or released.
    transfers.on_delivery(services, poison.delivery_of(queue, msg))
