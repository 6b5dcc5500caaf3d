"""Intake triggers: the file-landed queue and the drop/{partner}/{name} Event Grid trigger start process_file.

No `from __future__ import annotations` here: the worker reads the parameter types of a function with a durable
client binding, so they must be real classes, not strings. Cold start: services are imported inside the bodies
(docs/architecture.md, "Cold start").
"""

import azure.durable_functions as df
import azure.functions as func

from shared.bootstrap import get_services

bp = df.Blueprint()


@bp.function_name("intake_file_landed")
@bp.queue_trigger(arg_name="msg", queue_name="%LANDED_QUEUE%", connection="AzureWebJobsStorage")
@bp.durable_client_input(client_name="client")
async def intake_file_landed(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    from shared.metrics import record_queue_age
    from shared.services import intake, poison

    services = get_services()
    queue = services.settings.landed_queue
    record_queue_age(queue, msg.insertion_time)
    # One reference per job: a FileLanded names one, a FileLandedBatch up to 100. Bad ones are dead-lettered
    # with their reason (never retried); the good ones start, each idempotent on its job id.
    await intake.take_file_landed(services, client, poison.delivery_of(queue, msg))


# An Event Grid subscription on the storage account (BlobCreated, subject beginning
# /blobServices/default/containers/drop/blobs/) delivers each dropped file's event; devhost emulates it by
# polling the container. The event names the blob only: the file is copied server side, never held in the
# worker, and neither the blob SDK nor azure.identity loads at start-up (decision 81).
@bp.function_name("intake_drop")
@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def intake_drop(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    from shared.services import drop

    await drop.take_drop_event(get_services(), client, event_type=event.event_type, subject=event.subject)


# Outgoing files: an internal system puts a file at outbound/{partner}/{name}; the same intake as drop/, as an
# OUTBOUND job that takes the partner's outbound.routes (shared.services.outbound). Event Grid as for drop/
# (BlobCreated, subject beginning /blobServices/default/containers/outbound/blobs/); devhost emulates it.
@bp.function_name("intake_outbound")
@bp.event_grid_trigger(arg_name="event")
@bp.durable_client_input(client_name="client")
async def intake_outbound(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    from shared.services import drop

    await drop.take_drop_event(get_services(), client, event_type=event.event_type, subject=event.subject,
                               handover=drop.OUTBOUND)
