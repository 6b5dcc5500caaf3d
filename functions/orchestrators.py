"""Orchestration triggers: the generators live in shared.workflows; this wires activities and retries."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df

from functions import activities
from shared.workflows import RETRY_POLICY, ProcessActivities, process_file

bp = df.Blueprint()

ACTIVITIES = ProcessActivities(
    start_job=activities.start_job, validate_and_transform=activities.validate_and_transform,
    plan_routes=activities.plan_routes,
    route_file=activities.route_file, archive_file=activities.archive_file,
    quarantine_file=activities.quarantine_file, complete_job=activities.complete_job,
    fail_job=activities.fail_job,
)


def retry_options(step: str) -> df.RetryOptions:
    first_ms, attempts = RETRY_POLICY[step]
    return df.RetryOptions(first_retry_interval_in_milliseconds=first_ms, max_number_of_attempts=attempts)


@bp.orchestration_trigger(context_name="context")
def process_file_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from process_file(context, ACTIVITIES, retry_options))
