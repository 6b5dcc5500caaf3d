"""Redelivery trigger: send the redeliveries operators asked for (`wharf redeliver`, the API), one record each.

Logic: shared/services/deliveries_view.py (imported in the body: cold start, see docs/architecture.md)."""

import azure.functions as func

from shared.bootstrap import get_services

bp = func.Blueprint()


@bp.function_name("redelivery_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%REDELIVERY_QUEUE%", connection="AzureWebJobsStorage")
def redelivery_worker(msg: func.QueueMessage) -> None:
    from shared.metrics import record_queue_age
    from shared.services import poison
    from shared.services.deliveries_view import on_redelivery

    services = get_services()
    queue = services.settings.redelivery_queue
    record_queue_age(queue, msg.insertion_time)
    # A bad message is dead-lettered with its reason; a failed send is recorded on the record and the job.
    on_redelivery(services, poison.delivery_of(queue, msg))
