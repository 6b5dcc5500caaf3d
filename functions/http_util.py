"""Small helpers shared by HTTP trigger adapters."""

from __future__ import annotations

import json
from typing import Any

import azure.functions as func


def json_response(body: Any, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str, indent=2), status_code=status,
                             mimetype="application/json")


def error_response(status: int, message: str) -> func.HttpResponse:
    return json_response({"error": message}, status)
