"""Intake triggers: the file-landed queue and the drop/{partner}/{name} blob trigger start process_file.

No `from __future__ import annotations` here: the worker reads the parameter types (the SDK-type blob
binding is chosen by the annotation), so they must be real classes, not strings.
"""

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared.bootstrap import get_services
from shared.metrics import record_queue_age
from shared.services import drop, intake, poison

bp = df.Blueprint()


@bp.function_name("intake_file_landed")
@bp.queue_trigger(arg_name="msg", queue_name="%LANDED_QUEUE%", connection="AzureWebJobsStorage")
@bp.durable_client_input(client_name="client")
async def intake_file_landed(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    services = get_services()
    queue = services.settings.landed_queue
    record_queue_age(queue, msg.insertion_time)
    # One reference per job: a FileLanded names one, a FileLandedBatch up to 100. Bad ones are dead-lettered
    # with their reason (never retried); the good ones start, each idempotent on its job id.
    for ref in poison.accept_file_landed_many(services, poison.delivery_of(queue, msg)):
        await intake.start_processing(client, ref)


# In Azure (Flex Consumption) this trigger uses the Event Grid source; devhost fires it by polling. The
# SDK-type binding hands over a BlobClient: the file is copied server side, never held in the worker.
@bp.function_name("intake_drop")
@bp.blob_trigger(arg_name="dropped", path="drop/{name}", connection="AzureWebJobsStorage", source="EventGrid")
@bp.durable_client_input(client_name="client")
async def intake_drop(dropped: blob.BlobClient, client: df.DurableOrchestrationClient) -> None:
    await drop.take_drop(get_services(), client, container=dropped.container_name, blob_path=dropped.blob_name)


# Outgoing files: an internal system puts a file at outbound/{partner}/{name}; the same intake as drop/, as an
# OUTBOUND job that takes the partner's outbound.routes (shared.services.outbound). Event Grid source in Azure.
@bp.function_name("intake_outbound")
@bp.blob_trigger(arg_name="handed", path="outbound/{name}", connection="AzureWebJobsStorage", source="EventGrid")
@bp.durable_client_input(client_name="client")
async def intake_outbound(handed: blob.BlobClient, client: df.DurableOrchestrationClient) -> None:
    await drop.take_drop(get_services(), client, container=handed.container_name, blob_path=handed.blob_name,
                         handover=drop.OUTBOUND)
