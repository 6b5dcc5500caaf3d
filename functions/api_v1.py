"""HTTP API v1: one anonymous route under /api/v1 handed to shared.api (which authenticates every request).

With HTTP streams (the default, functions.http_util) an upload's body reaches the API as it arrives and a
download is sent as it is read. Cold start: the API package is imported inside the body (docs/architecture.md,
"Cold start")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import azure.durable_functions as df
import azure.functions as func

from functions.http_util import api_function
from shared.bootstrap import get_services

if TYPE_CHECKING:
    from shared.api.http import ApiRequest, ApiResponse

bp = df.Blueprint()


def _request(method: str, url: str, route_params: dict[str, str], query: dict[str, str],
             headers: dict[str, str]) -> dict[str, Any]:
    return {"method": method, "path": "/" + (route_params.get("path") or "").strip("/"), "query": query,
            "headers": headers}


@api_function(bp, "api_v1", route="v1/{*path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"],
              auth_level=func.AuthLevel.ANONYMOUS, request=_request)
def api_v1(request: ApiRequest) -> ApiResponse:
    from shared.api.app import dispatch

    return dispatch(get_services(), request)
