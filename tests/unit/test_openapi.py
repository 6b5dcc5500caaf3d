"""The OpenAPI 3.1 document: valid (openapi-spec-validator), generated from the route models, and naming exactly
the HTTP routes the app registers (v1 routes of the route table and the function app's own HTTP triggers)."""

from __future__ import annotations

import importlib
import re
import sys

from openapi_spec_validator import validate

from shared.api.openapi import document
from shared.api.router import PREFIX, ROUTES
from tests.api_world import ApiWorld


def _function_app_routes() -> set[tuple[str, str]]:
    """(method, path) of every HTTP trigger in function_app.py, from the functions library's own index."""
    sys.modules.pop("function_app", None)
    app = importlib.import_module("function_app").app
    found: set[tuple[str, str]] = set()
    for fn in app.get_functions():
        trigger = fn.get_trigger()
        if trigger is None or trigger.get_binding_name() != "httpTrigger":
            continue
        data = trigger.get_dict_repr()
        for method in data.get("methods") or ["GET"]:
            found.add((str(method).lower(), "/api/" + str(data["route"]).strip("/")))
    return found


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_registered_route_is_documented_and_nothing_else() -> None:
    doc = document()
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    registered = {(r.method.lower(), PREFIX + r.path) for r in ROUTES}
    app_routes = _function_app_routes()
    catch_all = {(m, p) for m, p in app_routes if p.startswith(PREFIX + "/{*")}
    assert {p for _, p in catch_all} == {PREFIX + "/{*path}"}  # v1 is one host route, dispatched by the table
    registered |= app_routes - catch_all
    assert registered - documented == set(), "routes missing from the OpenAPI document"
    assert documented - registered == set(), "the document names routes that do not exist"


def test_schemas_come_from_the_route_models() -> None:
    doc = document()
    jobs = doc["paths"][PREFIX + "/jobs"]["get"]
    names = {p["name"] for p in jobs["parameters"]}
    assert names == {"partner", "status", "type", "since", "until", "file_prefix", "limit", "continuation"}
    assert jobs["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobPage")
    assert "JobSummary" in doc["components"]["schemas"]
    legacy = doc["paths"]["/api/jobs"]["get"]
    assert legacy["deprecated"] is True


def test_the_document_is_served_anonymously() -> None:
    r = ApiWorld().call("GET", "/openapi.json", key=False)
    assert r.status == 200 and re.search(rb'"openapi":\s*"3\.1\.0"', r.read())
