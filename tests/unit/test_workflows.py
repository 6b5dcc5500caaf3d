"""process_file orchestrator driven as a generator: happy path, failure at each step, retries, fan-out."""

from __future__ import annotations

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
                                     "archive_file", "complete_job"])
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
