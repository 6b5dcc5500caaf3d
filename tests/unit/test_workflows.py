"""process_file orchestrator driven as a generator: happy path, failure at each step, retries, fan-out."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, fields
from typing import Any

import pytest

from shared.workflows import RETRY_POLICY, ProcessActivities, process_file

ACTS = ProcessActivities(**{f.name: f.name for f in fields(ProcessActivities)})
REF = {"job_id": "job-1", "partner": "acme", "container": "inbound", "blob_path": "acme/a.csv",
       "file_name": "a.csv", "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}


@dataclass
class Call:
    activity: str
    retry: tuple[int, int]
    payload: dict[str, Any]


@dataclass
class FakeContext:
    input: dict[str, Any]
    statuses: list[Any] = field(default_factory=list)

    def get_input(self) -> dict[str, Any]:
        return self.input

    def set_custom_status(self, status: Any) -> None:
        self.statuses.append(status)

    def call_activity_with_retry(self, activity: str, retry: tuple[int, int], payload: dict[str, Any]) -> Call:
        return Call(activity, retry, payload)

    def task_all(self, tasks: list[Call]) -> list[Call]:
        # devhost answers an empty fan-out with None and the Durable SDK never completes one: none is asked for.
        assert tasks, "task_all over no tasks"
        return list(tasks)


def retry(step: str) -> tuple[int, int]:
    return RETRY_POLICY[step]


def drive(responder: Callable[[Call], Any]) -> tuple[dict[str, Any], list[Call]]:
    """Run the generator, answering each scheduled activity (or fan-out) with responder; raise = failure."""
    ctx = FakeContext(dict(REF))
    gen: Generator[Any, Any, dict[str, Any]] = process_file(ctx, ACTS, retry)
    calls: list[Call] = []
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            task = gen.throw(error) if error else gen.send(value)
        except StopIteration as stop:
            return stop.value, calls
        error = None
        try:
            if isinstance(task, list):
                calls.extend(task)
                value = [responder(t) for t in task]
            else:
                calls.append(task)
                value = responder(task)
        except Exception as exc:  # noqa: BLE001 - delivered into the orchestrator like the framework does
            error = exc


def happy(call: Call) -> Any:
    return {
        "validate_and_transform": {"valid": True, "output": {"container": "staging", "path": "acme/job-1/a.jsonl",
                                                             "rows": 3}},
        "plan_routes": {"route": "main", "destinations": [{"kind": "blob"}, {"kind": "event"}]},
        "route_file": {"destination": call.payload.get("destination", {}).get("kind"), "ok": True},
    }.get(call.activity, None)


def test_happy_path_runs_every_step_in_order_with_references_only() -> None:
    result, calls = drive(happy)
    assert [c.activity for c in calls] == ["start_job", "validate_and_transform", "plan_routes",
                                           "route_file", "route_file", "archive_file", "complete_job"]
    assert result == {"job_id": "job-1", "status": "COMPLETED",
                      "routes": [{"destination": "blob", "ok": True}, {"destination": "event", "ok": True}]}
    # Fan-out: one route_file per destination, each told which destination and where the output is.
    routes = [c for c in calls if c.activity == "route_file"]
    assert [c.payload["destination"] for c in routes] == [{"kind": "blob"}, {"kind": "event"}]
    assert all(c.payload["output"]["path"] == "acme/job-1/a.jsonl" for c in routes)
    # The event destination runs after the deliveries and is told what they delivered.
    assert "delivered" not in routes[0].payload
    assert routes[1].payload["delivered"] == [{"destination": "blob", "ok": True}]
    assert all(c.payload["traceparent"] == REF["traceparent"] for c in calls)
    assert calls[-1].payload["rows"] == 3 and calls[-1].payload["routes"] == 2


def test_each_step_uses_its_retry_policy() -> None:
    _, calls = drive(happy)
    by_activity = {c.activity: c.retry for c in calls}
    assert by_activity["route_file"] == RETRY_POLICY["route"]
    assert by_activity["validate_and_transform"] == RETRY_POLICY["validate"]


def test_invalid_file_is_quarantined_and_failed_without_routing() -> None:
    def responder(call: Call) -> Any:
        if call.activity == "validate_and_transform":
            return {"valid": False, "reason": "3 errors; first: row 2, amount: not a decimal",
                    "report_path": "reports/acme/job-1/validation.json"}
        return happy(call)

    result, calls = drive(responder)
    assert [c.activity for c in calls] == ["start_job", "validate_and_transform", "quarantine_file", "fail_job"]
    assert result["status"] == "FAILED" and result["step"] == "validate"
    assert calls[2].payload["report_path"] == "reports/acme/job-1/validation.json"
    assert calls[3].payload["reason"].startswith("3 errors")


@pytest.mark.parametrize("failing", ["start_job", "validate_and_transform", "plan_routes", "route_file",
                                     "archive_file"])
def test_failure_at_each_step_quarantines_and_fails_the_job(failing: str) -> None:
    def responder(call: Call) -> Any:
        if call.activity == failing:
            raise RuntimeError(f"Activity function '{failing}' failed: boom\n  Traceback ...")
        return happy(call)

    order = [c.activity for c in drive(happy)[1]]
    result, calls = drive(responder)
    # Everything up to the (first) failing call ran, nothing after it; then quarantine and fail.
    expected = [*order[:order.index(failing) + 1], "quarantine_file", "fail_job"]
    assert [c.activity for c in calls] == expected
    assert result["status"] == "FAILED"
    assert result["reason"] == f"Activity function '{failing}' failed: boom"


def test_deliveries_fan_out_together() -> None:
    def responder(call: Call) -> Any:
        if call.activity == "plan_routes":
            return {"route": "r", "destinations": [{"kind": "blob"}, {"kind": "sftp"}, {"kind": "blob"}]}
        return happy(call)

    ctx = FakeContext(dict(REF))
    gen = process_file(ctx, ACTS, retry)
    task = gen.send(None)
    while not isinstance(task, list):
        task = gen.send(responder(task))
    assert [c.payload["index"] for c in task] == [0, 1, 2]


def test_no_destinations_fails_with_the_planners_reason() -> None:
    def responder(call: Call) -> Any:
        if call.activity == "plan_routes":
            return {"route": "", "destinations": [], "reason": "no route matches 'x.bin' and no default route"}
        return happy(call)

    result, calls = drive(responder)
    assert result["reason"] == "no route matches 'x.bin' and no default route"
    assert "route_file" not in [c.activity for c in calls]


def failing_on(*names: str, base: Callable[[Call], Any] = happy) -> Callable[[Call], Any]:
    def responder(call: Call) -> Any:
        if call.activity in names:
            raise RuntimeError(f"Activity function '{call.activity}' failed: storage unavailable\n  Traceback ...")
        return base(call)
    return responder


def test_failing_quarantine_still_fails_the_job_with_every_reason() -> None:
    result, calls = drive(failing_on("archive_file", "quarantine_file"))
    assert [c.activity for c in calls][-3:] == ["archive_file", "quarantine_file", "fail_job"]
    reason = calls[-1].payload["reason"]
    assert reason.startswith("Activity function 'archive_file' failed: storage unavailable")
    assert "quarantine failed: Activity function 'quarantine_file' failed: storage unavailable" in reason
    assert result["status"] == "FAILED" and result["step"] == "archive" and result["reason"] == reason
    assert "fail_pending" not in result


def test_invalid_file_whose_quarantine_fails_is_failed_once_with_the_validation_reason() -> None:
    def invalid(call: Call) -> Any:
        if call.activity == "validate_and_transform":
            return {"valid": False, "reason": "validation failed: 1 error", "report_path": "reports/r.json"}
        return happy(call)

    result, calls = drive(failing_on("quarantine_file", base=invalid))
    # One quarantine attempt, one fail_job: the quarantine failure is not taken for a new failure of the job.
    assert [c.activity for c in calls] == ["start_job", "validate_and_transform", "quarantine_file", "fail_job"]
    assert result["status"] == "FAILED" and result["step"] == "validate"
    assert result["reason"].startswith("validation failed: 1 error; quarantine failed: ")


def test_failing_fail_job_ends_the_orchestration_with_the_failure_pending_for_the_sweep() -> None:
    result, calls = drive(failing_on("route_file", "fail_job"))
    assert [c.activity for c in calls][-2:] == ["quarantine_file", "fail_job"]
    assert result["status"] == "FAILED" and result["fail_pending"] is True and result["step"] == "route"
    assert result["reason"].startswith("Activity function 'route_file' failed: storage unavailable")
    assert "fail_job failed: " in result["reason"]


def test_failing_complete_job_after_deliveries_is_not_quarantined_nor_failed() -> None:
    result, calls = drive(failing_on("complete_job"))
    names = [c.activity for c in calls]
    assert names[-1] == "complete_job"
    assert "quarantine_file" not in names and "fail_job" not in names
    # The deliveries happened: the orchestration says so, and leaves the bookkeeping to the sweep.
    assert result["status"] == "COMPLETED" and result["completion_pending"] is True
    assert result["routes"] == [{"destination": "blob", "ok": True}, {"destination": "event", "ok": True}]
    assert result["rows"] == 3
    assert result["reason"].startswith("complete_job failed: Activity function 'complete_job' failed")


def test_retries_back_off_exponentially_and_completion_is_the_most_patient() -> None:
    for step, policy in RETRY_POLICY.items():
        delays = policy.delays_ms()
        assert len(delays) == policy.max_attempts - 1, step
        assert all(b >= a for a, b in itertools.pairwise(delays)), step
        assert delays[1] == min(delays[0] * policy.backoff_coefficient, policy.max_interval_ms), step
        assert max(delays) <= policy.max_interval_ms, step
    assert RETRY_POLICY["quarantine"].delays_ms()[:3] == [2_000, 4_000, 8_000]
    patience = {step: sum(policy.delays_ms()) for step, policy in RETRY_POLICY.items()}
    assert patience["complete"] == max(patience.values()) and patience["fail"] >= patience["quarantine"]


def test_fail_job_has_its_own_retry_policy() -> None:
    _, calls = drive(failing_on("route_file"))
    by_activity = {c.activity: c.retry for c in calls}
    assert by_activity["fail_job"] == RETRY_POLICY["fail"]
    assert by_activity["quarantine_file"] == RETRY_POLICY["quarantine"]


def test_durable_retry_options_send_the_back_off_to_the_extension() -> None:
    from azure.durable_functions.models.actions import CallActivityWithRetryAction

    from functions.orchestrators import retry_options

    action = CallActivityWithRetryAction("complete_job", retry_options("complete"), {"job_id": "job-1"})
    assert action.to_json()["retryOptions"] == {
        "firstRetryIntervalInMilliseconds": 2_000, "maxNumberOfAttempts": 8, "backoffCoefficient": 2.0,
        "maxRetryIntervalInMilliseconds": 120_000}


def test_a_permanent_route_failure_fails_the_job_at_once_without_the_other_steps() -> None:
    """A destination that refuses for good (an existing blob under on_exists: fail, a kind not configured)
    reports `permanent_failure` instead of raising: the orchestrator stops at that step with its reason, runs
    no event destination and no archive, quarantines and fails the job."""
    def responder(call: Call) -> Any:
        if call.activity == "route_file" and call.payload["destination"]["kind"] == "blob":
            return {"permanent_failure": "BlobExistsError: processed/acme/a.jsonl belongs to job job-0"}
        return happy(call)

    result, calls = drive(responder)
    assert result["status"] == "FAILED" and result["step"] == "route"
    assert "BlobExistsError: processed/acme/a.jsonl belongs to job job-0" in result["reason"]
    names = [c.activity for c in calls]
    assert "archive_file" not in names and "complete_job" not in names
    assert [c.payload["destination"]["kind"] for c in calls if c.activity == "route_file"] == ["blob"]
    assert names[-2:] == ["quarantine_file", "fail_job"]


@pytest.mark.parametrize("step", ["start_job", "validate_and_transform", "plan_routes", "archive_file"])
def test_a_permanent_failure_of_any_step_stops_the_run_at_that_step(step: str) -> None:
    def responder(call: Call) -> Any:
        if call.activity == step:
            return {"permanent_failure": "ConfigurationError: partner acme has no processing rule"}
        return happy(call)

    result, calls = drive(responder)
    assert result["status"] == "FAILED"
    assert "ConfigurationError: partner acme has no processing rule" in result["reason"]
    names = [c.activity for c in calls]
    assert names[names.index(step) + 1:] == ["quarantine_file", "fail_job"]


def test_a_route_of_event_destinations_only_completes_without_an_empty_fan_out() -> None:
    def responder(call: Call) -> Any:
        if call.activity == "plan_routes":
            return {"route": "events", "destinations": [{"kind": "event"}]}
        return happy(call)

    result, calls = drive(responder)
    assert result["status"] == "COMPLETED" and result["routes"] == [{"destination": "event", "ok": True}]
    (route,) = [c for c in calls if c.activity == "route_file"]
    assert route.payload["destination"] == {"kind": "event"} and route.payload["delivered"] == []
