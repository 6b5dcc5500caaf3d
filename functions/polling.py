"""Poll triggers: the poll-requests queue worker, and POST /api/partners/{partner}/poll on demand."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from functions.http_util import error_response, json_response
from shared.bootstrap import get_services
from shared.domain.errors import ConfigurationError, NotFoundError
from shared.domain.hostmessages import decode_host_message
from shared.domain.jobs import utcnow
from shared.domain.messages import PollRequest
from shared.metrics import record_queue_age
from shared.observability.tracing import continued_from
from shared.services.scheduling import poll_channel, request_poll, run_poll_request

bp = df.Blueprint()


@bp.function_name("poll_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%POLL_QUEUE%", connection="AzureWebJobsStorage")
def poll_worker(msg: func.QueueMessage) -> None:
    record_queue_age(get_services().settings.poll_queue, msg.insertion_time)
    body = decode_host_message(msg.get_body())
    with continued_from(body):
        run_poll_request(get_services(), PollRequest.model_validate(body))


@bp.function_name("api_partner_poll")
@bp.route(route="partners/{partner}/poll", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def api_partner_poll(req: func.HttpRequest) -> func.HttpResponse:
    services, partner = get_services(), req.route_params["partner"]
    try:
        channel = poll_channel(services, partner, req.params.get("channel"))
        if req.params.get("wait", "").lower() not in ("1", "true", "yes"):
            request = request_poll(services, partner, requested_by="api", now=utcnow(), channel=channel)
            return json_response({"status": "queued", **request.to_message()}, 202)
        summary = run_poll_request(services, PollRequest(partner=partner, channel=channel, requested_by="api"))
    except NotFoundError as exc:
        return error_response(404, str(exc))
    except ConfigurationError as exc:
        return error_response(409, str(exc))
    status = {"failed": 502, "circuit_open": 503, "disabled": 409}.get(getattr(summary, "status", ""), 200)
    return json_response(summary.model_dump(mode="json"), status)
