"""Scheduling, the circuit breaker policy, the queue messages, and the thin triggers and CLI around them."""

from __future__ import annotations

import io
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from shared.catalog import parse_catalog
from shared.domain.errors import ConfigurationError, ConflictError, NotFoundError
from shared.domain.ledger import BreakerState
from shared.domain.messages import FileLanded, PollRequest
from shared.services.breaker import CircuitBreaker
from shared.services.scheduling import due_partners, is_due, poll_channel, schedule_polls
from tests.fakes import FakeBreakers
from tests.http_calls import http_caller
from tests.unit.test_poll_sftp import FINGERPRINT, PARTNER, Clock, World, make_catalog

AT_10_05 = datetime(2025, 3, 4, 10, 5, 0, 120_000, tzinfo=UTC)


@pytest.mark.parametrize(("schedule", "now", "due"), [
    ("0 * * * * *", AT_10_05, True),
    ("0 */5 * * * *", AT_10_05, True),
    ("0 */5 * * * *", AT_10_05 + timedelta(minutes=1), False),
    ("*/5 * * * *", AT_10_05, True),  # 5-field cron
    ("30 4 10 * * *", AT_10_05, True),  # fired at 10:04:30, inside the tick (10:04, 10:05]
    ("30 4 10 * * *", AT_10_05 + timedelta(minutes=1), False),
    ("0 0 9 * * *", AT_10_05, False),
    ("0 5 10 * * *", AT_10_05 - timedelta(seconds=0.5), False),  # an early timer still looks at 10:04
    ("0 5 10 * * *", AT_10_05 + timedelta(seconds=40), True),  # a late one at 10:05
])
def test_is_due_looks_at_the_minute_that_just_ended(schedule: str, now: datetime, due: bool) -> None:
    assert is_due(schedule, now) is due


def _catalog(*partners: dict[str, Any]) -> Any:
    return parse_catalog({"partners": list(partners)}, env={})


def _sftp(pid: str, schedule: str, **extra: Any) -> dict[str, Any]:
    return {"id": pid, "name": pid, **extra, "sftp": {
        "host": "h.example", "username": "u", "auth": {"private_key_secret": "k"}, "host_keys": [FINGERPRINT],
        "remote_dirs": ["/out"], "schedule": schedule}}


def test_due_partners_are_enabled_ones_whose_cron_fires() -> None:
    catalog = _catalog(_sftp("every-minute", "0 * * * * *"), _sftp("hourly", "0 0 * * * *"),
                       _sftp("off", "0 * * * * *", enabled=False))
    assert [p.id for p in due_partners(catalog, AT_10_05)] == ["every-minute"]
    assert due_partners(catalog, AT_10_05, channel="mail") == []


def test_schedule_polls_enqueues_one_request_per_due_partner() -> None:
    world = World(schedule="0 */5 * * * *")
    assert schedule_polls(world.services, now=AT_10_05) == [PARTNER]
    assert schedule_polls(world.services, now=AT_10_05 + timedelta(minutes=1)) == []
    (message,) = world.queues.messages("poll-requests")
    request = PollRequest.model_validate(message)
    assert (request.partner, request.channel, request.requested_by, request.requested_at) == (
        PARTNER, "sftp", "timer", AT_10_05)


def test_poll_channel_checks_the_partner() -> None:
    world = World()
    assert poll_channel(world.services, PARTNER) == "sftp"
    with pytest.raises(ConfigurationError, match="no mail source"):
        poll_channel(world.services, PARTNER, "mail")
    with pytest.raises(NotFoundError):
        poll_channel(world.services, "nobody")


def test_messages_are_small_references() -> None:
    landed = FileLanded(job_id="j", partner="pp", container="inbound", blob_path="pp/x.csv", file_name="x.csv",
                        bytes=5 * 1024**3, sha256="ab" * 32, transfer_id="t", source="sftp://h:22/x.csv")
    body = landed.to_message()
    assert "traceparent" not in body and FileLanded.model_validate({**body, "tracestate": "x"}) == landed
    with pytest.raises(ValueError):
        PollRequest.model_validate({"partner": "p", "channel": "ftp"})


# --- circuit breaker -------------------------------------------------------------------------------


def test_breaker_counts_consecutive_failures_and_a_success_resets() -> None:
    clock = Clock()
    breaker = CircuitBreaker(FakeBreakers(), "sftp", threshold=3, cooldown=timedelta(minutes=5), clock=clock)
    breaker.record_failure("p", "down")
    breaker.record_failure("p", "down")
    assert breaker.state("p").failures == 2 and breaker.allow("p").allowed
    breaker.record_success("p")
    assert breaker.state("p").failures == 0
    for _ in range(3):
        breaker.record_failure("p", "down again")
    decision = breaker.allow("p")
    assert not decision.allowed and decision.retry_at == clock.now + timedelta(minutes=5)
    assert decision.last_error == "down again"


def test_exactly_one_instance_probes_when_half_open() -> None:
    store, clock = FakeBreakers(), Clock()
    breakers = [CircuitBreaker(store, "sftp", threshold=1, cooldown=timedelta(minutes=1), clock=clock)
                for _ in range(8)]
    breakers[0].record_failure("p", "down")
    clock.advance(minutes=2)
    decisions: list[Any] = []
    barrier = threading.Barrier(8)

    def ask(b: CircuitBreaker) -> None:
        barrier.wait(timeout=10)
        decisions.append(b.allow("p"))

    threads = [threading.Thread(target=ask, args=(b,)) for b in breakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(d.allowed for d in decisions) == 1 and sum(d.probe for d in decisions) == 1
    assert store.get("sftp", "p").state is BreakerState.HALF_OPEN
    clock.advance(minutes=2)  # the probe never reported back (crashed): another may probe
    assert breakers[1].allow("p").probe


def test_breaker_updates_retry_etag_races() -> None:
    store = FakeBreakers()
    real_save = store.save
    calls = {"n": 0}

    def flaky_save(record: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConflictError("someone else wrote")
        return real_save(record)

    store.save = flaky_save  # type: ignore[method-assign]
    CircuitBreaker(store, "sftp").record_failure("p", "x")
    assert store.get("sftp", "p").failures == 1 and calls["n"] == 2


# --- triggers and CLI ------------------------------------------------------------------------------


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    from functions import polling, scheduling

    w = World()
    monkeypatch.setattr(polling, "get_services", lambda: w.services)
    monkeypatch.setattr(scheduling, "get_services", lambda: w.services)
    # Triggers use default options: no settle wait, no real sleeping in unit tests.
    import shared.services.poll_sftp as poll_sftp

    monkeypatch.setattr(poll_sftp.PollOptions, "__init__", _fast_options_init(poll_sftp.PollOptions.__init__))
    return w


def _fast_options_init(init: Any) -> Any:
    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("settle_seconds", 0.0)
        kwargs.setdefault("retry_initial", 0.001)
        kwargs.setdefault("retry_max", 0.002)
        init(self, *args, **kwargs)

    return patched


def _http(params: dict[str, str] | None = None, partner: str = PARTNER) -> func.HttpRequest:
    return func.HttpRequest(method="POST", url=f"/api/partners/{partner}/poll", body=b"",
                            route_params={"partner": partner}, params=params or {})


def test_http_poll_enqueues_by_default(world: World) -> None:
    from functions import polling

    api = http_caller(polling.api_partner_poll)
    resp = api(_http())
    body = json.loads(resp.get_body())
    assert resp.status_code == 202 and (body["status"], body["partner"], body["channel"]) == (
        "queued", PARTNER, "sftp")
    assert [m["requested_by"] for m in world.queues.messages("poll-requests")] == ["api"]
    assert api(_http(partner="nobody")).status_code == 404
    assert api(_http({"channel": "mail"})).status_code == 409


def test_http_poll_wait_polls_inline_and_returns_the_summary(world: World) -> None:
    from functions import polling

    world.server.put("/out/a.csv", b"abc")
    api = http_caller(polling.api_partner_poll)
    resp = api(_http({"wait": "true"}))
    body = json.loads(resp.get_body())
    assert resp.status_code == 200 and (body["status"], body["landed"], body["bytes"]) == ("ok", 1, 3)
    world.server.host_key_ok = False
    failed = api(_http({"wait": "true"}))
    assert failed.status_code == 502 and "host key" in json.loads(failed.get_body())["error"]


def test_the_queue_worker_polls_the_requested_partner(world: World) -> None:
    from functions import polling

    world.server.put("/out/a.csv", b"abc")
    body = PollRequest(partner=PARTNER, requested_by="timer").to_message()
    polling.poll_worker.build().get_user_function()(func.QueueMessage(body=json.dumps(body).encode()))
    (landed,) = world.landed_messages()
    assert landed.bytes == 3 and world.server.names() == []


def test_the_timer_only_enqueues(world: World) -> None:
    from functions import scheduling

    world.services.overrides["catalog"] = make_catalog(schedule="0 * * * * *")
    world.server.put("/out/a.csv", b"abc")
    scheduling.sftp_schedule.build().get_user_function()(None)
    assert [m["partner"] for m in world.queues.messages("poll-requests")] == [PARTNER]
    assert world.sources.opened == 0


def test_wharf_poll_prints_progress_and_a_summary(world: World, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import shared.bootstrap
    from shared.cli import main

    monkeypatch.setattr(shared.bootstrap, "build_services", lambda *a, **k: world.services)
    world.server.put("/out/a.csv", b"a" * 2048)
    world.server.put("/out/b.csv", b"b" * 1024)
    assert main(["poll", PARTNER, "--settle", "0", "--concurrency", "1"]) == 0
    out, err = capsys.readouterr()
    assert "[transferring]" in err and "[done]" in err
    assert f"{PARTNER} (sftp): ok" in out and "2 landed" in out and "landed   /out/a.csv  2048 bytes" in out
    assert main(["poll", PARTNER, "--settle", "0", "--json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["skipped_reasons"] == {} and err == ""


def test_progress_printer_rewrites_one_line_on_a_terminal() -> None:
    from shared.cli.poll import ProgressPrinter
    from shared.services.poll_sftp import PollProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    printer = ProgressPrinter(out)
    printer(PollProgress(partner="p", phase="transferring", to_transfer=2, bytes_to_transfer=2 << 20,
                         bytes=1 << 20, landed=1, current="a.csv"))
    printer(PollProgress(partner="p", phase="done", to_transfer=2, bytes_to_transfer=2 << 20, bytes=2 << 20,
                         landed=2))
    text = out.getvalue()
    assert text.startswith("\r[transferring] 1/2 files, 1.0 MiB/2.0 MiB") and text.endswith("\n")
    assert "\r[done] 2/2 files, 2.0 MiB/2.0 MiB" in text
