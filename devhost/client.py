"""Durable client side: the binding JSON the extension hands to functions, and an in-process client for tests."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any
from urllib.parse import quote

import azure.functions as func
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus
from azure.durable_functions.models.PurgeHistoryResult import PurgeHistoryResult
from azure.durable_functions.models.utils.df_serialization import df_dumps

from devhost.durable import DurableError, InstanceNotFoundError, TaskHub

WEBHOOK_PATH = "runtime/webhooks/durabletask"
_ID = "INSTANCEID"


def management_urls(base_url: str, hub: str, key: str | None, instance_id: str = _ID) -> dict[str, str]:
    """The extension's management URL payload (``create_check_status_response`` body)."""
    root = f"{base_url.rstrip('/')}/{WEBHOOK_PATH}/instances/{instance_id}"
    query = f"taskHub={quote(hub)}&connection=Storage" + (f"&code={quote(key)}" if key else "")
    return {
        "id": instance_id,
        "statusQueryGetUri": f"{root}?{query}",
        "sendEventPostUri": f"{root}/raiseEvent/{{eventName}}?{query}",
        "terminatePostUri": f"{root}/terminate?reason={{text}}&{query}",
        "rewindPostUri": f"{root}/rewind?reason={{text}}&{query}",
        "purgeHistoryDeleteUri": f"{root}?{query}",
        "restartPostUri": f"{root}/restart?{query}",
        "suspendPostUri": f"{root}/suspend?reason={{text}}&{query}",
        "resumePostUri": f"{root}/resume?reason={{text}}&{query}",
    }


def client_binding_json(base_url: str, hub: str, key: str | None, rpc_base_url: str) -> str:
    """The durableClient binding value: what ``DurableOrchestrationClient(context)`` parses in production."""
    base = f"{base_url.rstrip('/')}/{WEBHOOK_PATH}/orchestrators/{{functionName}}[/{{instanceId}}]"
    code = f"?code={quote(key)}" if key else ""
    return json.dumps({
        "taskHubName": hub,
        "creationUrls": {
            "createNewInstancePostUri": f"{base}{code}",
            "createAndWaitOnNewInstancePostUri": f"{base}?timeout={{timeoutInSeconds}}"
                                                 f"&pollingInterval={{intervalInSeconds}}{code.replace('?', '&')}",
        },
        "managementUrls": management_urls(base_url, hub, key),
        "rpcBaseUrl": rpc_base_url,
        "requiredQueryStringParameters": f"code={quote(key)}" if key else "",
    })


class DevDurableClient:
    """In-process stand-in for ``DurableOrchestrationClient`` (same method names and semantics), for tests.

    Functions in the app get the real ``DurableOrchestrationClient``, which talks to devhost's
    implementation of the extension's HTTP API; this one calls the task hub directly, so it can be
    used from any thread or event loop.
    """

    def __init__(self, hub: TaskHub, base_url: str, key: str | None) -> None:
        self._hub = hub
        self._base_url = base_url
        self._key = key
        self.task_hub_name = hub.hub_name

    async def start_new(self, orchestration_function_name: str, instance_id: str | None = None,
                        client_input: Any | None = None, version: str | None = None) -> str:
        input_json = df_dumps(client_input) if client_input is not None else None
        return self._hub.start_new(orchestration_function_name, instance_id, input_json)

    async def get_status(self, instance_id: str, show_history: bool = False, show_history_output: bool = False,
                         show_input: bool = False) -> DurableOrchestrationStatus:
        try:
            doc = self._hub.status(instance_id, show_history=show_history, show_input=show_input)
        except InstanceNotFoundError:
            return DurableOrchestrationStatus.from_json("")  # falsy, like the real client's 404 answer
        return DurableOrchestrationStatus.from_json(doc)

    async def get_status_all(self) -> list[DurableOrchestrationStatus]:
        return [DurableOrchestrationStatus.from_json(d) for d in self._hub.list_status()]

    async def get_status_by(self, created_time_from: datetime | None = None, created_time_to: datetime | None = None,
                            runtime_status: list[OrchestrationRuntimeStatus] | None = None,
                            instance_id_prefix: str | None = None) -> list[DurableOrchestrationStatus]:
        statuses = {s.value for s in runtime_status} if runtime_status else None
        docs = self._hub.list_status(prefix=instance_id_prefix, statuses=statuses,
                                     created_from=created_time_from, created_to=created_time_to)
        return [DurableOrchestrationStatus.from_json(d) for d in docs]

    async def raise_event(self, instance_id: str, event_name: str, event_data: Any = None,
                          task_hub_name: str | None = None, connection_name: str | None = None) -> None:
        if event_name == "":
            raise ValueError("event_name must be a non-empty string.")
        self._hub.raise_event(instance_id, event_name, json.dumps(event_data))

    async def terminate(self, instance_id: str, reason: str) -> None:
        try:
            self._hub.terminate(instance_id, reason)
        except DurableError as exc:
            if exc.http_status != 410:  # the real client ignores "already finished"
                raise

    async def purge_instance_history(self, instance_id: str) -> PurgeHistoryResult:
        return PurgeHistoryResult(instancesDeleted=self._hub.purge(instance_id))

    def create_http_management_payload(self, instance_id: str) -> dict[str, str]:
        return management_urls(self._base_url, self._hub.hub_name, self._key, instance_id)

    def create_check_status_response(self, request: func.HttpRequest | None, instance_id: str) -> func.HttpResponse:
        payload = self.create_http_management_payload(instance_id)
        return func.HttpResponse(
            status_code=202, body=json.dumps(payload),
            headers={"Content-Type": "application/json", "Location": payload["statusQueryGetUri"],
                     "Retry-After": "10"},
        )

    async def wait_for_completion_or_create_check_status_response(
            self, request: func.HttpRequest | None, instance_id: str, timeout_in_milliseconds: int = 10000,
            retry_interval_in_milliseconds: int = 1000) -> func.HttpResponse:
        if retry_interval_in_milliseconds > timeout_in_milliseconds:
            raise ValueError(f"Total timeout {timeout_in_milliseconds} (ms) should be bigger than "
                             f"retry timeout {retry_interval_in_milliseconds} (ms)")
        deadline = time.monotonic() + timeout_in_milliseconds / 1000
        while True:
            status = await self.get_status(instance_id)
            if status:
                rs = status.runtime_status
                if rs == OrchestrationRuntimeStatus.Completed:
                    return _json_response(200, status.output)
                if rs in (OrchestrationRuntimeStatus.Terminated, OrchestrationRuntimeStatus.Canceled):
                    return _json_response(200, status.to_json())
                if rs == OrchestrationRuntimeStatus.Failed:
                    return _json_response(500, status.to_json())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self.create_check_status_response(request, instance_id)
            await asyncio.sleep(min(remaining, retry_interval_in_milliseconds / 1000))


def _json_response(status: int, body: Any) -> func.HttpResponse:
    text = body if isinstance(body, str) else json.dumps(body)
    return func.HttpResponse(status_code=status, body=text, mimetype="application/json",
                             headers={"Content-Type": "application/json"})
