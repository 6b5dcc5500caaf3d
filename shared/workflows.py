"""Orchestrator generators (deterministic): they only coordinate; activities do the work.

No I/O, no clocks, no random ids, no settings here: `context.current_utc_datetime` and
`context.new_uuid()` are the only sources of time and ids. Inputs and outputs are references
(job id, container, blob path), never file bytes: they are stored in the orchestration history.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from shared.observability.redaction import redact

# Steps in order; each has its own retry policy (see `RETRY_POLICY`).
STEPS = ("start", "validate", "route", "archive", "complete")


@dataclass(frozen=True)
class RetryPolicy:
    """Durable retry options of one step: the wait before retry n is first * backoff^(n-1), at most max."""

    first_interval_ms: int
    max_attempts: int
    backoff_coefficient: float = 2.0
    max_interval_ms: int = 60_000

    def delays_ms(self) -> list[int]:
        """The wait before each retry (max_attempts - 1 of them), as the Durable extension computes it."""
        return [int(min(self.first_interval_ms * self.backoff_coefficient ** n, self.max_interval_ms))
                for n in range(self.max_attempts - 1)]


# Routes talk to other systems: more patience. Completion and failure are bookkeeping that must land (a job
# whose deliveries happened is never reported FAILED because its completion could not be written): the most
# patience, about 4 minutes each; what still fails is finished by the sweep (shared/services/sweep.py).
RETRY_POLICY: dict[str, RetryPolicy] = {
    "start": RetryPolicy(1_000, 3),
    "validate": RetryPolicy(2_000, 3),
    "route": RetryPolicy(5_000, 5),
    "archive": RetryPolicy(2_000, 3),
    "complete": RetryPolicy(2_000, 8, max_interval_ms=120_000),
    "quarantine": RetryPolicy(2_000, 5),
    "fail": RetryPolicy(2_000, 8, max_interval_ms=120_000),
}


@dataclass(frozen=True)
class ProcessActivities:
    """References to the registered activity functions (passed in by functions/orchestrators.py)."""

    start_job: Any
    validate_and_transform: Any
    plan_routes: Any
    route_file: Any
    archive_file: Any
    quarantine_file: Any
    complete_job: Any
    fail_job: Any


def failure_reason(exc: BaseException) -> str:
    """The first meaningful line of an activity failure, redacted, short enough for a table property.
    (It goes to the orchestration output and to the inputs of quarantine_file / fail_job: the history.)"""
    text = redact(str(exc)).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:1000]
    return text[:1000]


@dataclass(frozen=True)
class _Failure:
    step: str
    reason: str
    report_path: str = ""


Call = Callable[[Any, str, dict[str, Any]], Any]


#: The key of a step's result that says it failed for good (shared.services.activity_boundary.fails_fast
#: returns it; defined here because the orchestrator module imports nothing that does I/O).
PERMANENT = "permanent_failure"


class PermanentStepFailure(Exception):
    """A step's activity reported a failure that retrying cannot mend."""


def raise_permanent(*results: Any) -> None:
    """Raise PermanentStepFailure when any of the step results says it failed for good."""
    for result in results:
        if isinstance(result, dict) and result.get(PERMANENT):
            raise PermanentStepFailure(str(result[PERMANENT]))


def process_file(
    context: Any, acts: ProcessActivities, retry: Callable[[str], Any]
) -> Generator[Any, Any, dict[str, Any]]:
    """validate+transform -> route (fan-out) -> archive -> complete; on failure quarantine + FAILED.

    Validation and transformation are one activity: one streaming pass over the file (see
    benchmarks/README.md: two passes cost 1.7x), recorded as two steps in the job's events.

    Every run ends with an output whose `status` is COMPLETED or FAILED. When the last bookkeeping write
    fails after its retries, the output says so (`completion_pending` / `fail_pending`) and the sweep
    records it from the output later: the job never stays RUNNING."""
    ref: dict[str, Any] = dict(context.get_input())

    def call(activity: Any, name: str, payload: dict[str, Any]) -> Any:
        return context.call_activity_with_retry(activity, retry(name), payload)

    outcome = yield from _deliver(context, acts, call, ref)
    if isinstance(outcome, _Failure):
        return (yield from _fail(context, acts, call, ref, outcome))
    results, rows = outcome
    done: dict[str, Any] = {"job_id": ref["job_id"], "status": "COMPLETED", "routes": results}
    try:
        yield call(acts.complete_job, "complete", {**ref, "routes": len(results), "rows": rows})
    except Exception as exc:  # noqa: BLE001 - delivered already: never quarantine or fail it for its bookkeeping
        context.set_custom_status({"step": "complete", "completion_pending": True})
        return {**done, "completion_pending": True, "rows": rows,
                "reason": f"complete_job failed: {failure_reason(exc)}"}
    context.set_custom_status({"step": "done"})
    return done


def _deliver(
    context: Any, acts: ProcessActivities, call: Call, ref: dict[str, Any],
) -> Generator[Any, Any, _Failure | tuple[list[Any], int]]:
    """Every step up to the archive: the route results and row count, or the failure that stopped it."""
    step = "start"
    try:
        context.set_custom_status({"step": step})
        raise_permanent((yield call(acts.start_job, "start", ref)))

        step = "validate"
        context.set_custom_status({"step": step})
        validation = yield call(acts.validate_and_transform, step, ref)
        raise_permanent(validation)
        if not validation.get("valid", False):
            return _Failure(step, validation.get("reason", "validation failed"), validation.get("report_path", ""))
        output = validation["output"]

        step = "route"
        plan = yield call(acts.plan_routes, step, ref)
        raise_permanent(plan)
        destinations = plan.get("destinations", [])
        if not destinations:
            return _Failure(step, plan.get("reason", "no matching route"))
        context.set_custom_status({"step": step, "destinations": len(destinations)})
        route = plan.get("route", "")
        indexed = list(enumerate(destinations))
        # Deliveries fan out in parallel; event destinations go last so they can name where the file went.
        # No fan-out over nothing: a route of event destinations only schedules no delivery (devhost answers
        # an empty task_all with None, and the Durable SDK never completes one).
        deliveries = [
            call(acts.route_file, step, {**ref, "output": output, "route": route, "destination": dest, "index": i})
            for i, dest in indexed if dest.get("kind") != "event"
        ]
        results = list((yield context.task_all(deliveries))) if deliveries else []
        raise_permanent(*results)
        events = [(i, dest) for i, dest in indexed if dest.get("kind") == "event"]
        if events:
            results = results + (yield context.task_all([
                call(acts.route_file, step, {**ref, "output": output, "route": route, "destination": dest,
                                             "index": i, "delivered": results})
                for i, dest in events
            ]))
            raise_permanent(*results)

        step = "archive"
        context.set_custom_status({"step": step})
        raise_permanent((yield call(acts.archive_file, step, ref)))
    except Exception as exc:  # noqa: BLE001 - an activity failed after its retries: record it, then stop
        return _Failure(step, failure_reason(exc))
    return list(results), int(output.get("rows", 0))


def _fail(
    context: Any, acts: ProcessActivities, call: Call, ref: dict[str, Any], failure: _Failure,
) -> Generator[Any, Any, dict[str, Any]]:
    """Quarantine, then FAILED with every reason. A failing quarantine never keeps fail_job from running;
    a failing fail_job leaves the output FAILED with `fail_pending`, which the sweep records."""
    context.set_custom_status({"step": failure.step, "failed": True})
    payload = {**ref, "step": failure.step, "reason": failure.reason, "report_path": failure.report_path}
    reasons = [failure.reason]
    try:
        yield call(acts.quarantine_file, "quarantine", payload)
    except Exception as exc:  # noqa: BLE001 - the file stays where it landed (replayable); the reason is kept
        reasons.append(f"quarantine failed: {failure_reason(exc)}")
    payload["reason"] = "; ".join(reasons)
    result = {"job_id": ref["job_id"], "status": "FAILED", "step": failure.step, "reason": payload["reason"]}
    try:
        yield call(acts.fail_job, "fail", payload)
    except Exception as exc:  # noqa: BLE001 - storage is down: the sweep records the failure from this output
        context.set_custom_status({"step": failure.step, "failed": True, "fail_pending": True})
        return {**result, "fail_pending": True, "reason": f"{payload['reason']}; fail_job failed: "
                                                          f"{failure_reason(exc)}"}
    return result
