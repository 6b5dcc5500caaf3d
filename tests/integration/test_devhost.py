"""devhost end to end against a real Azurite: timers, queues (poison), blobs (receipts), HTTP, Durable replay."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import BinaryBase64DecodePolicy, QueueClient, TextBase64EncodePolicy
from dateutil.parser import isoparse

from devhost.config import ConfigError, HostConfig, parse_timespan
from devhost.host import DevHost
from shared.settings import azurite_connection_string
from tests.integration.devhost_app import Recorder, create_app

pytestmark = pytest.mark.azurite

KEY = "test-function-key"
FAST_QUEUES = {"extensions": {"queues": {"maxPollingInterval": "00:00:00.200", "visibilityTimeout": "00:00:00",
                                         "maxDequeueCount": 3}}}


@pytest.fixture(scope="session")
def connection_string() -> str:
    for port in (10000, 10001, 10002):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError as exc:
            pytest.fail(f"Azurite is not listening on 127.0.0.1:{port} ({exc}); start it first "
                        "(make test does), e.g. node_modules/.bin/azurite --silent --location /tmp/azurite")
    return azurite_connection_string()


class Harness:
    """A DevHost over a fresh test app with unique queue/container names."""

    def __init__(self, conn: str, overrides: dict[str, Any] | None, extra: dict[str, str]) -> None:
        suffix = uuid.uuid4().hex[:10]
        self.conn = conn
        self.queue = f"dh-q-{suffix}"
        self.failing_queue = f"dh-fail-{suffix}"
        self.container = f"dh-drop-{suffix}"
        self.eg_container = f"dh-eg-{suffix}"
        self.recorder = Recorder()
        self.settings = {
            "AzureWebJobsStorage": conn, "WHARF_FUNCTION_KEY": KEY, "DEVHOST_TEST_SCHEDULE": "0 0 0 1 1 *",
            "DEVHOST_TEST_QUEUE": self.queue, "DEVHOST_TEST_FAILING_QUEUE": self.failing_queue,
            "DEVHOST_TEST_CONTAINER": self.container,
            "DEVHOST_EVENTGRID_BLOBS": f"devhost_eventgrid={self.eg_container}/{{partner}}/{{name}}", **extra,
        }
        self.overrides = overrides
        self.host = self.new_host()

    def new_host(self) -> DevHost:
        return DevHost(create_app(self.recorder), settings_env=self.settings, http_port=0,
                       host_json_overrides=self.overrides, blob_poll_interval=0.2)

    def queue_client(self, name: str, *, encode: bool = True) -> QueueClient:
        return QueueClient.from_connection_string(
            self.conn, name, message_encode_policy=TextBase64EncodePolicy() if encode else None,
            message_decode_policy=BinaryBase64DecodePolicy() if encode else None)

    def http(self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
             url: str | None = None) -> tuple[int, dict[str, str], bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url or self.host.http_url + path, data=data,  # noqa: S310 - local devhost
                                     method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - local test server
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()


@pytest.fixture
def make_harness(connection_string: str) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def make(overrides: dict[str, Any] | None = None, **extra: str) -> Harness:
        harness = Harness(connection_string, overrides, extra)
        harness.host.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.host.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def peek(queue: QueueClient) -> list[Any]:
    """Messages visible in ``queue``; a queue that does not exist (yet) has none."""
    try:
        return list(queue.peek_messages(max_messages=32))
    except ResourceNotFoundError:
        return []


def status_of(host: DevHost, instance_id: str) -> df.DurableOrchestrationStatus:
    return asyncio.run(host.durable_client().get_status(instance_id))


def wait_for_status(host: DevHost, instance_id: str, wanted: df.OrchestrationRuntimeStatus,
                    timeout: float = 20.0) -> df.DurableOrchestrationStatus:
    def check() -> df.DurableOrchestrationStatus | None:
        status = status_of(host, instance_id)
        return status if status and status.runtime_status == wanted else None

    return wait_until(check, timeout, f"{instance_id} to be {wanted.value}")


# --------------------------------------------------------------------------------------- config


def test_host_json_timespans_and_overrides(tmp_path: Any) -> None:
    assert parse_timespan("00:00:02") == timedelta(seconds=2)
    assert parse_timespan("1.02:00:00") == timedelta(days=1, hours=2)
    assert parse_timespan("00:00:00.250") == timedelta(milliseconds=250)
    cfg = HostConfig.load(None)
    assert cfg.route_prefix == "api" and cfg.queues.message_encoding == "base64"
    repo = HostConfig.load(__import__("pathlib").Path("host.json"), FAST_QUEUES)
    assert repo.hub_name == "WharfHub"
    assert repo.queues.batch_size == 16 and repo.queues.max_dequeue_count == 3
    assert repo.function_timeout == timedelta(minutes=10)
    with pytest.raises(ConfigError, match="timespan"):
        parse_timespan("2 seconds")


def test_missing_setting_is_named(connection_string: str) -> None:
    settings = {"AzureWebJobsStorage": connection_string, "DEVHOST_TEST_SCHEDULE": "0 0 0 1 1 *",
                "DEVHOST_TEST_QUEUE": "dh-x", "DEVHOST_TEST_CONTAINER": "dh-x"}
    host = DevHost(create_app(Recorder()), settings_env=settings, http_port=0)
    with pytest.raises(ConfigError, match="DEVHOST_TEST_FAILING_QUEUE"):
        host.start()


# --------------------------------------------------------------------------------------- timers


def test_timer_fires_on_ncrontab_schedule_and_on_demand(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(DEVHOST_TEST_SCHEDULE="*/1 * * * * *")
    fired = h.recorder.wait_for("timer", count=2, timeout=10)
    assert all(isinstance(t, func.TimerRequest) for t in fired)
    h.host.run_timer("devhost_timer", past_due=True)
    assert any(t.past_due for t in h.recorder.of("timer"))
    assert "Next" in fired[0].schedule_status


# --------------------------------------------------------------------------------------- queues


def test_queue_trigger_decodes_base64_like_the_host(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(FAST_QUEUES)
    h.queue_client(h.queue).send_message(json.dumps({"job": "j-1"}))
    (msg,) = h.recorder.wait_for("queue")
    assert isinstance(msg, func.QueueMessage)
    assert msg.get_json() == {"job": "j-1"}
    assert msg.dequeue_count == 1 and msg.id and msg.insertion_time is not None
    plain = h.queue_client(h.queue, encode=False)
    wait_until(lambda: not peek(plain), what="the handled message to be deleted")


def test_failing_message_moves_to_poison_after_max_dequeue_count(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(FAST_QUEUES)
    h.queue_client(h.failing_queue).send_message("poison me")
    attempts = h.recorder.wait_for("failing", count=3)
    poison = h.queue_client(f"{h.failing_queue}-poison")
    (moved,) = wait_until(lambda: peek(poison), what="the poison message")
    assert moved.content == b"poison me"  # still base64 on the wire, like the host's copy
    assert attempts[:3] == [1, 2, 3]
    plain = h.queue_client(h.failing_queue, encode=False)
    assert not peek(plain)


def test_message_that_is_not_base64_fails_like_in_azure(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(FAST_QUEUES)
    h.queue_client(h.queue, encode=False).send_message("plain text, not base64!")
    poison = h.queue_client(f"{h.queue}-poison", encode=False)
    wait_until(lambda: peek(poison), what="the undecodable message in the poison queue")
    assert h.recorder.of("queue") == []


# --------------------------------------------------------------------------------------- blobs


def test_blob_trigger_fires_once_per_blob_version_and_survives_restart(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    container = BlobServiceClient.from_connection_string(h.conn).get_container_client(h.container)
    container.get_blob_client("acme/orders.csv").upload_blob(b"a,b\n1,2\n")
    (seen,) = h.recorder.wait_for("blob")
    assert seen == (f"{h.container}/acme/orders.csv", 8, b"a,b\n1,2\n")
    container.get_blob_client("not-matching.csv").upload_blob(b"x")  # no {partner}/ folder: not this trigger
    container.get_blob_client("acme/second.csv").upload_blob(b"2")
    h.recorder.wait_for("blob", count=2)
    assert h.host.wait_idle(10)
    h.host.stop()
    h.host = h.new_host().start()  # receipts in azure-webjobs-hosts: a restart does not refire
    container.get_blob_client("acme/orders.csv").upload_blob(b"changed", overwrite=True)  # new ETag: fires
    changed = h.recorder.wait_for("blob", count=3)
    assert changed[2] == (f"{h.container}/acme/orders.csv", 7, b"changed")
    container.get_blob_client("acme/third.csv").upload_blob(b"3")
    names = [n for n, _, _ in h.recorder.wait_for("blob", count=4)]
    assert names.count(f"{h.container}/acme/orders.csv") == 2
    assert names.count(f"{h.container}/acme/second.csv") == 1


def test_event_grid_trigger_gets_one_blob_created_event_per_blob_version(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    container = BlobServiceClient.from_connection_string(h.conn).get_container_client(h.eg_container)
    container.get_blob_client("acme/in voice.csv").upload_blob(b"a,b\n")
    (event_type, subject, url, length), = h.recorder.wait_for("eventgrid")
    assert event_type == "Microsoft.Storage.BlobCreated" and length == 4
    assert subject == f"/blobServices/default/containers/{h.eg_container}/blobs/acme/in voice.csv"
    assert url.endswith(f"/{h.eg_container}/acme/in%20voice.csv")
    container.get_blob_client("loose.csv").upload_blob(b"x")  # outside the subscription's {partner}/ path
    container.get_blob_client("acme/in voice.csv").upload_blob(b"changed", overwrite=True)
    events = h.recorder.wait_for("eventgrid", count=2)
    assert [e[3] for e in events] == [4, 7] and h.host.wait_idle(10)
    assert len(h.recorder.of("eventgrid")) == 2


# --------------------------------------------------------------------------------------- HTTP


def test_http_routes_params_and_auth_levels(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    status, headers, body = h.http("GET", "/hello/Ada%20L?q=1")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["name"] == "Ada L" and doc["q"] == "1" and doc["method"] == "GET"
    assert doc["url"].endswith("/api/hello/Ada%20L?q=1")
    assert h.http("GET", "/items/21")[2] == b"42"  # async function, {item_id:int}
    assert h.http("GET", "/items/abc")[0] == 404  # constraint not met
    assert h.http("POST", "/hello/x")[0] == 404  # method not allowed on the route
    assert h.http("GET", "/secret")[0] == 401
    assert h.http("GET", "/secret", headers={"x-functions-key": "wrong"})[0] == 401
    assert h.http("GET", "/secret", headers={"x-functions-key": KEY})[:3:2] == (200, b"ok")
    assert h.http("GET", f"/secret?code={KEY}")[0] == 200


def _stream_post(h: Harness, path: str, pieces: Iterator[bytes], headers: dict[str, str]) -> tuple[int, Any, bytes]:
    import http.client

    port = int(h.host.http_url.rsplit(":", 1)[1].split("/")[0])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api" + path, body=pieces, headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def test_http_streams_function_reads_the_body_in_pieces_and_streams_its_response(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    piece = bytes(range(256)) * 4096  # 1 MiB
    status, headers, body = _stream_post(h, "/stream/Ada?q=1&n=4", iter([piece] * 3),
                                         {"x-functions-key": KEY, "Content-Type": "application/octet-stream"})
    assert status == 200, body
    assert body == b"part0\npart1\npart2\npart3\n"
    assert headers["Transfer-Encoding"] == "chunked"  # no Content-Length: sent as produced
    assert headers["x-sha256"] == hashlib.sha256(piece * 3).hexdigest()
    assert int(headers["x-pieces"]) > 3  # 3 MiB arrived in many pieces, not as one body
    seen = h.recorder.wait_for("stream")[0]
    assert seen == {"name": "Ada", "pieces": int(headers["x-pieces"]), "q": "1"}  # route params synced
    # A GET with no body, on the same streamed function.
    status, headers, body = h.http("GET", "/stream/x?n=1", headers={"x-functions-key": KEY})
    assert (status, body, headers["x-pieces"]) == (200, b"part0\n", "0")


def test_http_streams_refuses_a_request_without_its_key_before_reading_the_body(
        make_harness: Callable[..., Harness]) -> None:
    import threading

    h = make_harness()
    port = int(h.host.http_url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def send_body() -> None:  # the server answers without reading it and closes: the rest may be refused
        try:
            for _ in range(64):
                sock.sendall(b"10000\r\n" + b"x" * 65536 + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass

    try:
        sock.sendall(b"POST /api/stream/nokey HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        status_line = sock.makefile("rb").readline()
    finally:
        sender.join(timeout=30)
        sock.close()
    assert status_line.split()[1] == b"401", status_line
    assert h.recorder.of("stream") == []  # the function never ran


# --------------------------------------------------------------------------------------- Durable


def start_via_http(h: Harness, name: str, body: Any, instance_id: str | None = None) -> dict[str, str]:
    path = f"/orchestrators/{name}" + (f"?instance_id={instance_id}" if instance_id else "")
    status, headers, raw = h.http("POST", path, body=body, headers={"x-functions-key": KEY})
    assert status == 202, raw
    payload = json.loads(raw)
    assert headers["Location"] == payload["statusQueryGetUri"]
    return payload


def test_orchestrations_replay_chain_fan_out_and_retry(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    chain = start_via_http(h, "chain_orchestrator", 5)
    fan = start_via_http(h, "fan_out_orchestrator", 6)
    retry = start_via_http(h, "retry_orchestrator", None)
    assert wait_for_status(h.host, chain["id"], df.OrchestrationRuntimeStatus.Completed).output == [10, 11]
    assert wait_for_status(h.host, fan["id"], df.OrchestrationRuntimeStatus.Completed).output == 30
    done = wait_for_status(h.host, retry["id"], df.OrchestrationRuntimeStatus.Completed)
    assert done.output == "ok after 2" and h.recorder.of("flaky") == [1, 2]
    # The management URLs from create_check_status_response work against devhost (key in the URL).
    status, _, raw = h.http("GET", "", url=chain["statusQueryGetUri"])
    doc = json.loads(raw)
    assert status == 200 and doc["runtimeStatus"] == "Completed"
    assert json.loads(doc["input"]) == 5  # the Python client posts serialized input: Azure shows it as a string


def test_retries_back_off_exponentially_up_to_the_max_interval(make_harness: Callable[..., Harness]) -> None:
    """backoffCoefficient and maxRetryIntervalInMilliseconds are honoured as the Durable extension does."""
    h = make_harness()
    instance_id = asyncio.run(h.host.durable_client().start_new("backoff_orchestrator"))
    done = wait_for_status(h.host, instance_id, df.OrchestrationRuntimeStatus.Completed)
    assert done.output == "gave up" and h.recorder.of("always_fails") == [instance_id] * 4
    history = h.host.task_hub.status(instance_id, show_history=True)["historyEvents"]
    waits = [round((isoparse(e["FireAt"]) - isoparse(e["Timestamp"])).total_seconds() * 1000)
             for e in history if e["EventType"] == 10]  # TimerCreated: one after each failed attempt
    assert waits == [100, 200, 300, 300]


def test_timer_gets_a_durable_client(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    instance_id = asyncio.run(h.host.durable_client().start_new("chain_orchestrator", None, 2))
    wait_for_status(h.host, instance_id, df.OrchestrationRuntimeStatus.Completed)
    h.recorder.add("lookup", instance_id)
    h.recorder.add("lookup", "no-such-instance")
    h.host.run_timer("devhost_client_timer")
    assert h.recorder.of("looked_up") == [(instance_id, "Completed"), ("no-such-instance", None)]


def test_external_event_custom_status_and_instance_id_reuse(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    client = h.host.durable_client()
    instance_id = f"approval-{uuid.uuid4().hex[:8]}"
    assert start_via_http(h, "approval_orchestrator", None, instance_id)["id"] == instance_id
    waiting = wait_until(lambda: (s := status_of(h.host, instance_id)) and s.custom_status == "waiting" and s,
                         what="the orchestration to wait for its event")
    assert waiting.runtime_status == df.OrchestrationRuntimeStatus.Running
    # Starting the same id while it runs is refused, through the real client (500 from the starter) and ours.
    assert h.http("POST", f"/orchestrators/approval_orchestrator?instance_id={instance_id}",
                  headers={"x-functions-key": KEY})[0] == 500
    with pytest.raises(Exception, match="already exists"):
        asyncio.run(client.start_new("approval_orchestrator", instance_id))
    assert h.http("POST", f"/events/{instance_id}/approval", body={"ok": True},
                  headers={"x-functions-key": KEY})[0] == 202
    done = wait_for_status(h.host, instance_id, df.OrchestrationRuntimeStatus.Completed)
    assert done.output == {"decision": {"ok": True}} and done.custom_status == "approved"
    # A completed id may be started again (the extension's default NonRunningStates policy).
    assert asyncio.run(client.start_new("approval_orchestrator", instance_id)) == instance_id
    wait_until(lambda: status_of(h.host, instance_id).custom_status == "waiting", what="the restarted instance")
    asyncio.run(client.terminate(instance_id, "test over"))
    assert wait_for_status(h.host, instance_id, df.OrchestrationRuntimeStatus.Terminated).output == "test over"


def test_sub_orchestrations_continue_as_new_and_missing_activity(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    client = h.host.durable_client()
    parent = asyncio.run(client.start_new("parent_orchestrator"))
    countdown = asyncio.run(client.start_new("countdown_orchestrator", None, 3))
    done = wait_for_status(h.host, parent, df.OrchestrationRuntimeStatus.Completed)
    assert done.output == {"one": [2, 3], "many": [[4, 5], [6, 7]], "missing_activity_caught": True}
    assert wait_for_status(h.host, countdown, df.OrchestrationRuntimeStatus.Completed).output == "liftoff"


def test_nondeterministic_orchestrator_fails_like_azure(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    instance_id = asyncio.run(h.host.durable_client().start_new("nondeterministic_orchestrator"))
    failed = wait_for_status(h.host, instance_id, df.OrchestrationRuntimeStatus.Failed)
    assert "Non-Deterministic" in failed.output
    assert not asyncio.run(h.host.durable_client().get_status("no-such-instance"))
