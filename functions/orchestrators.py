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


class BackoffRetryOptions(df.RetryOptions):
    """RetryOptions with exponential back-off. The library's class (1.7) sends only the first interval and the
    attempts; the Durable extension also reads `backoffCoefficient` and `maxRetryIntervalInMilliseconds`
    (as the JavaScript library sends them), so they are added to the action's JSON here."""

    def __init__(self, first_retry_interval_in_milliseconds: int, max_number_of_attempts: int, *,
                 backoff_coefficient: float = 1.0, max_retry_interval_in_milliseconds: int | None = None) -> None:
        super().__init__(first_retry_interval_in_milliseconds, max_number_of_attempts)
        self.backoff_coefficient = backoff_coefficient
        self.max_retry_interval_in_milliseconds = max_retry_interval_in_milliseconds

    def to_json(self) -> dict[str, str | int]:
        doc: dict[str, Any] = dict(super().to_json())
        doc["backoffCoefficient"] = self.backoff_coefficient
        if self.max_retry_interval_in_milliseconds is not None:
            doc["maxRetryIntervalInMilliseconds"] = self.max_retry_interval_in_milliseconds
        return doc


def retry_options(step: str) -> df.RetryOptions:
    policy = RETRY_POLICY[step]
    return BackoffRetryOptions(policy.first_interval_ms, policy.max_attempts,
                               backoff_coefficient=policy.backoff_coefficient,
                               max_retry_interval_in_milliseconds=policy.max_interval_ms)


@bp.orchestration_trigger(context_name="context")
def process_file_orchestrator(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from process_file(context, ACTIVITIES, retry_options))
