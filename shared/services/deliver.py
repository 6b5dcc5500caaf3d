"""Outbound delivery to a partner's SFTP server: a temporary name, verified, renamed into place, exactly once.

Every (job, destination index) has one Deliveries record (PENDING -> SENDING -> SENT, or FAILED with the
reason). An attempt writes how far it got (`step`) before each irreversible move, so a retry after a crash
finds what is on the server and finishes from there: a verified temporary file of this delivery is renamed,
a final file in place with the right size after a rename is SENT without uploading again, anything else is
uploaded again from the start. A SENT record is never sent again by a redelivery of the same route.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from shared.domain.delivery import (
    DEFAULT_REMOTE_NAME,
    DEFAULT_SFTP_ON_EXISTS,
    SFTP_ON_EXISTS,
    Delivery,
    DeliveryState,
    DeliveryStep,
    delivery_tag,
    render_remote_path,
    temp_path,
)
from shared.domain.errors import (
    ConfigurationError,
    ConflictError,
    DependencyUnavailableError,
    NotFoundError,
    PermanentError,
    WharfError,
)
from shared.domain.jobs import FileTransfer, Job, utcnow
from shared.domain.naming import UNIQUE_LIMIT, numbered
from shared.domain.remote import (
    HostKeyMismatchError,
    RemoteError,
    RemoteFile,
    RemoteFileError,
    SourceAuthError,
    SourceConfigurationError,
    SourceUnavailableError,
)
from shared.domain.sanitize import display_name
from shared.metrics import record_failure, record_transfer
from shared.observability.redaction import redact
from shared.observability.tracing import current_trace_id, log_fields, span
from shared.ports import Slot, SlotsBusyError
from shared.services.breaker import CircuitBreaker
from shared.services.read_ahead import read_ahead

if TYPE_CHECKING:
    from shared.bootstrap import Services
    from shared.ports import FileSink

log = logging.getLogger(__name__)

#: The breaker channel of outbound SFTP: its own records, so a broken inbound poll of a partner does not stop
#: deliveries to it, nor the other way round.
CHANNEL = "sftp-out"
#: Blob blocks (the streamed read's 256 KiB) fetched and hashed ahead of the SFTP writes (read_ahead): the
#: download and the SHA-256 (hashlib lets go of the GIL) overlap the upload. 16 x 256 KiB = 4 MiB held at most.
READ_AHEAD = 16
#: Failures of the connection itself (not of one file): they count against the breaker.
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    SourceUnavailableError, SourceAuthError, HostKeyMismatchError, SourceConfigurationError)
SHA256_UNAVAILABLE = "sha256 unavailable: the server offers no check-file extension with sha256"


@dataclass(frozen=True)
class DeliveryOptions:
    """How a delivery retries and when its breaker opens; the defaults are the inbound poll's."""

    retry_attempts: int = 3  # connection attempts within one activity run (transient failures only)
    retry_initial: float = 1.0
    retry_max: float = 30.0
    breaker_threshold: int = 5
    breaker_cooldown: timedelta = timedelta(minutes=5)
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep


class DeliveryError(WharfError):
    """A delivery that did not happen, with the reason (recorded on the Delivery and the job)."""


class DeliveryFailedError(DeliveryError):
    """The server answered but the file could not be put in place (name taken, denied, verification failed)."""


class DeliveryRefusedError(DeliveryFailedError, PermanentError):
    """The server refuses this delivery until something changes (the name is taken and on_exists says not to
    replace it, the folder is not writable): not retried."""


class DeliveryUnavailableError(DeliveryError, DependencyUnavailableError):
    """The receiving server's outbound circuit is open: nothing was tried."""


class DeliverySessionsBusyError(DeliveryError, DependencyUnavailableError):
    """Every SFTP session the receiving partner allows (sftp.max_sessions or WHARF_SFTP_MAX_SESSIONS) stayed in
    use by polls and other deliveries for the whole wait: nothing was tried, and its breaker does not count it."""


@dataclass(frozen=True)
class SftpPlan:
    """Where one SFTP destination puts one job's output."""

    target: str  # the receiving partner
    config: Any  # its catalogue sftp block
    final: str  # the final remote path (the first candidate, for on_exists: unique)
    temp: str
    on_exists: str
    verify: str
    container: str
    blob_path: str
    size: int
    sha256: str
    route: str


def plan_sftp(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
              dest: Mapping[str, Any]) -> SftpPlan:
    """Resolve a destination against the catalogue; ConfigurationError says what to change."""
    route = str(ref.get("route", ""))
    target = str(dest.get("partner", ""))
    where = f"route '{route}': sftp destination to partner '{target}'"
    try:
        partner = services.catalog.get(target)
    except NotFoundError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    config = getattr(partner, "sftp", None)
    if config is None:
        raise ConfigurationError(f"{where}: that partner has no sftp block to deliver to")
    if not getattr(partner, "enabled", True):
        raise ConfigurationError(f"{where}: that partner is disabled in the catalogue; nothing was sent")
    folder = dest.get("folder") or getattr(config, "outbound_dir", None)
    if not folder:
        raise ConfigurationError(f"{where}: no folder, and the partner has no sftp.outbound_dir")
    on_exists = str(dest.get("on_exists") or DEFAULT_SFTP_ON_EXISTS)
    verify = str(dest.get("verify") or "size")
    if on_exists not in SFTP_ON_EXISTS:
        raise ConfigurationError(f"{where}: on_exists '{on_exists}' is not one of {', '.join(SFTP_ON_EXISTS)}")
    if verify not in ("size", "sha256"):
        raise ConfigurationError(f"{where}: verify '{verify}' is not size or sha256")
    template = str(dest.get("name") or DEFAULT_REMOTE_NAME)
    try:
        final = render_remote_path(str(folder), template, partner=job.partner, name=str(output["name"]),
                                   job_id=job.job_id, when=job.created_at.astimezone(UTC))
    except ValueError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    temp = temp_path(final, delivery_tag(job.job_id, int(ref.get("index", 0))),
                     prefix=dest.get("temp_prefix"), suffix=dest.get("temp_suffix"))
    return SftpPlan(target=target, config=config, final=final, temp=temp, on_exists=on_exists, verify=verify,
                    container=str(output["container"]), blob_path=str(output["path"]),
                    size=int(output.get("bytes", 0)), sha256=str(output.get("sha256", "")), route=route)


def deliver_sftp(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                 dest: Mapping[str, Any], *, opts: DeliveryOptions | None = None) -> dict[str, Any]:
    """Deliver the job's output to one SFTP destination, exactly once per (job, destination index).

    Raises DeliveryFailedError (the file could not be put in place), DeliveryUnavailableError (circuit open),
    the connection's own errors (SourceUnavailableError after the retries, login, host key) or
    ConfigurationError; the Delivery is FAILED with the reason then, and the next attempt takes it over."""
    opts = opts or DeliveryOptions()
    index = int(ref.get("index", 0))
    pgp_info: dict[str, Any] = {}
    if dest.get("pgp"):  # trust (#18): encrypt (and sign) first; the ciphertext blob is what goes up
        from shared.services.pgp import encrypted_output

        output = encrypted_output(services, job, ref, output, dest["pgp"])
        pgp_info = {"pgp": output["pgp"]}
    plan = plan_sftp(services, job, ref, output, dest)
    attrs = {"wharf.job_id": job.job_id, "wharf.partner": job.partner, "wharf.destination": "sftp",
             "wharf.destination.partner": plan.target, "wharf.destination.index": index,
             "wharf.on_exists": plan.on_exists, "file.size": plan.size}
    with span("deliver.sftp", attrs) as s:
        run = _Run(services, job, plan, _record(services, job, index, plan), opts)
        if run.record.state is DeliveryState.SENT:
            s.set_attribute("wharf.delivery.already_sent", True)
            log.info("delivery already sent; not sent again",
                     extra=log_fields(job.job_id, partner=job.partner, target=plan.target, index=index,
                                      remote_path=display_name(run.record.remote_path)))
            return {**run.result(already_sent=True), **pgp_info}
        breaker = CircuitBreaker(services.breakers, CHANNEL, threshold=opts.breaker_threshold,
                                 cooldown=opts.breaker_cooldown, clock=opts.clock)
        decision = breaker.allow(plan.target)
        if not decision.allowed:
            reason = (f"circuit {CHANNEL} is open for partner {plan.target} after repeated failures (last: "
                      f"{redact(decision.last_error) or 'unknown'}); next try after {decision.retry_at}")
            run.failed(reason)
            raise DeliveryUnavailableError(f"sftp delivery to {plan.target}", reason)
        run.save(state=DeliveryState.SENDING, temp_path=plan.temp, error="",
                 remote_path=run.record.remote_path or plan.final)
        started = time.monotonic()
        try:
            run.attempt_all()
        except DeliverySessionsBusyError as exc:  # the server is not at fault: no breaker record either way
            run.failed(str(exc), exc)
            raise
        except CONNECTION_FAILURES as exc:
            breaker.record_failure(plan.target, redact(str(exc)))
            run.failed(str(exc), exc)
            raise
        except (RemoteError, DeliveryError) as exc:
            breaker.record_success(plan.target)  # the server answered: this file's problem, not the connection's
            error = _explained(plan, exc)
            run.failed(str(error), error)
            if error is exc:
                raise
            raise error from exc
        breaker.record_success(plan.target)
        record_transfer(job.partner, "sftp", time.monotonic() - started)
        s.set_attribute("wharf.remote_path", display_name(run.record.remote_path))
        s.set_attribute("wharf.verified", run.record.verified)
        s.set_attribute("wharf.attempts", run.record.attempts)
        return {**run.result(already_sent=False), **pgp_info}


def _record(services: Services, job: Job, index: int, plan: SftpPlan) -> Delivery:
    """The delivery's record: the stored one, else a new PENDING one (insert-if-absent)."""
    try:
        return services.deliveries.get(job.job_id, index)
    except NotFoundError:
        pass
    new = Delivery(job_id=job.job_id, index=index, partner=job.partner, kind="sftp", target=plan.target,
                   route=plan.route, bytes=plan.size, sha256=plan.sha256, created_at=utcnow())
    try:
        return services.deliveries.create(new)
    except ConflictError:
        return services.deliveries.get(job.job_id, index)  # another attempt created it first


class _Run:
    """One activity run of one delivery: its record, kept current after every conditional write."""

    def __init__(self, services: Services, job: Job, plan: SftpPlan, record: Delivery, opts: DeliveryOptions) -> None:
        self._s, self.job, self.plan, self.record, self.opts = services, job, plan, record, opts

    def _fields(self, **extra: Any) -> dict[str, Any]:
        return log_fields(self.job.job_id, partner=self.job.partner, target=self.plan.target,
                          index=self.record.index, **extra)

    def save(self, **changes: Any) -> Delivery:
        """Write the record (ETag-conditional). Losing the ETag means another run of this delivery wrote since:
        stop (ConflictError), the activity's retry reads the record again."""
        self.record = self._s.deliveries.update(replace(self.record, **changes))
        return self.record

    def failed(self, reason: str, exc: BaseException | None = None) -> None:
        reason = redact(reason)
        try:
            self.save(state=DeliveryState.FAILED, error=reason[:2000])
        except (ConflictError, NotFoundError):
            log.warning("delivery failure not recorded: the record moved", extra=self._fields())
        record_failure(self.job.partner, "sftp", exc if exc is not None else "circuit_open")
        self._s.jobs.log(self.job.job_id, "WARNING",
                         f"sftp delivery {self.record.index} to {self.plan.target} failed (attempt "
                         f"{self.record.attempts}): {reason}", trace_id=current_trace_id())
        self._transfer("FAILED")
        log.warning("sftp delivery failed: %s", reason, extra=self._fields(attempts=self.record.attempts))

    def _transfer(self, status: str) -> None:
        path = self.record.remote_path or self.plan.final
        self._s.jobs.add_transfer(FileTransfer(
            job_id=self.job.job_id, transfer_id=f"dl-{self.record.index:03d}", file_name=posixpath.basename(path),
            source=f"{self.plan.container}/{self.plan.blob_path}", destination=f"sftp:{self.plan.target}:{path}",
            status=status, transfer_date=utcnow(), bytes=self.plan.size, sha256=self.plan.sha256))

    def result(self, *, already_sent: bool) -> dict[str, Any]:
        r = self.record
        return {"kind": "sftp", "target": f"sftp:{r.target}:{r.remote_path}", "partner": r.target,
                "remote_path": r.remote_path, "bytes": r.bytes, "sha256": r.sha256, "verified": r.verified,
                "attempts": r.attempts, "delivery": r.state.value, "already_sent": already_sent}

    # --- attempts ------------------------------------------------------------------------------

    def _retrying(self) -> Retrying:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("sftp delivery to %s: %s; retrying (attempt %d)", self.plan.target, exc,
                        state.attempt_number, extra=self._fields())

        return Retrying(retry=retry_if_exception_type(SourceUnavailableError),
                        stop=stop_after_attempt(max(1, self.opts.retry_attempts)),
                        wait=wait_exponential_jitter(multiplier=self.opts.retry_initial, max=self.opts.retry_max),
                        sleep=self.opts.sleep, before_sleep=before_sleep, reraise=True)

    def attempt_all(self) -> None:
        for attempt in self._retrying():
            with attempt:
                self.save(attempts=self.record.attempts + 1)
                slot = self._session_slot()
                try:
                    sink = self._s.file_sinks.open(self.plan.target, self.plan.config)
                    try:
                        self._attempt(sink)
                    finally:
                        sink.close()
                finally:
                    slot.release()

    def _session_slot(self) -> Slot:
        """One of the receiving partner's session slots, the same ones its inbound polls take (`sftp-{partner}`,
        sftp.max_sessions or WHARF_SFTP_MAX_SESSIONS): the partner's session limit holds across polls and
        deliveries, on every worker and instance."""
        settings = self._s.settings
        limit = int(getattr(self.plan.config, "max_sessions", None) or settings.sftp_max_sessions)
        wait = settings.sftp_session_wait_seconds
        try:
            return self._s.slots.acquire(f"sftp-{self.plan.target}", limit, wait_seconds=wait)
        except SlotsBusyError as exc:
            raise DeliverySessionsBusyError(
                f"sftp delivery to {self.plan.target}",
                f"all {limit} SFTP sessions partner {self.plan.target} allows (sftp.max_sessions or "
                f"WHARF_SFTP_MAX_SESSIONS) stayed in use by polls and other deliveries for {wait:g} s; nothing "
                "was sent") from exc

    def _attempt(self, sink: FileSink) -> None:
        plan, rec = self.plan, self.record
        final = rec.remote_path or plan.final
        temp = _stat(sink, plan.temp)
        if rec.step is DeliveryStep.RENAMING:
            placed = _stat(sink, final)
            if temp is None and placed is not None and placed.size == plan.size:
                # The crash came after the rename: the file is in place; never uploaded again.
                self._sent(found_in_place=True)
                return
        if rec.step is DeliveryStep.RENAMING and temp is not None and temp.size == plan.size:
            verified = rec.verified or "size"  # verified before the step was written; the rename is what is left
        else:
            if plan.on_exists == "fail" and _stat(sink, plan.final) is not None:
                _remove_quietly(sink, plan.temp)
                raise self._taken(plan.final)
            self.save(step=DeliveryStep.UPLOADING, remote_path=plan.final)
            verified = self._upload(sink)
        self._rename(sink, verified)
        self._sent(found_in_place=False)

    def _upload(self, sink: FileSink) -> str:
        """Stream the blob into the temporary file (from byte 0), then verify it; returns what was verified."""
        plan = self.plan
        digest = hashlib.sha256()
        with span("deliver.sftp.upload", {"wharf.job_id": self.job.job_id, "file.size": plan.size}) as s:
            # One streamed read (BlobStore.open_stream), hashed on the read-ahead thread; the sink cuts the
            # blocks into its write requests.
            chunks = read_ahead(_hashed(self._s.blobs.open_stream(plan.container, plan.blob_path), digest),
                                READ_AHEAD, name=f"read-ahead-{self.job.job_id}")
            written = sink.write_chunks(plan.temp, chunks)
            s.set_attribute("wharf.bytes_written", written)
        sha = digest.hexdigest()
        if plan.sha256 and sha != plan.sha256:
            _remove_quietly(sink, plan.temp)
            raise DeliveryFailedError(f"{plan.container}/{plan.blob_path} read back with sha256 {sha}, not the "
                                      f"{plan.sha256} recorded for it; nothing was put in place")
        remote = sink.stat(plan.temp)
        if remote.size != plan.size or written != plan.size:
            _remove_quietly(sink, plan.temp)
            raise DeliveryFailedError(f"size check failed on {plan.target}: {display_name(plan.temp)} holds "
                                      f"{remote.size} bytes after writing {written}, expected {plan.size}; the "
                                      "temporary file was removed and nothing was put in place")
        verified = "size"
        if plan.verify == "sha256":
            server_sha = sink.checksum(plan.temp, "sha256") if "sha256" in sink.checksum_algorithms() else None
            if server_sha is None:
                verified = f"size; {SHA256_UNAVAILABLE}"
                log.info("sha256 verification unavailable on %s", plan.target, extra=self._fields())
            elif server_sha.lower() != sha:
                _remove_quietly(sink, plan.temp)
                raise DeliveryFailedError(f"sha256 check failed on {plan.target}: the server computed {server_sha} "
                                          f"for {display_name(plan.temp)}, expected {sha}; nothing was put in place")
            else:
                verified = "size+sha256"
        return verified

    def _rename(self, sink: FileSink, verified: str) -> None:
        plan = self.plan
        with span("deliver.sftp.rename", {"wharf.job_id": self.job.job_id, "wharf.on_exists": plan.on_exists,
                                          "wharf.atomic": sink.atomic_replace}):
            if plan.on_exists == "overwrite":
                self.save(step=DeliveryStep.RENAMING, remote_path=plan.final, verified=verified)
                sink.replace(plan.temp, plan.final)
                return
            candidates: Iterable[str] = numbered(plan.final, UNIQUE_LIMIT) if plan.on_exists == "unique" \
                else [plan.final]
            for candidate in candidates:
                self.save(step=DeliveryStep.RENAMING, remote_path=candidate, verified=verified)
                try:
                    sink.rename(plan.temp, candidate)
                    return
                except RemoteFileError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
                    if plan.on_exists == "fail":
                        self._gave_up(sink)
                        raise self._taken(candidate) from exc
            self._gave_up(sink)
            raise DeliveryRefusedError(f"{display_name(plan.final)} and its numbered names up to {UNIQUE_LIMIT} are "
                                      f"taken on {plan.target} (on_exists: unique); nothing was put in place")

    def _gave_up(self, sink: FileSink) -> None:
        """No rename happened and none will: the temporary file goes, and the record no longer says RENAMING
        (else a retry could take another's file of the same size at the name for this delivery's)."""
        _remove_quietly(sink, self.plan.temp)
        self.save(step=DeliveryStep.NONE, remote_path=self.plan.final)

    def _taken(self, path: str) -> DeliveryFailedError:
        return DeliveryRefusedError(
            f"{display_name(path)} already exists on {self.plan.target} and on_exists is fail: nothing was "
            "overwritten. Put {job_id} or a date in the destination's name, or set on_exists to unique or overwrite")

    def _sent(self, *, found_in_place: bool) -> None:
        self.save(state=DeliveryState.SENT, step=DeliveryStep.NONE, error="", sent_at=utcnow(),
                  bytes=self.plan.size, sha256=self.plan.sha256,
                  verified=self.record.verified or "size")
        self._transfer("SENT")
        how = "found in place after an earlier attempt's rename; not uploaded again" if found_in_place \
            else f"{self.plan.size} bytes, verified {self.record.verified}"
        self._s.jobs.log(self.job.job_id, "INFO",
                         f"delivered to sftp {self.plan.target}:{display_name(self.record.remote_path)} ({how})",
                         trace_id=current_trace_id())
        log.info("sftp delivery sent", extra=self._fields(remote_path=display_name(self.record.remote_path),
                                                          bytes=self.plan.size, found_in_place=found_in_place,
                                                          attempts=self.record.attempts))


def _explained(plan: SftpPlan, exc: BaseException) -> BaseException:
    """A remote file error as the delivery's reason: denied is refused for good (retrying cannot help)."""
    if not isinstance(exc, RemoteFileError):
        return exc
    user = getattr(plan.config, "username", "")
    if exc.denied:
        return DeliveryRefusedError(
            f"{plan.target} refused to write {display_name(exc.path)}: permission denied for user '{user}'. "
            "Check that this user may create, rename and remove files in the destination folder "
            f"({display_name(posixpath.dirname(plan.final))}); nothing was put in place")
    return DeliveryFailedError(f"sftp delivery to {plan.target} failed on {exc}; nothing was put in place")


def _hashed(chunks: Iterable[bytes], digest: Any) -> Iterator[bytes]:
    """The blob's chunks, hashed on the way (memory: one chunk)."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk


def _stat(sink: FileSink, path: str) -> RemoteFile | None:
    try:
        return sink.stat(path)
    except RemoteFileError as exc:
        if exc.missing:
            return None
        raise


def _remove_quietly(sink: FileSink, path: str) -> None:
    """Remove our temporary file; a failure to do so is logged, never hides the reason the delivery stopped."""
    try:
        sink.remove(path)
    except (RemoteError, OSError) as exc:
        log.warning("temporary file %s not removed: %s", display_name(path), exc, extra=log_fields())


__all__ = ["CHANNEL", "DeliveryError", "DeliveryFailedError", "DeliveryOptions", "DeliveryRefusedError",
           "DeliverySessionsBusyError", "DeliveryUnavailableError", "SftpPlan", "deliver_sftp", "plan_sftp"]
