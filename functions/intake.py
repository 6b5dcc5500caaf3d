"""Intake triggers: the file-landed queue and the drop/{partner}/{name} blob trigger start process_file."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

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


# In Azure (Flex Consumption) this trigger uses the Event Grid source; devhost fires it by polling.
@bp.function_name("intake_drop")
@bp.blob_trigger(arg_name="blob", path="drop/{name}", connection="AzureWebJobsStorage", source="EventGrid")
@bp.durable_client_input(client_name="client")
async def intake_drop(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    container, _, path = (blob.name or "").partition("/")
    props = getattr(blob, "blob_properties", None) or {}
    ref = intake.register_drop(get_services(), container=container, blob_path=path,
                               etag=str(props.get("ETag") or props.get("Etag") or blob.length),
                               size=int(blob.length or 0))
    await intake.start_processing(client, intake.orchestration_input(ref))
