"""HTTP API before v1: health (anonymous: status only), health details; jobs, job detail and replay (function
key) are deprecated aliases of the v1 routes (shared.api) with a Deprecation header.

Cold start: services and domain errors are imported inside the bodies (docs/architecture.md, "Cold start")."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from functions.http_util import deprecated, error_response, from_api, http_function, json_response
from shared.bootstrap import get_services

bp = df.Blueprint()


@http_function(bp, "api_health", route="health", methods=["GET"],
               auth_level=func.AuthLevel.ANONYMOUS)
def api_health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.services import health

    report = health.liveness(get_services().settings)
    return json_response(report.liveness(), report.http_status)


@http_function(bp, "api_health_details", route="health/details", methods=["GET"],
               auth_level=func.AuthLevel.FUNCTION)
def api_health_details(req: func.HttpRequest) -> func.HttpResponse:
    from shared.services import health, poison

    services = get_services()
    report = health.details(services.settings)
    queue_ok = report.dependencies.get("storage.queue", {}).get("state") == "ok"
    body = {**report.to_dict(), "poison": poison.poison_health(services, queue_reachable=queue_ok)}
    return json_response(body, report.http_status)


@http_function(bp, "api_jobs", route="jobs", methods=["GET"],
               auth_level=func.AuthLevel.FUNCTION)
def api_jobs(req: func.HttpRequest) -> func.HttpResponse:
    from shared.api.legacy import legacy_jobs

    return from_api(legacy_jobs(get_services(), dict(req.params)))


@http_function(bp, "api_job_detail", route="jobs/{job_id}", methods=["GET"],
               auth_level=func.AuthLevel.FUNCTION)
def api_job_detail(req: func.HttpRequest) -> func.HttpResponse:
    from shared.domain.errors import NotFoundError
    from shared.services import jobs_view

    job_id = req.route_params["job_id"]
    try:
        services = get_services()
        response = json_response(jobs_view.job_detail(services.jobs, job_id, services.deliveries))
    except NotFoundError as exc:
        response = error_response(404, str(exc))
    return deprecated(response, f"/api/v1/jobs/{job_id}")


@http_function(bp, "api_job_replay", route="jobs/{job_id}/replay", methods=["POST"],
               auth_level=func.AuthLevel.FUNCTION)
def api_job_replay(req: func.HttpRequest) -> func.HttpResponse:
    from shared.domain.errors import DependencyUnavailableError, NotFoundError
    from shared.domain.hostmessages import BadMessageError
    from shared.services import intake

    job_id = req.route_params["job_id"]
    try:
        response = json_response(intake.replay(get_services(), job_id), 202)
    except NotFoundError as exc:
        response = error_response(404, str(exc))
    except BadMessageError as exc:  # the job's stored reference is refused: nothing was written
        response = error_response(409, str(exc.detail))
    except DependencyUnavailableError as exc:  # the new job is recorded; the jobs sweep queues it later
        response = error_response(503, str(exc))
    return deprecated(response, f"/api/v1/jobs/{job_id}/replay")
