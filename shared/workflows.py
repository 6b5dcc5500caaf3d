"""Orchestrator generators (deterministic): they only coordinate; activities do the work.

No I/O, no clocks, no random ids, no settings here: `context.current_utc_datetime` and
`context.new_uuid()` are the only sources of time and ids. Inputs and outputs are references
(job id, container, blob path), never file bytes: they are stored in the orchestration history.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

# Steps in order; each has its own retry policy (see `RETRY_POLICY`).
STEPS = ("start", "validate", "route", "archive", "complete")

# step -> (first retry interval ms, max attempts). Routes talk to other systems: more patience.
RETRY_POLICY: dict[str, tuple[int, int]] = {
    "start": (1_000, 3),
    "validate": (2_000, 3),
    "route": (5_000, 5),
    "archive": (2_000, 3),
    "complete": (1_000, 5),
    "quarantine": (2_000, 5),
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
    """The first meaningful line of an activity failure, short enough for a table property."""
    text = str(exc).strip() or type(exc).__name__
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:1000]
    return text[:1000]


def process_file(
    context: Any, acts: ProcessActivities, retry: Callable[[str], Any]
) -> Generator[Any, Any, dict[str, Any]]:
    """validate+transform -> route (fan-out) -> archive -> complete; on failure quarantine + FAILED.

    Validation and transformation are one activity: one streaming pass over the file (see
    benchmarks/README.md: two passes cost 1.7x), recorded as two steps in the job's events."""
    ref: dict[str, Any] = dict(context.get_input())
    step = "start"

    def call(activity: Any, name: str, payload: dict[str, Any]) -> Any:
        return context.call_activity_with_retry(activity, retry(name), payload)

    try:
        context.set_custom_status({"step": step})
        yield call(acts.start_job, "start", ref)

        step = "validate"
        context.set_custom_status({"step": step})
        validation = yield call(acts.validate_and_transform, step, ref)
        if not validation.get("valid", False):
            return (yield from _fail(context, acts, call, ref, step, validation.get("reason", "validation failed"),
                                     validation.get("report_path", "")))
        output = validation["output"]

        step = "route"
        plan = yield call(acts.plan_routes, step, ref)
        destinations = plan.get("destinations", [])
        if not destinations:
            return (yield from _fail(context, acts, call, ref, step, plan.get("reason", "no matching route"), ""))
        context.set_custom_status({"step": step, "destinations": len(destinations)})
        route = plan.get("route", "")
        indexed = list(enumerate(destinations))
        # Deliveries fan out in parallel; event destinations go last so they can name where the file went.
        results = yield context.task_all([
            call(acts.route_file, step, {**ref, "output": output, "route": route, "destination": dest, "index": i})
            for i, dest in indexed if dest.get("kind") != "event"
        ])
        events = [(i, dest) for i, dest in indexed if dest.get("kind") == "event"]
        if events:
            results = results + (yield context.task_all([
                call(acts.route_file, step, {**ref, "output": output, "route": route, "destination": dest,
                                             "index": i, "delivered": results})
                for i, dest in events
            ]))

        step = "archive"
        context.set_custom_status({"step": step})
        yield call(acts.archive_file, step, ref)

        step = "complete"
        yield call(acts.complete_job, step, {**ref, "routes": len(results), "rows": output.get("rows", 0)})
        context.set_custom_status({"step": "done"})
        return {"job_id": ref["job_id"], "status": "COMPLETED", "routes": results}
    except Exception as exc:  # noqa: BLE001 - an activity failed after its retries: record it, then stop
        return (yield from _fail(context, acts, call, ref, step, failure_reason(exc), ""))


def _fail(
    context: Any, acts: ProcessActivities, call: Callable[[Any, str, dict[str, Any]], Any], ref: dict[str, Any],
    step: str, reason: str, report_path: str,
) -> Generator[Any, Any, dict[str, Any]]:
    context.set_custom_status({"step": step, "failed": True})
    failure = {**ref, "step": step, "reason": reason, "report_path": report_path}
    yield call(acts.quarantine_file, "quarantine", failure)
    yield call(acts.fail_job, "complete", failure)
    return {"job_id": ref["job_id"], "status": "FAILED", "step": step, "reason": reason}
