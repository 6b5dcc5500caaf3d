"""In-process Durable Functions task hub: real replay of orchestrators against extension-shaped history.

Each orchestrator episode is one call of the registered orchestrator function (the library's
``Orchestrator`` handle) with a context JSON shaped like the Durable extension's: the full history with
OrchestratorStarted / ExecutionStarted / TaskScheduled / TaskCompleted / TaskFailed / TimerCreated /
TimerFired / EventRaised / SubOrchestrationInstance* / OrchestratorCompleted events. The returned actions
are scheduled the way DurableTask assigns sequence numbers, and previously-scheduled actions are
compared on every replay, so a non-deterministic orchestrator fails here as it does in Azure.

One new event is delivered per episode (DurableTask may batch several); state lives in memory only.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import traceback
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.functions import meta
from azure.functions._durable_functions import OrchestrationContext
from azure.functions.durable_functions import ActivityTriggerConverter
from dateutil.parser import isoparse

from devhost.index import FunctionSpec
from devhost.invoke import Invoker

log = logging.getLogger("devhost.durable")

# HistoryEventType values (azure.durable_functions.models.history.HistoryEventType).
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_TERMINATED = 3
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_ORCHESTRATION_CREATED = 7
SUB_ORCHESTRATION_COMPLETED = 8
SUB_ORCHESTRATION_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_RAISED = 15

# ActionType values (azure.durable_functions.models.actions.ActionType).
A_CALL_ACTIVITY = 0
A_CALL_ACTIVITY_RETRY = 1
A_CALL_SUB = 2
A_CALL_SUB_RETRY = 3
A_CONTINUE_AS_NEW = 4
A_CREATE_TIMER = 5
A_WAIT_EVENT = 6
A_WHEN_ANY = 11
A_WHEN_ALL = 12
_UNSUPPORTED_ACTIONS = {7: "call_entity", 8: "call_http", 9: "signal_entity"}

PENDING, RUNNING, COMPLETED, FAILED, TERMINATED, CONTINUED_AS_NEW = (
    "Pending", "Running", "Completed", "Failed", "Terminated", "ContinuedAsNew",
)
TERMINAL = frozenset({COMPLETED, FAILED, TERMINATED})

_OOP_LABEL = "\n\n$OutOfProcData$:"
# The replay schema devhost speaks: V2 (compound WhenAll/WhenAny actions), as the extension 2.x does.
_UPPER_SCHEMA_VERSION = 1


class DurableError(Exception):
    """Base of task hub errors; ``http_status`` is what the extension's HTTP API answers."""

    http_status = 400


class OrchestratorNotFoundError(DurableError):
    http_status = 400


class InstanceExistsError(DurableError):
    http_status = 400


class InstanceNotFoundError(DurableError):
    http_status = 404


class InstanceGoneError(DurableError):
    http_status = 410


def utcnow() -> datetime:
    return datetime.now(UTC)


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_text(token: Any) -> str | None:
    """A JSON token as the serialized text the library decodes (strings are already serialized payloads)."""
    if token is None or isinstance(token, str):
        return token
    return json.dumps(token)


@dataclass
class _Retry:
    kind: int  # A_CALL_ACTIVITY or A_CALL_SUB
    name: str
    input: str | None
    max_attempts: int
    interval: timedelta
    sub_instance_id: str | None = None
    attempts: int = 1
    backoff: float = 1.0
    max_interval: timedelta | None = None

    def next_delay(self) -> timedelta:
        """DurableTask's RetryInterceptor: first interval * backoff^(retry n), at most the max retry interval."""
        delay = self.interval * (self.backoff ** (self.attempts - 1))
        return min(delay, self.max_interval) if self.max_interval is not None else delay


@dataclass
class _Instance:
    instance_id: str
    name: str
    input: str | None
    input_token: Any
    created: datetime
    updated: datetime
    status: str = PENDING
    output: Any = None
    custom_status: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    inbox: deque[dict[str, Any]] = field(default_factory=deque)
    seq: int = 0
    seen_actions: list[tuple[int, str]] = field(default_factory=list)
    retries: dict[int, _Retry] = field(default_factory=dict)
    generation: int = 0
    busy: bool = False
    parent: tuple[str, int, int] | None = None  # (parent instance id, task id, parent generation)


@dataclass
class _Work:
    """Work decided by an episode, dispatched after the episode's state is committed."""

    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    timers: list[tuple[int, datetime]] = field(default_factory=list)
    subs: list[tuple[int, str, str, str | None]] = field(default_factory=list)


def _flatten(actions: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in actions:
        if isinstance(item, list):
            out.extend(_flatten(item))
        elif item.get("actionType") in (A_WHEN_ALL, A_WHEN_ANY):
            out.extend(_flatten(item.get("compoundActions") or []))
        else:
            out.append(item)
    return out


def _signature(action: dict[str, Any]) -> tuple[int, str]:
    kind = int(action["actionType"])
    name = action.get("functionName") or action.get("externalEventName") or ""
    return kind, str(name)


class TaskHub:
    """Orchestration instances, their histories and the work they schedule, all in this process."""

    def __init__(self, *, hub_name: str, orchestrators: dict[str, FunctionSpec],
                 activities: dict[str, FunctionSpec], invoker: Invoker, workers: int = 8) -> None:
        self.hub_name = hub_name
        self._orchestrators = orchestrators
        self._activities = activities
        self._invoker = invoker
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._instances: dict[str, _Instance] = {}
        self._episodes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="devhost-orch")
        self._activity_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="devhost-activity")
        self._inflight = 0  # episodes queued or running + activities running
        self._timers: list[tuple[datetime, int, str, int, int]] = []  # (fire_at, n, instance, generation, id)
        self._timer_counter = itertools.count()
        self._timer_cv = threading.Condition(self._lock)
        self._stopping = False
        self._timer_thread = threading.Thread(target=self._timer_loop, name="devhost-durable-timers", daemon=True)
        self._timer_thread.start()

    # ----------------------------------------------------------------- client operations

    def start_new(self, name: str, instance_id: str | None = None, input_token: Any = None,
                  *, parent: tuple[str, int, int] | None = None) -> str:
        """Schedule an orchestration; ``input_token`` is the JSON value the extension's start API received.

        The Python client posts its already-serialized input as a JSON string (double encoding), so the
        token is usually a string, and it is what the orchestrator context and get_status show, as in Azure.
        """
        spec = self._orchestrators.get(name)
        if spec is None:
            raise OrchestratorNotFoundError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function. "
                f"Additional info: the following are the known orchestrator functions: "
                f"{', '.join(sorted(self._orchestrators)) or '(none)'}."
            )
        iid = instance_id or uuid.uuid4().hex
        now = utcnow()
        with self._lock:
            existing = self._instances.get(iid)
            if existing is not None and existing.status not in TERMINAL:
                raise InstanceExistsError(
                    f"An Orchestration instance with the status {existing.status} already exists.")
            input_json = _as_text(input_token)
            inst = _Instance(instance_id=iid, name=name, input=input_json, input_token=input_token, created=now,
                             updated=now, parent=parent)
            if existing is not None:
                inst.generation = existing.generation + 1
            self._instances[iid] = inst
            self._enqueue(inst, {"EventType": EXECUTION_STARTED, "EventId": -1, "Timestamp": _ts(now),
                                 "Name": name, "Input": input_json, "Version": "",
                                 "OrchestrationInstance": {"InstanceId": iid}})
        log.info("Orchestration '%s' scheduled (instance %s)", name, iid)
        return iid

    def raise_event(self, instance_id: str, event_name: str, data_token: Any) -> None:
        with self._lock:
            inst = self._get(instance_id)
            if inst.status in TERMINAL:
                raise InstanceGoneError(f"Instance with ID {instance_id} is gone: either completed or failed")
            self._enqueue(inst, {"EventType": EVENT_RAISED, "EventId": -1, "Timestamp": _ts(utcnow()),
                                 "Name": event_name, "Input": _as_text(data_token)})

    def terminate(self, instance_id: str, reason: str) -> None:
        with self._lock:
            inst = self._get(instance_id)
            if inst.status in TERMINAL:
                raise InstanceGoneError(f"Instance with ID {instance_id} is already {inst.status}")
            now = utcnow()
            inst.status = TERMINATED
            inst.output = reason
            inst.updated = now
            inst.inbox.clear()
            inst.history.append({"EventType": EXECUTION_TERMINATED, "EventId": -1, "Timestamp": _ts(now),
                                 "Input": reason})
            self._notify_parent(inst)
            self._idle.notify_all()
        log.info("Orchestration '%s' terminated (instance %s): %s", inst.name, instance_id, reason)

    def purge(self, instance_id: str) -> int:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None or inst.status not in TERMINAL:
                return 0
            del self._instances[instance_id]
            return 1

    def status(self, instance_id: str, *, show_history: bool = False, show_input: bool = True) -> dict[str, Any]:
        """The status object the extension's HTTP API returns (``DurableOrchestrationStatus`` JSON)."""
        with self._lock:
            return self._status_json(self._get(instance_id), show_history=show_history, show_input=show_input)

    def list_status(self, *, prefix: str | None = None, statuses: set[str] | None = None,
                    created_from: datetime | None = None, created_to: datetime | None = None,
                    show_input: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            out = []
            for inst in self._instances.values():
                if prefix and not inst.instance_id.startswith(prefix):
                    continue
                if statuses and inst.status not in statuses:
                    continue
                if created_from and inst.created < created_from:
                    continue
                if created_to and inst.created > created_to:
                    continue
                out.append(self._status_json(inst, show_history=False, show_input=show_input))
            return out

    def wait_idle(self, timeout: float) -> bool:
        """Block until no episode or activity is queued or running (waiting orchestrations count as idle)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout=timeout)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._timer_cv.notify_all()
        self._episodes.shutdown(wait=True, cancel_futures=True)
        self._activity_pool.shutdown(wait=True, cancel_futures=True)
        self._timer_thread.join(timeout=5)

    # ----------------------------------------------------------------- internals

    def _get(self, instance_id: str) -> _Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise InstanceNotFoundError(f"No instance with ID {instance_id} found.")
        return inst

    @staticmethod
    def _status_json(inst: _Instance, *, show_history: bool, show_input: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": inst.name,
            "instanceId": inst.instance_id,
            "runtimeStatus": inst.status,
            "input": inst.input_token if show_input else None,
            "customStatus": inst.custom_status,
            "output": inst.output,
            "createdTime": inst.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastUpdatedTime": inst.updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if show_history:
            doc["historyEvents"] = [dict(e) for e in inst.history]
        return doc

    def _enqueue(self, inst: _Instance, event: dict[str, Any]) -> None:
        """Deliver a message to an instance (lock held) and make sure an episode will process it."""
        if self._stopping:
            return
        event["_generation"] = inst.generation
        inst.inbox.append(event)
        if not inst.busy:
            inst.busy = True
            self._inflight += 1
            self._episodes.submit(self._drain, inst)

    def _drain(self, inst: _Instance) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping or not inst.inbox or self._instances.get(inst.instance_id) is not inst:
                        inst.busy = False
                        return
                    event = inst.inbox.popleft()
                    if event.pop("_generation") != inst.generation or inst.status in TERMINAL:
                        continue
                try:
                    self._episode(inst, event)
                except Exception:  # a devhost bug must not kill the episode thread silently
                    log.exception("devhost: orchestration episode for %s crashed", inst.instance_id)
                    with self._lock:
                        self._finish(inst, FAILED, "devhost internal error (see log)")
        finally:
            with self._lock:
                self._inflight -= 1
                self._idle.notify_all()

    def _episode(self, inst: _Instance, incoming: dict[str, Any]) -> None:
        spec = self._orchestrators[inst.name]
        now = utcnow()
        with self._lock:
            generation = inst.generation
            new_events: list[dict[str, Any]] = [
                {"EventType": ORCHESTRATOR_STARTED, "EventId": -1, "Timestamp": _ts(now)}, incoming,
            ]
            if incoming["EventType"] == EXECUTION_STARTED:
                inst.status = RUNNING
            history = [dict(e, IsPlayed=True) for e in inst.history] + [dict(e, IsPlayed=False) for e in new_events]
            parent_id = inst.parent[0] if inst.parent else None
            context = {
                "history": history, "instanceId": inst.instance_id, "isReplaying": False,
                "parentInstanceId": parent_id, "input": inst.input, "upperSchemaVersion": _UPPER_SCHEMA_VERSION,
            }
        state: dict[str, Any] | None
        error: str | None = None
        try:
            raw = self._invoker.call(
                spec, {spec.trigger_param: OrchestrationContext(json.dumps(context))}, detail=inst.instance_id
            )
            state = json.loads(raw)
        except Exception as exc:  # noqa: BLE001 - the orchestrator's failure is the orchestration's outcome
            message = str(exc)
            if _OOP_LABEL in message:
                head, _, payload = message.partition(_OOP_LABEL)
                state = json.loads(payload)
                error = state.get("error") or head
            else:
                state, error = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            current = self._instances.get(inst.instance_id)
            if inst.generation != generation or inst.status in TERMINAL or current is not inst:
                return  # terminated, purged or restarted while the episode ran
            if state is not None and state.get("customStatus") is not None:
                inst.custom_status = state["customStatus"]
            work = _Work()
            self._retry_effects(inst, incoming, now, new_events, work)
            actions = _flatten(state.get("actions") or []) if state is not None else []
            if error is None:
                error = self._check_determinism(inst, actions, done=bool(state and state.get("isDone")))
            if error is None:
                error = self._schedule_new(inst, actions, now, new_events, work)
            new_events.append({"EventType": ORCHESTRATOR_COMPLETED, "EventId": -1, "Timestamp": _ts(utcnow())})
            inst.history.extend(new_events)
            inst.updated = utcnow()
            if error is not None:
                self._finish(inst, FAILED, f"Orchestrator function '{inst.name}' failed: {error}")
                return
            assert state is not None
            if state.get("isDone"):
                cont = [a for a in actions if a.get("actionType") == A_CONTINUE_AS_NEW]
                if cont:
                    self._continue_as_new(inst, cont[-1].get("input"))
                else:
                    self._finish(inst, COMPLETED, state.get("output"))
                return
            self._dispatch(inst, work)

    def _retry_effects(self, inst: _Instance, event: dict[str, Any], now: datetime,
                       new_events: list[dict[str, Any]], work: _Work) -> None:
        """What DurableTask's retry interceptor does for ``event``: a retry timer, or the next attempt."""
        etype = event["EventType"]
        if etype in (TASK_COMPLETED, SUB_ORCHESTRATION_COMPLETED):
            inst.retries.pop(int(event["TaskScheduledId"]), None)
        elif etype in (TASK_FAILED, SUB_ORCHESTRATION_FAILED):
            retry = inst.retries.pop(int(event["TaskScheduledId"]), None)
            if retry is not None:
                timer_id = inst.seq
                inst.seq += 1
                fire_at = now + retry.next_delay()
                new_events.append({"EventType": TIMER_CREATED, "EventId": timer_id, "Timestamp": _ts(now),
                                   "FireAt": _ts(fire_at)})
                inst.retries[timer_id] = retry
                work.timers.append((timer_id, fire_at))
        elif etype == TIMER_FIRED:
            retry = inst.retries.pop(int(event["TimerId"]), None)
            if retry is not None and retry.attempts < retry.max_attempts:
                task_id = inst.seq
                inst.seq += 1
                retry.attempts += 1
                inst.retries[task_id] = retry
                self._schedule_call(inst, retry.kind, task_id, retry.name, retry.input, retry.sub_instance_id,
                                    now, new_events, work)

    @staticmethod
    def _check_determinism(inst: _Instance, actions: list[dict[str, Any]], *, done: bool) -> str | None:
        for index, previous in enumerate(inst.seen_actions):
            if index >= len(actions):
                if done:
                    return None
                return (f"Non-Deterministic workflow detected: a previous execution of this orchestration "
                        f"scheduled {previous[1] or 'an action'!r} (action #{index}, type {previous[0]}), but the "
                        "current replay execution hasn't scheduled it. Was a change made to the orchestrator "
                        "code, or does it depend on time, randomness or I/O?")
            current = _signature(actions[index])
            if current != previous:
                return (f"Non-Deterministic workflow detected: action #{index} was {previous!r} in a previous "
                        f"execution but is {current!r} on replay. Orchestrators must be deterministic.")
        return None

    def _schedule_new(self, inst: _Instance, actions: list[dict[str, Any]], now: datetime,
                      new_events: list[dict[str, Any]], work: _Work) -> str | None:
        for action in actions[len(inst.seen_actions):]:
            kind = int(action["actionType"])
            inst.seen_actions.append(_signature(action))
            if kind in _UNSUPPORTED_ACTIONS:
                return f"devhost does not support context.{_UNSUPPORTED_ACTIONS[kind]}()"
            if kind == A_WAIT_EVENT:
                continue  # no sequence number: raised events are matched by name
            task_id = inst.seq
            inst.seq += 1
            if kind in (A_CALL_ACTIVITY, A_CALL_ACTIVITY_RETRY, A_CALL_SUB, A_CALL_SUB_RETRY):
                name = str(action["functionName"])
                base = A_CALL_SUB if kind in (A_CALL_SUB, A_CALL_SUB_RETRY) else A_CALL_ACTIVITY
                sub_id = None
                if base == A_CALL_SUB:
                    sub_id = action.get("instanceId") or f"{inst.instance_id}:{task_id:04X}"
                if kind in (A_CALL_ACTIVITY_RETRY, A_CALL_SUB_RETRY):
                    opts = action.get("retryOptions") or {}
                    max_interval = opts.get("maxRetryIntervalInMilliseconds")
                    inst.retries[task_id] = _Retry(
                        kind=base, name=name, input=action.get("input"), sub_instance_id=sub_id,
                        max_attempts=int(opts.get("maxNumberOfAttempts", 1)),
                        interval=timedelta(milliseconds=int(opts.get("firstRetryIntervalInMilliseconds", 1000))),
                        backoff=float(opts.get("backoffCoefficient") or 1.0),
                        max_interval=timedelta(milliseconds=float(max_interval)) if max_interval else None,
                    )
                self._schedule_call(inst, base, task_id, name, action.get("input"), sub_id, now, new_events, work)
            elif kind == A_CREATE_TIMER:
                fire_at = isoparse(str(action["fireAt"]))
                new_events.append({"EventType": TIMER_CREATED, "EventId": task_id, "Timestamp": _ts(now),
                                   "FireAt": _ts(fire_at)})
                work.timers.append((task_id, fire_at))
            elif kind == A_CONTINUE_AS_NEW:
                continue
            else:
                return f"devhost does not understand orchestrator action type {kind}"
        return None

    @staticmethod
    def _schedule_call(inst: _Instance, kind: int, task_id: int, name: str, input_json: str | None,
                       sub_id: str | None, now: datetime, new_events: list[dict[str, Any]], work: _Work) -> None:
        if kind == A_CALL_ACTIVITY:
            new_events.append({"EventType": TASK_SCHEDULED, "EventId": task_id, "Timestamp": _ts(now),
                               "Name": name, "Input": input_json})
            work.activities.append((task_id, name, input_json))
        else:
            assert sub_id is not None
            new_events.append({"EventType": SUB_ORCHESTRATION_CREATED, "EventId": task_id, "Timestamp": _ts(now),
                               "Name": name, "InstanceId": sub_id, "Input": input_json})
            work.subs.append((task_id, name, sub_id, input_json))

    def _dispatch(self, inst: _Instance, work: _Work) -> None:
        if self._stopping:
            return
        generation = inst.generation
        for task_id, name, input_json in work.activities:
            self._inflight += 1
            self._activity_pool.submit(self._run_activity, inst, generation, task_id, name, input_json)
        for timer_id, fire_at in work.timers:
            heapq.heappush(self._timers, (fire_at, next(self._timer_counter), inst.instance_id, generation, timer_id))
            self._timer_cv.notify_all()
        for task_id, name, sub_id, input_json in work.subs:
            try:
                self.start_new(name, sub_id, input_json, parent=(inst.instance_id, task_id, generation))
            except DurableError as exc:
                self._deliver(inst.instance_id, generation, {
                    "EventType": SUB_ORCHESTRATION_FAILED, "TaskScheduledId": task_id,
                    "Reason": str(exc), "Details": None})

    def _run_activity(self, inst: _Instance, generation: int, task_id: int, name: str,
                      input_json: str | None) -> None:
        spec = self._activities.get(name)
        try:
            if spec is None:  # as in Azure, the orchestrator sees a failed task it may catch
                raise LookupError(f"The function '{name}' doesn't exist, is disabled, or is not an activity function.")
            value = ActivityTriggerConverter.decode(meta.Datum(input_json or "null", "json"), trigger_metadata=None)
            result = self._invoker.call(spec, {spec.trigger_param: value}, detail=f"{inst.instance_id}#{task_id}")
            result_json = ActivityTriggerConverter.encode(result, expected_type=None).value
            event: dict[str, Any] = {"EventType": TASK_COMPLETED, "TaskScheduledId": task_id, "Result": result_json}
        except Exception as exc:  # noqa: BLE001 - an activity failure is reported to the orchestrator
            event = {"EventType": TASK_FAILED, "TaskScheduledId": task_id,
                     "Reason": f"Activity function '{name}' failed: {type(exc).__name__}: {exc}",
                     "Details": "".join(traceback.format_exception(exc)).strip()}
        finally:
            with self._lock:
                self._inflight -= 1
                self._idle.notify_all()
        self._deliver(inst.instance_id, generation, event)

    def _deliver(self, instance_id: str, generation: int, event: dict[str, Any]) -> None:
        with self._lock:
            inst = self._instances.get(instance_id)
            if inst is None or inst.generation != generation or inst.status in TERMINAL:
                return
            event.setdefault("EventId", -1)
            event.setdefault("Timestamp", _ts(utcnow()))
            self._enqueue(inst, event)

    def _timer_loop(self) -> None:
        with self._lock:
            while not self._stopping:
                if not self._timers:
                    self._timer_cv.wait()
                    continue
                fire_at, _, instance_id, generation, timer_id = self._timers[0]
                delay = (fire_at - utcnow()).total_seconds()
                if delay > 0:
                    self._timer_cv.wait(timeout=delay)
                    continue
                heapq.heappop(self._timers)
                self._deliver(instance_id, generation, {"EventType": TIMER_FIRED, "TimerId": timer_id,
                                                        "FireAt": _ts(fire_at)})

    def _continue_as_new(self, inst: _Instance, input_json: str | None) -> None:
        now = utcnow()
        inst.status = CONTINUED_AS_NEW
        inst.generation += 1
        inst.input = input_json
        inst.input_token = input_json
        inst.history = []
        inst.seq = 0
        inst.seen_actions = []
        inst.retries = {}
        inst.inbox.clear()
        self._enqueue(inst, {"EventType": EXECUTION_STARTED, "EventId": -1, "Timestamp": _ts(now),
                             "Name": inst.name, "Input": input_json, "Version": "",
                             "OrchestrationInstance": {"InstanceId": inst.instance_id}})

    def _finish(self, inst: _Instance, status: str, output: Any) -> None:
        now = utcnow()
        inst.status = status
        inst.output = output
        inst.updated = now
        inst.inbox.clear()
        inst.history.append({"EventType": EXECUTION_COMPLETED, "EventId": -1, "Timestamp": _ts(now),
                             "OrchestrationStatus": status, "Result": json.dumps(output)})
        level = logging.INFO if status == COMPLETED else logging.ERROR
        log.log(level, "Orchestration '%s' %s (instance %s)%s", inst.name, status.lower(), inst.instance_id,
                "" if status == COMPLETED else f": {str(output).strip().splitlines()[0] if output else ''}")
        self._notify_parent(inst)
        self._idle.notify_all()

    def _notify_parent(self, inst: _Instance) -> None:
        if inst.parent is None:
            return
        parent_id, task_id, generation = inst.parent
        event: dict[str, Any]
        if inst.status == COMPLETED:
            event = {"EventType": SUB_ORCHESTRATION_COMPLETED, "TaskScheduledId": task_id,
                     "Result": json.dumps(inst.output)}
        else:
            event = {"EventType": SUB_ORCHESTRATION_FAILED, "TaskScheduledId": task_id,
                     "Reason": f"Sub-orchestration '{inst.name}' {inst.status.lower()}: {inst.output}",
                     "Details": None}
        self._deliver(parent_id, generation, event)



def parse_time_query(value: str | None) -> datetime | None:
    """A createdTimeFrom/createdTimeTo query value as an aware datetime."""
    if not value:
        return None
    parsed = isoparse(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
