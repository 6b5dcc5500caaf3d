"""Outbound SFTP delivery against the real OpenSSH server and Azurite: rename into place, on_exists, size
verification, crashes before and after the rename, sshd killed mid-upload, a read-only folder."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import LocalSecrets
from shared.bootstrap import Services
from shared.catalog import parse_catalog
from shared.domain.delivery import DeliveryState, DeliveryStep
from shared.domain.ids import new_job_id
from shared.domain.jobs import EventType
from shared.domain.remote import SourceUnavailableError
from shared.ports import FileSink
from shared.services.deliver import (
    SHA256_UNAVAILABLE,
    DeliveryFailedError,
    DeliveryOptions,
    DeliveryRefusedError,
    DeliverySessionsBusyError,
    deliver_sftp,
)
from tests.fakes import Crash
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.sshd, pytest.mark.azurite]

KEY_SECRET = "sftp-test-key"
MIB = 1024 * 1024


class CrashingSinks:
    """The real connector, with a process death injected before or after the rename."""

    def __init__(self, inner: Any, *, when: str) -> None:
        self.inner, self.when, self.armed = inner, when, True

    def open(self, partner_id: str, config: Any) -> FileSink:
        sink = self.inner.open(partner_id, config)
        if self.armed:
            self.armed = False
            for name in ("rename", "replace"):
                setattr(sink, name, self._wrap(getattr(sink, name)))
        return sink

    def _wrap(self, fn: Any) -> Any:
        def call(source: str, target: str) -> None:
            if self.when == "before":
                raise Crash("killed after the upload, before the rename")
            fn(source, target)
            raise Crash("killed after the rename, before SENT was recorded")

        return call


class Outbound:
    """A job of partner `src` whose route delivers to partner `dst` on the sshd, through real adapters."""

    def __init__(self, services: Services, sshd: SshdServer, *, folder: Path | None = None,
                 username: str | None = None, **dest: Any) -> None:
        self.services, self.sshd = services, sshd
        tag = uuid.uuid4().hex[:10]
        self.src, self.dst = f"src{tag}", f"dst{tag}"
        self.folder = folder or sshd.folder(f"delivery-{tag}") / "inbound"
        block = {"host": sshd.host, "port": sshd.port, "username": username or sshd.username,
                 "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd.known_hosts_line],
                 "remote_dirs": [f"/unused-{tag}"], "outbound_dir": str(self.folder),
                 "connect_timeout_seconds": 5, "operation_timeout_seconds": 10}
        route = {"name": "out", "default": True, "destinations": [{"kind": "sftp", "partner": self.dst, **dest}]}
        self.catalog = parse_catalog({"partners": [
            {"id": self.src, "name": "source", "routes": [route]}, {"id": self.dst, "name": "target", "sftp": block},
        ]}, env={})
        services.overrides["catalog"] = self.catalog
        services.overrides["secrets"] = LocalSecrets(env={"WHARF_SECRET_SFTP_TEST_KEY": f"@{sshd.client_key.path}"})
        self.job_id = new_job_id()
        services.jobs.append(self.job_id, EventType.CREATED, {"partner": self.src, "file_name": "pay.csv",
                                                              "source": "test"})
        self.opts = DeliveryOptions(retry_attempts=2, retry_initial=0.05, retry_max=0.1)

    def stage(self, data: bytes | Iterator[bytes], name: str = "pay.csv") -> None:
        chunks = [data] if isinstance(data, bytes) else data
        info = self.services.blobs.upload_stream("staging", f"{self.src}/{self.job_id}/{name}", chunks)
        self.output = {"container": "staging", "path": info.path, "name": name, "bytes": info.size,
                       "sha256": info.sha256}

    def deliver(self, **opts: Any) -> dict[str, Any]:
        dest = self.catalog.get(self.src).routes[0].destinations[0].model_dump(mode="json")
        ref = {"job_id": self.job_id, "partner": self.src, "route": "out", "index": 0}
        options = DeliveryOptions(**{**self.opts.__dict__, **opts})
        return deliver_sftp(self.services, self.services.jobs.get_job(self.job_id), ref, self.output, dest,
                            opts=options)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.folder)) if self.folder.exists() else []

    def record(self) -> Any:
        return self.services.deliveries.get(self.job_id, 0)


def test_delivers_into_place_through_a_temporary_name(services: Services, sshd_server: SshdServer) -> None:
    out = Outbound(services, sshd_server, name="{stem}_{yyyy}{MM}{dd}.{ext}")
    data = os.urandom(3 * MIB + 17)  # many pipelined write requests
    out.stage(data)
    result = out.deliver()
    created = services.jobs.get_job(out.job_id).created_at
    name = f"pay_{created:%Y%m%d}.csv"
    assert out.files() == [name] and (out.folder / name).read_bytes() == data
    rec = out.record()
    assert (rec.state, rec.step, rec.attempts, rec.bytes) == (DeliveryState.SENT, DeliveryStep.NONE, 1, len(data))
    assert result["target"] == f"sftp:{out.dst}:{out.folder}/{name}" and result["verified"] == "size"
    assert [t.status for t in services.jobs.transfers(out.job_id)] == ["SENT"]
    assert out.deliver()["already_sent"] and out.files() == [name]


def test_on_exists_fail_unique_and_overwrite(services: Services, sshd_server: SshdServer) -> None:
    out = Outbound(services, sshd_server, on_exists="fail")
    out.folder.mkdir(parents=True)
    (out.folder / "pay.csv").write_bytes(b"theirs")
    out.stage(b"ours\n")
    with pytest.raises(DeliveryRefusedError, match="already exists"):
        out.deliver()
    assert out.files() == ["pay.csv"] and (out.folder / "pay.csv").read_bytes() == b"theirs"
    assert out.record().state is DeliveryState.FAILED

    unique = Outbound(services, sshd_server, folder=out.folder, on_exists="unique")
    (out.folder / "pay.2.csv").write_bytes(b"theirs too")
    unique.stage(b"ours\n")
    assert unique.deliver()["remote_path"] == f"{out.folder}/pay.3.csv"
    assert (out.folder / "pay.3.csv").read_bytes() == b"ours\n" and (out.folder / "pay.csv").read_bytes() == b"theirs"

    overwrite = Outbound(services, sshd_server, folder=out.folder, on_exists="overwrite")
    overwrite.stage(b"replacement\n")
    overwrite.deliver()
    assert (out.folder / "pay.csv").read_bytes() == b"replacement\n"
    assert out.files() == ["pay.2.csv", "pay.3.csv", "pay.csv"]  # no temporary file left anywhere


def test_sha256_verification_is_unavailable_on_openssh(services: Services, sshd_server: SshdServer) -> None:
    out = Outbound(services, sshd_server, verify="sha256")
    out.stage(b"a,b\n1,2\n")
    assert out.deliver()["verified"] == f"size; {SHA256_UNAVAILABLE}"
    assert SHA256_UNAVAILABLE in out.record().verified


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_crash_around_the_rename_leaves_one_file_and_one_sent_record(
        services: Services, sshd_server: SshdServer, when: str) -> None:
    out = Outbound(services, sshd_server)
    data = os.urandom(MIB)
    out.stage(data)
    real = services.file_sinks
    services.overrides["file_sinks"] = CrashingSinks(real, when=when)
    services.__dict__.pop("file_sinks", None)
    with pytest.raises(Crash):
        out.deliver()
    assert out.record().step is DeliveryStep.RENAMING
    assert [f.endswith(".part") for f in out.files()] == [when == "before"]
    out.deliver()
    assert out.files() == ["pay.csv"] and (out.folder / "pay.csv").read_bytes() == data
    rec = out.record()
    assert rec.state is DeliveryState.SENT and rec.attempts == 2
    assert [t.status for t in services.jobs.transfers(out.job_id)] == ["SENT"]


class KillingBlobs:
    """Blob reads that kill sshd once `after` bytes have gone to the upload."""

    def __init__(self, inner: Any, sshd: SshdServer, after: int) -> None:
        self.inner, self.sshd, self.after = inner, sshd, after
        self.killed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def open_read(self, container: str, path: str, **kw: Any) -> Iterator[bytes]:
        return self._killing(self.inner.open_read(container, path, **kw))

    def open_stream(self, container: str, path: str, **kw: Any) -> Iterator[bytes]:
        return self._killing(self.inner.open_stream(container, path, **kw))

    def _killing(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        done = 0
        for chunk in chunks:
            yield chunk
            done += len(chunk)
            if done >= self.after and not self.killed.is_set():
                self.sshd.kill()
                self.killed.set()


def test_sshd_killed_mid_upload_leaves_no_final_file_and_the_retry_delivers(
        services: Services, private_sshd: SshdServer) -> None:
    out = Outbound(services, private_sshd)
    data = os.urandom(24 * MIB)
    out.stage(data)
    real_blobs = services.blobs
    services.overrides["blobs"] = KillingBlobs(real_blobs, private_sshd, after=8 * MIB)
    services.__dict__.pop("blobs", None)
    with pytest.raises(SourceUnavailableError):
        out.deliver(retry_attempts=2)
    assert "pay.csv" not in out.files()
    rec = out.record()
    assert rec.state is DeliveryState.FAILED and rec.attempts == 2 and rec.error
    private_sshd.start()
    out.deliver()
    assert out.files() == ["pay.csv"] and (out.folder / "pay.csv").read_bytes() == data
    assert out.record().state is DeliveryState.SENT


class FullDisk:
    """The real connector; the first upload's temporary file is /dev/full on the server (a symlink made there just
    before the write), so the open works and the writes fail with ENOSPC, as on a full disk."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.armed = inner, True

    def open(self, partner_id: str, config: Any) -> FileSink:
        sink = self.inner.open(partner_id, config)
        real = sink.write_chunks

        def write_chunks(path: str, chunks: Any) -> int:
            if self.armed:
                self.armed = False
                Path(path).parent.mkdir(parents=True, exist_ok=True)  # the sshd's paths are this machine's
                Path(path).symlink_to("/dev/full")
            return real(path, chunks)

        sink.write_chunks = write_chunks  # type: ignore[method-assign]
        return sink


def test_a_server_write_error_mid_upload_fails_clearly_with_nothing_under_the_final_name(
        services: Services, sshd_server: SshdServer) -> None:
    out = Outbound(services, sshd_server)
    data = os.urandom(6 * MIB)
    out.stage(data)
    services.overrides["file_sinks"] = FullDisk(services.file_sinks)
    services.__dict__.pop("file_sinks", None)
    with pytest.raises(DeliveryFailedError, match="refused the write at byte"):
        out.deliver()
    rec = out.record()
    assert rec.state is DeliveryState.FAILED and "refused the write at byte" in rec.error
    assert "pay.csv" not in out.files()
    for name in out.files():  # the disk has room again
        (out.folder / name).unlink()
    out.deliver()
    assert out.files() == ["pay.csv"] and (out.folder / "pay.csv").read_bytes() == data
    assert out.record().state is DeliveryState.SENT


def test_a_read_only_folder_fails_with_a_clear_reason(services: Services, sshd_server: SshdServer) -> None:
    folder = sshd_server.public_folder(f"readonly-{uuid.uuid4().hex[:8]}")
    folder.chmod(0o555)
    out = Outbound(services, sshd_server, folder=folder, username=sshd_server.unprivileged_user)
    out.stage(b"a,b\n")
    with pytest.raises(DeliveryRefusedError, match=f"permission denied for user '{sshd_server.unprivileged_user}'"):
        out.deliver()
    rec = out.record()
    assert rec.state is DeliveryState.FAILED and "permission denied" in rec.error and out.files() == []
    assert any("permission denied" in entry.message for entry in services.jobs.logs(out.job_id))


def test_a_delivery_takes_one_of_the_partners_session_slots_on_azurite(
        services: Services, sshd_server: SshdServer) -> None:
    """The blob-lease slots the partner's polls take (`sftp-{partner}`): with all of them held elsewhere, the
    delivery waits, then fails without connecting; with one free, it delivers and frees it again."""
    services.settings = services.settings.model_copy(update={"sftp_max_sessions": 2,
                                                             "sftp_session_wait_seconds": 0.5})
    out = Outbound(services, sshd_server)
    out.stage(b"a,b\n1,2\n")
    held = [services.slots.acquire(f"sftp-{out.dst}", 2, wait_seconds=0) for _ in range(2)]  # two polls, say
    try:
        with pytest.raises(DeliverySessionsBusyError, match=f"all 2 SFTP sessions partner {out.dst} allows"):
            out.deliver()
        assert out.files() == [] and out.record().state is DeliveryState.FAILED
        held.pop().release()
        assert out.deliver()["delivery"] == "SENT" and out.files() == ["pay.csv"]
        again = services.slots.acquire(f"sftp-{out.dst}", 2, wait_seconds=0)  # the delivery's slot was freed
        again.release()
    finally:
        for slot in held:
            slot.release()
