"""The OpenAPI 3.1 document, generated from the route table and the pydantic models the routes use."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.api import app as _app  # noqa: F401 - registers every route
from shared.api.auth import OPERATE, READ, UPLOAD
from shared.api.models import ProblemDetails
from shared.api.problems import PROBLEM_TYPE
from shared.api.router import PREFIX, ROUTES

_REF = "#/components/schemas/{model}"
# The routes the app registered before v1 (functions/api.py, functions/polling.py), kept as deprecated aliases.
LEGACY_ROUTES: list[tuple[str, str, str]] = [
    ("get", "/api/health", "Liveness (anonymous)"),
    ("get", "/api/health/details", "Each dependency's state"),
    ("get", "/api/jobs", "Deprecated: use GET /api/v1/jobs"),
    ("get", "/api/jobs/{job_id}", "Deprecated: use GET /api/v1/jobs/{job_id}"),
    ("post", "/api/jobs/{job_id}/replay", "Deprecated: use POST /api/v1/jobs/{job_id}/replay"),
    ("post", "/api/partners/{partner}/poll", "Deprecated: use POST /api/v1/partners/{partner}/poll"),
]


def _security(role: str) -> list[dict[str, list[str]]]:
    if not role:
        return []
    if role == UPLOAD:
        return [{"partnerKey": []}, {"entra": [OPERATE]}, {"functionKey": []}]
    return [{"entra": [role]}, {"functionKey": []}]


def _problem_responses() -> dict[str, Any]:
    ref = {"content": {PROBLEM_TYPE: {"schema": {"$ref": _REF.format(model="ProblemDetails")}}}}
    return {str(code): {"description": text, **ref} for code, text in (
        (400, "a bad parameter (named in `parameter` and `detail`)"), (401, "no or bad credentials"),
        (403, "the caller lacks the role"), (404, "not found"), (409, "conflict"))}


@cache
def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [ProblemDetails]
    for r in ROUTES:
        models += [t for t in (r.response,) if t is not None]
    unique = list(dict.fromkeys(models))
    _, schemas = models_json_schema([(t, "serialization") for t in unique], ref_template=_REF)
    components: dict[str, Any] = dict(schemas.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        parameters: list[dict[str, Any]] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                            for p in r.params]
        if r.query is not None:
            qschema = r.query.model_json_schema(ref_template=_REF)
            components.update(qschema.pop("$defs", {}))
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                description = prop.pop("description", None)
                param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
                if description:
                    param["description"] = description
                parameters.append(param)
        ok: dict[str, Any] = {"description": "success"}
        if r.response is not None:
            ok["content"] = {r.media: {"schema": {"$ref": _REF.format(model=r.response.__name__)}}}
        elif r.media != "application/json" or r.path.endswith("openapi.json"):
            ok["content"] = {r.media: {"schema": {}}}
        op: dict[str, Any] = {"operationId": r.handler.__name__, "summary": r.summary, "parameters": parameters,
                              "responses": {str(r.status): ok, **_problem_responses()}, "security": _security(r.role)}
        if r.body:
            op["requestBody"] = {"required": True, "content": {r.body: {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}
        if r.role == UPLOAD:
            op["responses"]["413"] = {"description": "the body is over the size limit",
                                      "content": {PROBLEM_TYPE: {"schema": {"$ref": _REF.format(
                                          model="ProblemDetails")}}}}
        paths.setdefault(PREFIX + r.path, {})[r.method.lower()] = op
    for method, path, summary in LEGACY_ROUTES:
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in ("job_id", "partner") if "{" + p + "}" in path]
        paths.setdefault(path, {})[method] = {
            "operationId": f"legacy_{method}_" + re.sub(r"\W+", "_", path.strip("/")).strip("_"),
            "summary": summary, "deprecated": summary.startswith("Deprecated"), "parameters": params,
            "responses": {"200": {"description": "success"}},
            "security": [] if path == "/api/health" else [{"functionKey": []}]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Wharf API", "version": "1.0.0",
                 "description": "Partners, jobs, ledger, uploads and deliveries of a Wharf deployment. Errors are "
                                "RFC 9457 problem details."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "entra": {"type": "oauth2", "description": f"Entra ID access token; app roles {READ}, {OPERATE}",
                      "flows": {"clientCredentials": {"tokenUrl": "https://login.microsoftonline.com/"
                                                                  "{tenant}/oauth2/v2.0/token", "scopes": {
                                                          READ: "read", OPERATE: "operate"}}}},
            "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
            "partnerKey": {"type": "apiKey", "in": "header", "name": "X-Wharf-Partner-Key"}}},
    }
