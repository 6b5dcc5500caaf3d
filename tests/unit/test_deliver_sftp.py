"""Outbound SFTP delivery on fakes: temp name + verify + rename, on_exists, exactly once across crashes,
retries and the separate sftp-out breaker; remote names; the catalogue's checks."""

from __future__ import annotations

import errno
import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters.slots import InProcessSlots
from shared.bootstrap import Services, build_services
from shared.catalog import Catalog, CatalogError, parse_catalog
from shared.domain.delivery import (
    Delivery,
    DeliveryState,
    DeliveryStep,
    delivery_keys,
    delivery_tag,
    render_remote_path,
    temp_path,
)
from shared.domain.errors import ConfigurationError, PermanentError
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.domain.ledger import BreakerState
from shared.domain.remote import SourceUnavailableError
from shared.services import process
from shared.services.breaker import CircuitBreaker
from shared.services.deliver import (
    CHANNEL,
    SHA256_UNAVAILABLE,
    DeliveryFailedError,
    DeliveryOptions,
    DeliveryRefusedError,
    DeliverySessionsBusyError,
    DeliveryUnavailableError,
    deliver_sftp,
)
from shared.settings import Settings
from tests.fakes import (
    Crash,
    FakeBlobStore,
    FakeBreakers,
    FakeDeliveries,
    FakeFileSources,
    FakeJobStore,
    FakePublisher,
    FakeSftpServer,
    remote_error,
    unavailable,
)

FINGERPRINT = "SHA256:" + "A" * 43
WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def make_catalog(**dest: Any) -> Catalog:
    bank = {"host": "bank.example", "username": "wharf", "auth": {"private_key_secret": "bank-key"},
            "host_keys": [FINGERPRINT], "remote_dirs": ["/from-bank"], "outbound_dir": "/to-bank"}
    destination = {"kind": "sftp", "partner": "bank", **dest}
    return parse_catalog({"partners": [
        {"id": "acme", "name": "Acme", "routes": [{"name": "pay", "default": True, "destinations": [destination]}]},
        {"id": "bank", "name": "Bank", "sftp": bank},
    ]}, env={})


class CrashOnSent(FakeDeliveries):
    """The process dies right after the rename: the SENT write never happens."""

    def __init__(self) -> None:
        super().__init__()
        self.crashes = 1

    def update(self, delivery: Delivery) -> Delivery:
        if delivery.state is DeliveryState.SENT and self.crashes:
            self.crashes -= 1
            raise Crash("killed after the rename")
        return super().update(delivery)


class World:
    def __init__(self, deliveries: FakeDeliveries | None = None, settings: Settings | None = None,
                 **dest: Any) -> None:
        self.server = FakeSftpServer(host="bank.example")
        self.blobs, self.jobs, self.breakers = FakeBlobStore(), FakeJobStore(), FakeBreakers()
        self.deliveries = deliveries or FakeDeliveries()
        self.sinks = FakeFileSources(self.server)
        self.catalog = make_catalog(**dest)
        self.services: Services = build_services(
            settings or Settings(), blobs=self.blobs, jobs=self.jobs, breakers=self.breakers,
            deliveries=self.deliveries, file_sinks=self.sinks, catalog=self.catalog, publisher=FakePublisher())
        self.job_id = new_job_id(WHEN)
        self.jobs.append(self.job_id, EventType.CREATED, {"partner": "acme", "file_name": "pay.csv", "source": "t"})
        self.data = b"id,amount\n" + b"1,2.50\n" * 50_000
        self.put_output(self.data)
        self.opts = DeliveryOptions(retry_initial=0.001, retry_max=0.002, sleep=lambda _: None)

    def put_output(self, data: bytes, name: str = "pay.csv") -> None:
        info = self.blobs.upload_stream("staging", f"acme/{self.job_id}/{name}", [data])
        self.output = {"container": "staging", "path": info.path, "name": name, "bytes": info.size,
                       "sha256": info.sha256}

    @property
    def dest(self) -> dict[str, Any]:
        return self.catalog.get("acme").routes[0].destinations[0].model_dump(mode="json")

    def ref(self, index: int = 0) -> dict[str, Any]:
        return {"job_id": self.job_id, "partner": "acme", "route": "pay", "index": index}

    def deliver(self, index: int = 0, **opts: Any) -> dict[str, Any]:
        job = self.jobs.get_job(self.job_id)
        return deliver_sftp(self.services, job, self.ref(index), self.output, self.dest,
                            opts=replace(self.opts, **opts))

    def record(self, index: int = 0) -> Delivery:
        return self.deliveries.get(self.job_id, index)

    def remote(self, path: str) -> bytes:
        return bytes(self.server.files[path].data)

    @property
    def temp(self) -> str:
        return temp_path("/to-bank/pay.csv", delivery_tag(self.job_id, 0))


# --- the happy path and what it records ------------------------------------------------------------


def test_uploads_under_a_temporary_name_verifies_and_renames_into_place() -> None:
    w = World()
    result = w.deliver()
    assert w.remote("/to-bank/pay.csv") == w.data
    assert w.server.renamed == [(w.temp, "/to-bank/pay.csv")]
    assert w.temp.endswith(".part") and w.temp not in w.server.files
    assert w.server.writes == {w.temp: 1}
    rec = w.record()
    assert (rec.state, rec.step, rec.attempts, rec.remote_path) == (DeliveryState.SENT, DeliveryStep.NONE, 1,
                                                                     "/to-bank/pay.csv")
    assert rec.bytes == len(w.data) and rec.sha256 == hashlib.sha256(w.data).hexdigest() and rec.verified == "size"
    assert result["target"] == "sftp:bank:/to-bank/pay.csv" and result["delivery"] == "SENT"
    assert not result["already_sent"]
    (transfer,) = w.jobs.transfers(w.job_id)
    assert (transfer.status, transfer.destination, transfer.bytes) == ("SENT", "sftp:bank:/to-bank/pay.csv",
                                                                        len(w.data))
    assert any("delivered to sftp bank:/to-bank/pay.csv" in entry.message for entry in w.jobs.logs(w.job_id))


def test_a_redelivered_route_is_not_sent_a_second_time() -> None:
    w = World()
    w.deliver()
    del w.server.files["/to-bank/pay.csv"]  # the partner took the file
    again = w.deliver()
    assert again["already_sent"] and again["target"] == "sftp:bank:/to-bank/pay.csv"
    assert w.sinks.opened == 1 and "/to-bank/pay.csv" not in w.server.files
    assert w.record().attempts == 1


def test_each_destination_index_is_its_own_delivery() -> None:
    w = World(name="{stem}.{ext}")
    w.deliver(0)
    with pytest.raises(DeliveryRefusedError):
        w.deliver(1)  # same name, on_exists fail: the second destination is refused, the first stays SENT
    assert w.record(0).state is DeliveryState.SENT and w.record(1).state is DeliveryState.FAILED


# --- exactly once across crashes ---------------------------------------------------------------------


def test_a_crash_between_upload_and_rename_is_finished_without_uploading_again() -> None:
    w = World()
    w.server.fail("rename", lambda _: Crash("killed before the rename"))
    with pytest.raises(Crash):
        w.deliver()
    rec = w.record()
    assert (rec.state, rec.step) == (DeliveryState.SENDING, DeliveryStep.RENAMING)
    assert w.remote(w.temp) == w.data and "/to-bank/pay.csv" not in w.server.files
    w.deliver()
    assert w.remote("/to-bank/pay.csv") == w.data and w.temp not in w.server.files
    assert w.server.writes == {w.temp: 1}  # renamed, not uploaded again
    assert w.record().state is DeliveryState.SENT and w.record().attempts == 2


def test_a_crash_after_the_rename_is_recognised_by_the_file_in_place() -> None:
    w = World(deliveries=CrashOnSent())
    with pytest.raises(Crash):
        w.deliver()
    assert w.record().step is DeliveryStep.RENAMING and w.remote("/to-bank/pay.csv") == w.data
    result = w.deliver()
    assert result["delivery"] == "SENT" and w.server.writes == {w.temp: 1}
    assert [name for name in w.server.names() if name.startswith("/to-bank/")] == ["/to-bank/pay.csv"]
    assert any("found in place" in entry.message for entry in w.jobs.logs(w.job_id))


def test_a_crash_mid_upload_restarts_the_temporary_file_from_the_start() -> None:
    w = World()
    w.server.fail("write", lambda _: Crash("killed mid-upload"), after_bytes=200_000)
    with pytest.raises(Crash):
        w.deliver()
    assert 0 < len(w.remote(w.temp)) < len(w.data) and "/to-bank/pay.csv" not in w.server.files
    w.deliver()
    assert w.remote("/to-bank/pay.csv") == w.data and w.server.writes == {w.temp: 2}


def test_a_file_of_the_same_size_at_the_name_is_not_taken_for_ours_after_a_refusal() -> None:
    w = World(on_exists="fail")
    w.server.put("/to-bank/pay.csv", b"x" * len(w.data))  # someone else's, same size
    with pytest.raises(DeliveryRefusedError):
        w.deliver()
    with pytest.raises(DeliveryRefusedError):
        w.deliver()
    assert w.record().state is DeliveryState.FAILED and w.remote("/to-bank/pay.csv") == b"x" * len(w.data)


def test_a_lost_connection_is_retried_on_a_new_session() -> None:
    w = World()
    w.server.fail("write", unavailable, after_bytes=100_000)
    w.deliver()
    assert w.sinks.opened == 2 and w.record().attempts == 2 and w.remote("/to-bank/pay.csv") == w.data


def test_a_server_that_stays_down_fails_the_delivery_after_the_retries() -> None:
    w = World()
    w.server.down = True
    with pytest.raises(SourceUnavailableError):
        w.deliver()
    rec = w.record()
    assert rec.state is DeliveryState.FAILED and rec.attempts == 3 and "connection refused" in rec.error
    w.server.down = False
    w.deliver()
    assert w.record().state is DeliveryState.SENT and w.record().attempts == 4


# --- on_exists ----------------------------------------------------------------------------------------


def test_on_exists_fail_refuses_before_uploading_and_leaves_the_file_alone() -> None:
    w = World(on_exists="fail")
    w.server.put("/to-bank/pay.csv", b"theirs")
    with pytest.raises(DeliveryRefusedError, match="already exists on bank and on_exists is fail") as refused:
        w.deliver()
    assert isinstance(refused.value, PermanentError)
    assert w.server.writes == {} and w.remote("/to-bank/pay.csv") == b"theirs"
    assert w.record().state is DeliveryState.FAILED and "already exists" in w.record().error
    (transfer,) = w.jobs.transfers(w.job_id)
    assert transfer.status == "FAILED"


def test_on_exists_fail_when_the_name_is_taken_during_the_upload() -> None:
    w = World(on_exists="fail")
    original = w.sinks.open

    def open_and_race(partner_id: str, config: Any) -> Any:
        sink = original(partner_id, config)
        real_write = sink.write_chunks

        def write(path: str, chunks: Any) -> int:
            written = real_write(path, chunks)
            w.server.put("/to-bank/pay.csv", b"raced")
            return written

        sink.write_chunks = write  # type: ignore[method-assign]
        return sink

    w.sinks.open = open_and_race  # type: ignore[method-assign]
    with pytest.raises(DeliveryRefusedError):
        w.deliver()
    assert w.remote("/to-bank/pay.csv") == b"raced" and w.temp not in w.server.files
    assert w.record().step is DeliveryStep.NONE


def test_on_exists_unique_adds_a_counter() -> None:
    w = World(on_exists="unique")
    w.server.put("/to-bank/pay.csv", b"one")
    w.server.put("/to-bank/pay.2.csv", b"two")
    result = w.deliver()
    assert result["remote_path"] == "/to-bank/pay.3.csv" and w.remote("/to-bank/pay.3.csv") == w.data
    assert w.remote("/to-bank/pay.csv") == b"one" and w.remote("/to-bank/pay.2.csv") == b"two"


@pytest.mark.parametrize("atomic", [True, False])
def test_on_exists_overwrite_replaces_the_file(atomic: bool) -> None:
    w = World(on_exists="overwrite")
    w.server.posix_rename = atomic
    w.server.put("/to-bank/pay.csv", b"old")
    w.deliver()
    assert w.remote("/to-bank/pay.csv") == w.data and w.temp not in w.server.files


# --- verification ---------------------------------------------------------------------------------------


def test_sha256_verification_is_reported_unavailable_when_the_server_has_no_check_file() -> None:
    w = World(verify="sha256")
    result = w.deliver()
    assert result["verified"] == f"size; {SHA256_UNAVAILABLE}"
    assert "unavailable" in w.record().verified and w.record().state is DeliveryState.SENT


def test_sha256_verification_through_check_file() -> None:
    w = World(verify="sha256")
    w.server.check_file = frozenset({"md5", "sha256"})
    assert w.deliver()["verified"] == "size+sha256"


def test_bytes_that_do_not_match_the_recorded_sha256_are_never_put_in_place() -> None:
    w = World()
    w.output = {**w.output, "sha256": "0" * 64}
    with pytest.raises(DeliveryFailedError, match="read back with sha256"):
        w.deliver()
    assert "/to-bank/pay.csv" not in w.server.files and w.temp not in w.server.files


def test_a_read_only_folder_fails_for_good_with_a_clear_reason() -> None:
    w = World()
    w.server.readonly.add("/to-bank")
    with pytest.raises(DeliveryRefusedError, match="permission denied for user 'wharf'") as refused:
        w.deliver()
    assert isinstance(refused.value, PermanentError)
    assert w.record().state is DeliveryState.FAILED and "permission denied" in w.record().error


def test_other_file_errors_are_retryable_failures() -> None:
    w = World()
    w.server.fail("rename", remote_error(errno.EIO))
    with pytest.raises(DeliveryFailedError) as failed:
        w.deliver()
    assert not isinstance(failed.value, PermanentError)
    w.deliver()  # the temporary file was verified: only the rename is left
    assert w.server.writes == {w.temp: 1} and w.record().state is DeliveryState.SENT


# --- the breaker: its own channel ------------------------------------------------------------------------


def test_an_open_inbound_circuit_does_not_stop_deliveries() -> None:
    w = World()
    inbound = CircuitBreaker(w.breakers, "sftp", threshold=1)
    inbound.record_failure("bank", "listing failed")
    assert inbound.state("bank").state is BreakerState.OPEN
    w.deliver()
    assert w.record().state is DeliveryState.SENT


def test_repeated_connection_failures_open_the_outbound_circuit_only() -> None:
    w = World()
    w.server.down = True
    for _ in range(2):
        with pytest.raises(SourceUnavailableError):
            w.deliver(retry_attempts=1, breaker_threshold=2)
    assert w.breakers.get(CHANNEL, "bank").state is BreakerState.OPEN
    assert w.breakers.get("sftp", "bank").state is BreakerState.CLOSED
    opened = w.sinks.opened
    w.server.down = False
    with pytest.raises(DeliveryUnavailableError, match="circuit sftp-out is open for partner bank"):
        w.deliver(breaker_threshold=2)
    assert w.sinks.opened == opened  # nothing tried
    later = datetime.now(UTC) + timedelta(minutes=6)
    w.deliver(breaker_threshold=2, clock=lambda: later)  # the probe after the cool-down closes it
    assert w.breakers.get(CHANNEL, "bank").state is BreakerState.CLOSED


# --- the partner's session limit: deliveries take the slots its polls take ----------------------------------


class SlotWatchingSinks(FakeFileSources):
    """Records how many of the partner's session slots are held whenever a session is opened."""

    def __init__(self, server: FakeSftpServer, slots: Any) -> None:
        super().__init__(server)
        self.slots, self.held_at_open = slots, list[int]()

    def open(self, partner_id: str, config: Any) -> Any:
        self.held_at_open.append(self.slots.held(f"sftp-{partner_id}"))
        return super().open(partner_id, config)


def test_a_delivery_holds_one_of_the_partners_session_slots_while_connected() -> None:
    w = World()
    slots = w.services.slots
    assert isinstance(slots, InProcessSlots)
    w.services.overrides["file_sinks"] = sinks = SlotWatchingSinks(w.server, slots)
    w.services.__dict__.pop("file_sinks", None)
    w.deliver()
    assert sinks.held_at_open == [1] and slots.held("sftp-bank") == 0  # taken for the session, freed after
    assert w.record().state is DeliveryState.SENT


def test_a_delivery_waits_for_a_session_slot_and_fails_clearly_when_none_frees() -> None:
    w = World(settings=Settings(WHARF_SFTP_MAX_SESSIONS=2, WHARF_SFTP_SESSION_WAIT_SECONDS=0))
    taken = [w.services.slots.acquire("sftp-bank", 2, wait_seconds=0) for _ in range(2)]  # e.g. two polls
    with pytest.raises(DeliverySessionsBusyError, match="all 2 SFTP sessions partner bank allows"):
        w.deliver()
    assert w.sinks.opened == 0  # no session beyond the limit was opened
    rec = w.record()
    assert rec.state is DeliveryState.FAILED and "stayed in use by polls and other deliveries" in rec.error
    assert w.breakers.get(CHANNEL, "bank").failures == 0  # the server is not at fault
    taken[0].release()
    w.deliver()
    slots = w.services.slots
    assert isinstance(slots, InProcessSlots)
    assert w.record().state is DeliveryState.SENT and slots.held("sftp-bank") == 1


def test_a_partners_own_max_sessions_is_the_limit_for_deliveries() -> None:
    w = World(settings=Settings(WHARF_SFTP_SESSION_WAIT_SECONDS=0))
    bank = w.catalog.get("bank")
    assert bank.sftp is not None
    w.catalog = parse_catalog({"partners": [
        {"id": "acme", "name": "Acme", "routes": [{"name": "pay", "default": True,
                                                   "destinations": [{"kind": "sftp", "partner": "bank"}]}]},
        {"id": "bank", "name": "Bank", "sftp": {**bank.sftp.model_dump(mode="json"), "max_sessions": 1}},
    ]}, env={})
    w.services.overrides["catalog"] = w.catalog
    w.services.__dict__.pop("catalog", None)
    held = w.services.slots.acquire("sftp-bank", 1, wait_seconds=0)
    with pytest.raises(DeliverySessionsBusyError, match="all 1 SFTP sessions"):
        w.deliver()
    held.release()
    assert w.deliver()["delivery"] == "SENT"


# --- names ----------------------------------------------------------------------------------------------


def test_remote_names_come_from_the_template_and_are_sanitised() -> None:
    w = World(name="{stem}_{yyyy}{MM}{dd}.{ext}")
    w.put_output(b"a,b\n", name="pay.csv")
    when = w.jobs.get_job(w.job_id).created_at.astimezone(UTC)
    assert w.deliver()["remote_path"] == f"/to-bank/pay_{when:%Y%m%d}.csv"
    path = render_remote_path("/out", "{partner}/{name}", partner="a/../b", name='..\x00x:y?.csv', job_id="j",
                              when=WHEN)
    assert path == "/out/a_.._b/.._x_y_.csv"


def test_a_folder_in_the_destination_overrides_outbound_dir() -> None:
    w = World(folder="/elsewhere/in")
    assert w.deliver()["remote_path"] == "/elsewhere/in/pay.csv"


def test_temporary_names_carry_the_delivery_tag() -> None:
    assert temp_path("/o/a.csv", "1a2b3c4d") == "/o/a.csv.1a2b3c4d.part"
    assert temp_path("/o/a.csv", "1a2b3c4d", prefix=".") == "/o/.a.csv.1a2b3c4d"
    assert temp_path("/o/a.csv", "1a2b3c4d", prefix="tmp_", suffix=".tmp") == "/o/tmp_a.csv.1a2b3c4d.tmp"
    long = temp_path("/o/" + "é" * 200 + ".csv", "1a2b3c4d")
    assert len(long.rsplit("/", 1)[1].encode()) <= 255 and long.endswith(".1a2b3c4d.part")
    assert delivery_tag("job-1", 0) != delivery_tag("job-1", 1)


def test_delivery_keys_share_the_jobs_partition() -> None:
    job_id = new_job_id(WHEN)
    group, suffix = job_id.rsplit("-", 1)
    assert delivery_keys(job_id, 2) == (group, f"{suffix}-002")


@pytest.mark.parametrize("template", ["../{name}", "{yyyy}/../../{name}", "/etc/{name}", "a//{name}", "a\\{name}"])
def test_a_name_template_that_escapes_the_folder_is_a_catalogue_error(template: str) -> None:
    with pytest.raises(CatalogError) as caught:
        make_catalog(name=template)
    assert any("destinations[0].name" in p for p in caught.value.problems), caught.value.problems


def test_the_catalogue_checks_temp_parts_and_placeholders() -> None:
    with pytest.raises(CatalogError, match="temp_suffix"):
        make_catalog(temp_suffix="/x")
    with pytest.raises(CatalogError, match="placeholder"):
        make_catalog(name="{nope}.csv")
    with pytest.raises(CatalogError, match="on_exists"):
        make_catalog(on_exists="replace")


def test_a_disabled_or_missing_target_is_a_configuration_error() -> None:
    w = World()
    job = w.jobs.get_job(w.job_id)
    with pytest.raises(ConfigurationError, match="sftp destination to partner 'nobody'") as missing:
        deliver_sftp(w.services, job, w.ref(), w.output, {**w.dest, "partner": "nobody"}, opts=w.opts)
    assert isinstance(missing.value, PermanentError)
    bank = w.catalog.get("bank")
    w.services.overrides["catalog"] = Catalog(partners=[w.catalog.get("acme"), bank.model_copy(update={
        "enabled": False})])
    with pytest.raises(ConfigurationError, match="disabled in the catalogue"):
        w.deliver()
    assert w.sinks.opened == 0


# --- wiring: route_file --------------------------------------------------------------------------------


def test_route_file_delivers_sftp_destinations_and_records_the_route() -> None:
    w = World()
    ref = {**w.ref(), "output": w.output, "destination": w.dest, "container": "inbound", "blob_path": "x",
           "file_name": "pay.csv"}
    result = process.route_file(w.services, ref)
    assert result["kind"] == "sftp" and w.remote("/to-bank/pay.csv") == w.data
    process.route_file(w.services, ref)  # the activity retried after it had finished
    routed = [e for e in w.jobs.events(w.job_id) if e.type is EventType.ROUTED]
    assert len(routed) == 1 and routed[0].data["target"] == "sftp:bank:/to-bank/pay.csv"
    assert w.server.writes == {w.temp: 1}
