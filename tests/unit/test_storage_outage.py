"""Storage gone in the middle of a poll: bounded client retries, the poll stops at the first storage-unavailable
error (one log line, no traceback, nothing more written), and the next poll lands every file exactly once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from shared.adapters.http import StorageLimits, storage_options
from shared.domain.errors import WharfError
from shared.domain.jobs import EventType
from shared.domain.ledger import LedgerState
from shared.services.storage import storage_unavailable
from shared.settings import Settings
from tests.unit.test_poll_sftp import PARTNER, World

COUNT = 20


class Outage:
    """Storage for the poll: passes calls through until it goes down, then every call fails as a refused
    connection does (after the client's retries) and is counted."""

    def __init__(self) -> None:
        self.down = False
        self.calls_while_down: list[str] = []

    def wrap(self, target: Any, name: str, *, down_at: tuple[str, int] | None = None) -> Any:
        outage = self
        seen = {"n": 0}

        class Proxy:
            def __getattr__(self, attr: str) -> Any:
                value = getattr(target, attr)
                if not callable(value):
                    return value

                def call(*args: Any, **kwargs: Any) -> Any:
                    if down_at is not None and attr == down_at[0]:
                        seen["n"] += 1
                        if seen["n"] == down_at[1]:
                            outage.down = True
                    if outage.down:
                        outage.calls_while_down.append(f"{name}.{attr}")
                        raise ServiceRequestError("<urlopen error [Errno 111] Connection refused>")
                    return value(*args, **kwargs)

                return call

        return Proxy()


def storage_goes_down(world: World, *, at_upload: int) -> Outage:
    outage = Outage()
    d = world.services.__dict__  # the cached adapters the poll uses
    d["blobs"] = outage.wrap(world.blobs, "blobs", down_at=("upload_stream", at_upload))
    d["jobs"] = outage.wrap(world.jobs, "jobs")
    d["ledger"] = outage.wrap(world.ledger, "ledger")
    return outage


def storage_back(world: World) -> None:
    d = world.services.__dict__
    d["blobs"], d["jobs"], d["ledger"] = world.blobs, world.jobs, world.ledger


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_poll_stops_at_the_first_storage_unavailable_error_and_the_next_lands_every_file_once(
        concurrency: int, caplog: pytest.LogCaptureFixture) -> None:
    world = World(post_action="delete")
    names = [f"/out/f{i:02d}.csv" for i in range(COUNT)]
    for i, name in enumerate(names):
        world.server.put(name, f"row {i}\n".encode(), age=3600 + COUNT - i)  # oldest first: f00 first
    outage = storage_goes_down(world, at_upload=3)
    with caplog.at_level(logging.INFO), pytest.raises(ServiceRequestError):
        world.poll(concurrency=concurrency)
    # Once storage is gone, the uploads in flight (one a worker) are the only calls made to it: no note on the
    # job, no ledger release, no further file; a poll does not wait out the retries file after file.
    assert set(outage.calls_while_down) == {"blobs.upload_stream"} and len(outage.calls_while_down) <= concurrency
    assert world.blobs.uploads <= 2 + concurrency  # files in flight when it went down, none started after
    assert not [r for r in caplog.records if r.exc_info], "a log line with a traceback"
    (stopped,) = [r for r in caplog.records if "stopped: storage unavailable" in r.getMessage()]
    assert stopped.levelno == logging.ERROR and "\n" not in stopped.getMessage()
    assert {e.state for e in world.ledger.entries(PARTNER)} == {LedgerState.CLAIMED}  # held until the lease ends
    assert world.server.names() == names  # nothing deleted at the source
    committed = len(world.inbound())

    storage_back(world)
    world.clock.advance(minutes=11)  # past the 10 min lease: the claims are taken over
    summary = world.poll(concurrency=concurrency)
    assert (summary.status, summary.landed) == ("ok", COUNT), summary
    entries = world.ledger.entries(PARTNER)
    assert sorted(e.path for e in entries) == names and {e.state for e in entries} == {LedgerState.DONE}
    assert sorted(world.inbound()) == sorted(e.blob_path for e in entries)  # one blob per file
    assert len(world.jobs.job_ids()) == COUNT  # one job per file
    for job_id in world.jobs.job_ids():
        assert [e.type for e in world.jobs.events(job_id)].count(EventType.FILE_LANDED) == 1
    assert sorted(m.job_id for m in world.landed_messages()) == sorted(world.jobs.job_ids())
    assert world.server.names() == []
    reread = [n for n, count in world.server.reads.items() if count > 1]
    assert len(reread) <= COUNT - committed  # a blob committed before the outage is reused, not downloaded again


def test_a_storage_error_that_is_not_an_outage_fails_only_its_file() -> None:
    world = World(post_action="leave")
    for name in ("/out/a.csv", "/out/b.csv"):
        world.server.put(name, b"x")
    world.blobs.fail_uploads = [HttpResponseError(message="The specified blob is invalid (400)")]
    summary = world.poll()
    assert (summary.status, summary.landed, summary.failed_reasons) == ("partial", 1, {"storage_error": 1})


def test_which_errors_mean_storage_is_unavailable() -> None:
    def http(status: int) -> HttpResponseError:
        exc = HttpResponseError(message=f"HTTP {status}")
        exc.status_code = status
        return exc

    assert storage_unavailable(ServiceRequestError("connection refused"))
    assert storage_unavailable(ServiceResponseError("read timed out"))
    assert storage_unavailable(http(503)) and storage_unavailable(http(500))
    assert not storage_unavailable(http(409)) and not storage_unavailable(http(404))
    assert not storage_unavailable(ValueError("bad input"))
    try:
        try:
            raise ServiceRequestError("refused")
        except ServiceRequestError as exc:
            raise WharfError("wrapped") from exc
    except WharfError as wrapped:
        assert storage_unavailable(wrapped)


def _waits(policy: Any, retries: int) -> list[float]:
    return [policy.get_backoff_time({"count": n}) for n in range(1, retries + 1)]


def test_storage_clients_get_bounded_retries_and_timeouts() -> None:
    for kind in ("blob", "queue"):
        options = storage_options(kind)  # type: ignore[arg-type]
        policy = options["retry_policy"]
        assert policy.total_retries == 3 and (options["connection_timeout"], options["read_timeout"]) == (5.0, 30.0)
        assert sum(_waits(policy, 3)) <= 1.25 * (1 + 2 + 4)  # the SDK's default waits 15 + 18 + 24 s and more
    table = storage_options("table")
    assert (table["retry_total"], table["retry_connect"], table["retry_read"], table["retry_status"]) == (3, 3, 3, 3)
    assert (table["retry_backoff_factor"], table["connection_timeout"], table["read_timeout"]) == (1.0, 5.0, 30.0)
    custom = storage_options("blob", StorageLimits(retries=1, backoff=0.2, connect_timeout=2, read_timeout=7))
    assert custom["retry_policy"].total_retries == 1 and custom["read_timeout"] == 7
    assert max(_waits(custom["retry_policy"], 1)) <= 0.25


def test_the_storage_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().storage_limits == StorageLimits()
    for key, value in {"WHARF_STORAGE_RETRIES": "1", "WHARF_STORAGE_RETRY_BACKOFF_SECONDS": "0.25",
                       "WHARF_STORAGE_CONNECT_TIMEOUT_SECONDS": "2", "WHARF_STORAGE_READ_TIMEOUT_SECONDS": "9"}.items():
        monkeypatch.setenv(key, value)
    assert Settings().storage_limits == StorageLimits(retries=1, backoff=0.25, connect_timeout=2, read_timeout=9)


def test_the_services_build_their_storage_clients_with_the_limits() -> None:
    from shared.bootstrap import build_services
    from shared.settings import azurite_connection_string

    settings = Settings(AzureWebJobsStorage=azurite_connection_string(), WHARF_STORAGE_RETRIES=1,
                        WHARF_STORAGE_READ_TIMEOUT_SECONDS=9)
    svc = build_services(settings)
    blob_service: Any = svc.blobs._service  # type: ignore[attr-defined]
    assert blob_service._config.retry_policy.total_retries == 1
    transport: Any = blob_service._pipeline._transport
    assert transport.connection_config.read_timeout == 9
    retry: Callable[..., Any] = next(p for p in svc.jobs._service._policies  # type: ignore[attr-defined]
                                     if type(p).__name__ == "TablesRetryPolicy")
    assert retry.total_retries == 1  # type: ignore[attr-defined]


def test_the_lease_of_an_untuned_poll_is_a_setting() -> None:
    from datetime import timedelta

    from shared.bootstrap import build_services
    from shared.services.polls import default_options

    assert default_options(build_services(Settings())).lease == timedelta(minutes=10)
    assert default_options(build_services(Settings(WHARF_POLL_LEASE_SECONDS=45))).lease == timedelta(seconds=45)


def test_a_mail_poll_stops_at_the_first_storage_unavailable_error_and_the_next_lands_every_attachment_once(
        caplog: pytest.LogCaptureFixture) -> None:
    from tests.graph_server.model import file_attachment
    from tests.unit.test_poll_mailbox import PARTNER as MAIL_PARTNER
    from tests.unit.test_poll_mailbox import World as MailWorld

    world = MailWorld()
    mails = [world.add(file_attachment(f"m{i}.csv", f"id\n{i}\n".encode())) for i in range(5)]
    outage = storage_goes_down(world, at_upload=2)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(ServiceRequestError):
        world.poll()
    assert outage.calls_while_down == ["blobs.upload_stream"]  # no note, no release, no further attachment
    assert not [r for r in caplog.records if r.exc_info]
    assert [r.levelno for r in caplog.records if "stopped: storage unavailable" in r.getMessage()] == [logging.ERROR]
    assert not any(m.is_read for m in mails[1:])  # their after-action waits for their attachments

    storage_back(world)  # type: ignore[arg-type]
    world.clock.advance(minutes=11)
    summary = world.poll()
    assert summary.status == "ok"
    entries = world.ledger.entries(MAIL_PARTNER)
    assert len(entries) == 5 and {e.state for e in entries} == {LedgerState.DONE}
    assert len(world.jobs.job_ids()) == 5 and len(world.landed()) == 5
    assert len(world.blobs.list_blobs("inbound", f"{MAIL_PARTNER}/")) == 5 and all(m.is_read for m in mails)
