"""Poll triggers: the poll-requests queue worker, and POST /api/partners/{partner}/poll on demand.

Cold start: services and message models are imported inside the bodies (docs/architecture.md, "Cold start")."""

from __future__ import annotations

from typing import Any, get_args

import azure.durable_functions as df
import azure.functions as func

from functions.http_util import bad_channel, deprecated, error_response, http_function, json_response
from shared.bootstrap import get_services

bp = df.Blueprint()


@bp.function_name("poll_worker")
@bp.queue_trigger(arg_name="msg", queue_name="%POLL_QUEUE%", connection="AzureWebJobsStorage")
def poll_worker(msg: func.QueueMessage) -> None:
    from shared.metrics import record_queue_age
    from shared.observability.tracing import continued_from
    from shared.services import poison
    from shared.services.scheduling import run_poll_request

    services = get_services()
    queue = services.settings.poll_queue
    record_queue_age(queue, msg.insertion_time)
    accepted = poison.accept_poll_request(services, poison.delivery_of(queue, msg))
    if accepted is not None:  # None: a bad message, dead-lettered with its reason (never retried)
        request, carrier = accepted
        with continued_from(carrier):
            run_poll_request(services, request, scale_out=True)


@http_function(bp, "api_partner_poll", route="partners/{partner}/poll", methods=["POST"],
               auth_level=func.AuthLevel.FUNCTION)
def api_partner_poll(req: func.HttpRequest) -> func.HttpResponse:
    services, partner = get_services(), req.route_params["partner"]
    return deprecated(_partner_poll(services, partner, req), f"/api/v1/partners/{partner}/poll")


def _partner_poll(services: Any, partner: str, req: func.HttpRequest) -> func.HttpResponse:
    from shared.domain.errors import ConfigurationError, NotFoundError
    from shared.domain.jobs import utcnow
    from shared.domain.messages import Channel, PollRequest
    from shared.services.scheduling import poll_channel, request_poll, run_poll_request

    channels: tuple[str, ...] = get_args(Channel)
    asked = req.params.get("channel")
    if asked is not None and asked not in channels:
        return bad_channel(asked, channels)
    try:
        channel = poll_channel(services, partner, asked)
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
