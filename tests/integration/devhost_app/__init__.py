"""A small function app for devhost's tests, built per test so queue and container names are unique."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response, StreamingResponse

from functions.orchestrators import BackoffRetryOptions


class Recorder:
    """What the functions saw, shared with the test thread."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._events: list[tuple[str, Any]] = []
        self._counters: dict[str, int] = {}

    def add(self, kind: str, value: Any) -> None:
        with self._cv:
            self._events.append((kind, value))
            self._cv.notify_all()

    def of(self, kind: str) -> list[Any]:
        with self._cv:
            return [v for k, v in self._events if k == kind]

    def wait_for(self, kind: str, count: int = 1, timeout: float = 20.0) -> list[Any]:
        with self._cv:
            ok = self._cv.wait_for(lambda: len([1 for k, _ in self._events if k == kind]) >= count, timeout)
        seen = self.of(kind)
        if not ok:
            raise AssertionError(f"expected {count} {kind!r} invocations within {timeout}s, saw {len(seen)}")
        return seen

    def bump(self, key: str) -> int:
        with self._cv:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]


def create_app(recorder: Recorder) -> df.DFApp:
    """Names come from app settings (%DEVHOST_TEST_*%), so each test can point the app at its own resources."""
    app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.timer_trigger(schedule="%DEVHOST_TEST_SCHEDULE%", arg_name="timer", run_on_startup=False)
    def devhost_timer(timer: func.TimerRequest) -> None:
        recorder.add("timer", timer)

    @app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_TEST_QUEUE%", connection="AzureWebJobsStorage")
    def devhost_queue(msg: func.QueueMessage) -> None:
        recorder.add("queue", msg)

    @app.queue_trigger(arg_name="msg", queue_name="%DEVHOST_TEST_FAILING_QUEUE%", connection="AzureWebJobsStorage")
    def devhost_failing_queue(msg: func.QueueMessage) -> None:
        recorder.add("failing", msg.dequeue_count)
        raise RuntimeError("this handler always fails")

    @app.blob_trigger(arg_name="blob", path="%DEVHOST_TEST_CONTAINER%/{partner}/{name}",
                      connection="AzureWebJobsStorage")
    def devhost_blob(blob: func.InputStream) -> None:
        recorder.add("blob", (blob.name, blob.length, blob.read()))

    @app.event_grid_trigger(arg_name="event")
    def devhost_eventgrid(event: func.EventGridEvent) -> None:
        data = event.get_json()
        recorder.add("eventgrid", (event.event_type, event.subject, data["url"], data["contentLength"]))

    @app.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def devhost_hello(req: func.HttpRequest) -> func.HttpResponse:
        doc = {"name": req.route_params["name"], "q": req.params.get("q"), "method": req.method, "url": req.url}
        return func.HttpResponse(json.dumps(doc), mimetype="application/json")

    @app.route(route="items/{item_id:int}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    async def devhost_item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(str(int(req.route_params["item_id"]) * 2))

    @app.route(route="stream/{name}", methods=["POST", "GET"])
    async def devhost_stream(req: Request) -> Response:
        # HTTP streams: the body as it arrives, a response body sent as it is produced.
        digest, pieces = hashlib.sha256(), 0
        async for chunk in req.stream():
            if chunk:
                digest.update(chunk)
                pieces += 1
        recorder.add("stream", {"name": req.path_params.get("name"), "pieces": pieces, "q": req.query_params.get("q")})

        def parts() -> Iterator[bytes]:
            for i in range(int(req.query_params.get("n", "3"))):
                yield f"part{i}\n".encode()

        return StreamingResponse(parts(), media_type="text/plain",
                                 headers={"x-sha256": digest.hexdigest(), "x-pieces": str(pieces)})

    @app.route(route="secret", methods=["GET"])
    def devhost_secret(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("ok")

    @app.route(route="orchestrators/{name}", methods=["POST"])
    @app.durable_client_input(client_name="client")
    async def devhost_start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
        body = req.get_json() if req.get_body() else None
        instance_id = await client.start_new(req.route_params["name"], req.params.get("instance_id"), body)
        return client.create_check_status_response(req, instance_id)

    @app.route(route="events/{instance_id}/{event}", methods=["POST"])
    @app.durable_client_input(client_name="client")
    async def devhost_raise(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
        await client.raise_event(req.route_params["instance_id"], req.route_params["event"], req.get_json())
        return func.HttpResponse(status_code=202)

    @app.activity_trigger(input_name="value")
    def double(value: int) -> int:
        return value * 2

    @app.activity_trigger(input_name="value")
    def add_one(value: int) -> int:
        return value + 1

    @app.activity_trigger(input_name="key")
    def flaky(key: str) -> str:
        attempt = recorder.bump(f"flaky:{key}")
        recorder.add("flaky", attempt)
        if attempt == 1:
            raise ConnectionError("transient failure on the first attempt")
        return f"ok after {attempt}"

    @app.orchestration_trigger(context_name="context")
    def chain_orchestrator(context: df.DurableOrchestrationContext):
        first = yield context.call_activity(double, context.get_input())
        second = yield context.call_activity(add_one, first)
        return [first, second]

    @app.orchestration_trigger(context_name="context")
    def fan_out_orchestrator(context: df.DurableOrchestrationContext):
        results = yield context.task_all([context.call_activity(double, n) for n in range(context.get_input())])
        return sum(results)

    @app.orchestration_trigger(context_name="context")
    def retry_orchestrator(context: df.DurableOrchestrationContext):
        options = df.RetryOptions(first_retry_interval_in_milliseconds=100, max_number_of_attempts=3)
        result = yield context.call_activity_with_retry(flaky, options, context.instance_id)
        return result

    @app.activity_trigger(input_name="key")
    def always_fails(key: str) -> str:
        recorder.add("always_fails", key)
        raise ConnectionError("still down")

    @app.orchestration_trigger(context_name="context")
    def backoff_orchestrator(context: df.DurableOrchestrationContext):
        options = BackoffRetryOptions(100, 4, backoff_coefficient=2.0, max_retry_interval_in_milliseconds=300)
        try:
            yield context.call_activity_with_retry(always_fails, options, context.instance_id)
        except Exception:  # noqa: BLE001 - the test checks every attempt ran, then gives up
            return "gave up"
        return "unexpected success"

    # Fired on demand only (host.run_timer): a timer with a durable client, as the jobs sweep is.
    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=False)
    @app.durable_client_input(client_name="client")
    async def devhost_client_timer(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
        for instance_id in recorder.of("lookup"):
            status = await client.get_status(instance_id)
            recorder.add("looked_up", (instance_id, getattr(status.runtime_status, "value", None)))

    @app.orchestration_trigger(context_name="context")
    def approval_orchestrator(context: df.DurableOrchestrationContext):
        context.set_custom_status("waiting")
        decision = yield context.wait_for_external_event("approval")
        yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=200))
        context.set_custom_status("approved")
        return {"decision": decision}

    @app.orchestration_trigger(context_name="context")
    def nondeterministic_orchestrator(context: df.DurableOrchestrationContext):
        # Chooses its activity from state outside the history: differs on replay, as Azure would catch.
        episode = recorder.bump(f"episode:{context.instance_id}")
        first = yield context.call_activity(double if episode == 1 else add_one, 1)
        return first

    @app.orchestration_trigger(context_name="context")
    def parent_orchestrator(context: df.DurableOrchestrationContext):
        one = yield context.call_sub_orchestrator(chain_orchestrator, 1)
        many = yield context.task_all([context.call_sub_orchestrator(chain_orchestrator, n) for n in (2, 3)])
        try:
            yield context.call_activity("no_such_activity", None)
        except Exception as exc:  # noqa: BLE001 - the test checks the orchestrator can catch it
            missing = "doesn't exist" in str(exc)
        return {"one": one, "many": many, "missing_activity_caught": missing}

    @app.orchestration_trigger(context_name="context")
    def countdown_orchestrator(context: df.DurableOrchestrationContext):
        remaining = context.get_input()
        if remaining > 0:
            yield context.create_timer(context.current_utc_datetime + timedelta(milliseconds=50))
            context.continue_as_new(remaining - 1)
            return None
        return "liftoff"

    return app
