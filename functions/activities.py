"""Activity triggers of the processing pipeline: each body hands its reference to shared.services.process."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from shared.bootstrap import get_services
from shared.services import process

bp = df.Blueprint()


@bp.activity_trigger(input_name="ref")
def start_job(ref: dict[str, Any]) -> dict[str, Any]:
    return process.start_job(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def validate_and_transform(ref: dict[str, Any]) -> dict[str, Any]:
    return process.validate_and_transform(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def plan_routes(ref: dict[str, Any]) -> dict[str, Any]:
    return process.plan_routes(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def route_file(ref: dict[str, Any]) -> dict[str, Any]:
    return process.route_file(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def archive_file(ref: dict[str, Any]) -> dict[str, Any]:
    return process.archive_file(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def quarantine_file(ref: dict[str, Any]) -> dict[str, Any]:
    return process.quarantine_file(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def complete_job(ref: dict[str, Any]) -> dict[str, Any]:
    return process.complete_job(get_services(), ref)


@bp.activity_trigger(input_name="ref")
def fail_job(ref: dict[str, Any]) -> dict[str, Any]:
    return process.fail_job(get_services(), ref)
