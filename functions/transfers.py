"""Transfer-batch trigger: any instance's worker lands one claim batch of a partner's large SFTP backlog.

Logic: shared/services/transfers.py (imported in the body: cold start, see docs/architecture.md)."""

import azure.functions as func

from shared.bootstrap import get_services

bp = func.Blueprint()


@bp.function_name("transfer_batch_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%TRANSFER_QUEUE%", connection="AzureWebJobsStorage")
def transfer_batch_worker(msg: func.QueueMessage) -> None:
    from shared.metrics import record_queue_age
    from shared.services import poison, transfers

    services = get_services()
    queue = services.settings.transfer_queue
    record_queue_age(queue, msg.insertion_time)
    # A bad message is dead-lettered with its reason; a batch that cannot run now is put back or released.
    transfers.on_delivery(services, poison.delivery_of(queue, msg))
