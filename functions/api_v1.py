"""HTTP API v1: one anonymous route under /api/v1 handed to shared.api (which authenticates every request).

Cold start: the API package is imported inside the body (docs/architecture.md, "Cold start")."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from functions.http_util import from_api
from shared.bootstrap import get_services

bp = df.Blueprint()


@bp.function_name("api_v1")
@bp.route(route="v1/{*path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
          auth_level=func.AuthLevel.ANONYMOUS)
def api_v1(req: func.HttpRequest) -> func.HttpResponse:
    from shared.api.app import dispatch
    from shared.api.http import ApiRequest

    request = ApiRequest(method=req.method, path="/" + (req.route_params.get("path") or "").strip("/"),
                         query=dict(req.params), headers={k.lower(): v for k, v in req.headers.items()},
                         body=req.get_body() or b"")
    return from_api(dispatch(get_services(), request))
