"""Intake triggers: the file-landed queue and the drop/{partner}/{name} blob trigger start process_file.

No `from __future__ import annotations` here: the worker reads the parameter types (the SDK-type blob
binding is chosen by the annotation), so they must be real classes, not strings.
"""

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared.bootstrap import get_services
from shared.metrics import record_queue_age
from shared.services import intake

bp = df.Blueprint()


@bp.function_name("intake_file_landed")
@bp.queue_trigger(arg_name="msg", queue_name="%LANDED_QUEUE%", connection="AzureWebJobsStorage")
@bp.durable_client_input(client_name="client")
async def intake_file_landed(msg: func.QueueMessage, client: df.DurableOrchestrationClient) -> None:
    record_queue_age(get_services().settings.landed_queue, msg.insertion_time)
    await intake.start_processing(client, intake.orchestration_input(intake.decode_host_message(msg.get_body())))


# In Azure (Flex Consumption) this trigger uses the Event Grid source; devhost fires it by polling. The
# SDK-type binding hands over a BlobClient, so the file's bytes never pass through the worker's memory.
@bp.function_name("intake_drop")
@bp.blob_trigger(arg_name="dropped", path="drop/{name}", connection="AzureWebJobsStorage", source="EventGrid")
@bp.durable_client_input(client_name="client")
async def intake_drop(dropped: blob.BlobClient, client: df.DurableOrchestrationClient) -> None:
    props = dropped.get_blob_properties()
    ref = intake.register_drop(get_services(), container=dropped.container_name, blob_path=dropped.blob_name,
                               etag=str(props.etag), size=int(props.size))
    await intake.start_processing(client, intake.orchestration_input(ref))
