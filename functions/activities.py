"""Activity triggers of the processing pipeline: each body hands its reference to shared.services.process.

Results and failures go to the Durable history: `redacted_activity` redacts them first. The processing steps
are `fails_fast`: a PermanentError becomes a result the orchestrator fails the step on, without retries.

Cold start: each body imports the service it calls; the module imports only the light decorators and
get_services (docs/architecture.md, "Cold start")."""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df

from shared.bootstrap import get_services
from shared.services.activity_boundary import fails_fast, redacted_activity

bp = df.Blueprint()


@bp.activity_trigger(input_name="ref")
@redacted_activity
@fails_fast
def start_job(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.start_job(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
@fails_fast
def validate_and_transform(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.validate_and_transform(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
@fails_fast
def plan_routes(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.plan_routes(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
@fails_fast
def route_file(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.route_file(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
@fails_fast
def archive_file(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.archive_file(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
def quarantine_file(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.quarantine_file(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
def complete_job(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.complete_job(get_services(), ref)


@bp.activity_trigger(input_name="ref")
@redacted_activity
def fail_job(ref: dict[str, Any]) -> dict[str, Any]:
    from shared.services import process

    return process.fail_job(get_services(), ref)
