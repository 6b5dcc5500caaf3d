"""OpenPGP in the processing flow: decrypt a landed file before validation, encrypt an output before delivery.

Inbound (`processing.rules[].pgp`): the landed blob streams through gpg into a plaintext file inside a
temporary keyring directory (shared/adapters/pgp.py); validation and the transform read that file; the
directory goes when the activity ends, so the plaintext exists only as the transform's output. A message
that fails (bad or missing signature when required, for another key, corrupt) raises PgpError: the caller
fails the job with that reason and quarantines the raw (still encrypted) file.

Outbound (`routes[].destinations[].pgp`: SFTP, blob, email): the staged output is encrypted (and signed) into a
staging blob of its own, `staging/{partner}/{job_id}/pgp/{index}/{name}{suffix}`, reused by a retry of the same
delivery (a new encryption would differ byte for byte), and that blob is what the delivery uploads.

Secrets: a refused passphrase is re-read once bypassing the cache (a rotated passphrase takes effect at
once). Job events name fingerprints, never keys; spans and logs carry the job id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shared.adapters.pgp import (
    DecryptResult,
    Keyring,
    PgpError,
    PgpPassphraseError,
    decrypt_to_file,
    encrypt_to_file,
    file_chunks,
)
from shared.domain.errors import ConfigurationError, ConflictError, NotFoundError
from shared.domain.jobs import EventType, Job
from shared.observability.redaction import REDACTED
from shared.observability.tracing import log_fields, span

if TYPE_CHECKING:
    from shared.bootstrap import Services

log = logging.getLogger(__name__)

#: Name endings of encrypted files; the plaintext's name (for detection and output names) drops them.
PGP_SUFFIXES = (".pgp", ".gpg", ".asc")
STAGING = "staging"


def plain_name(name: str) -> str:
    """`orders.csv.pgp` -> `orders.csv` (names without a PGP ending are kept)."""
    lower = name.lower()
    for suffix in PGP_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _secret(services: Services, name: str | None, *, fresh: bool = False) -> str | None:
    if not name:
        return None
    if fresh:
        refresh = getattr(services.secrets, "refresh", None)
        if callable(refresh):
            return str(refresh(name))
    try:
        return services.secrets.get(name)
    except NotFoundError as exc:
        raise ConfigurationError(str(exc)) from exc


def _cfg(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


@dataclass(frozen=True)
class Plaintext:
    """A decrypted landed file: where it is (inside the keyring directory), its name and size."""

    result: DecryptResult
    name: str

    @property
    def size(self) -> int:
        return self.result.size

    def chunks(self) -> Iterator[bytes]:
        return file_chunks(self.result.plaintext)

    def event(self) -> dict[str, Any]:
        r = self.result
        return {"step": "decrypt", "decrypted_with": r.decrypted_with, "encrypted_to": list(r.encrypted_to),
                "signature": r.signature, "signer": r.signer, "plain_name": self.name,
                "counts": {"plain_bytes": r.size}}


@contextmanager
def decrypted(services: Services, job: Job, ref: Mapping[str, Any], pgp: Any) -> Iterator[Plaintext]:
    """The landed blob decrypted into a temporary file for the duration of the block (then removed)."""
    attrs = {"wharf.job_id": job.job_id, "wharf.partner": job.partner, "wharf.pgp.verify": _cfg(pgp, "verify")}
    with span("pgp.decrypt", attrs) as s, Keyring() as ring:
        result = _decrypt(services, ring, ref, pgp)
        s.set_attribute("wharf.pgp.decrypted_with", result.decrypted_with)
        s.set_attribute("wharf.pgp.signer", result.signer)
        s.set_attribute("wharf.pgp.signature", result.signature)
        s.set_attribute("file.size", result.size)
        log.info("decrypted", extra=log_fields(job.job_id, partner=job.partner, key=result.decrypted_with,
                                               signer=result.signer, signature=result.signature))
        try:
            yield Plaintext(result, plain_name(str(ref["file_name"])))
        finally:
            result.plaintext.unlink(missing_ok=True)


def _decrypt(services: Services, ring: Keyring, ref: Mapping[str, Any], pgp: Any) -> DecryptResult:
    key = _secret(services, _cfg(pgp, "private_key_secret"))
    signers = _secret(services, _cfg(pgp, "signer_keys_secret")) if _cfg(pgp, "verify", "required") != "off" \
        else None
    if key is None:
        raise ConfigurationError("pgp.decrypt needs private_key_secret")
    for fresh in (False, True):
        passphrase = _secret(services, _cfg(pgp, "passphrase_secret"), fresh=fresh)
        try:
            return decrypt_to_file(services.blobs.open_read(ref["container"], ref["blob_path"]), ring,
                                   private_key=key, passphrase=passphrase, signer_keys=signers,
                                   verify=_cfg(pgp, "verify", "required"))
        except PgpPassphraseError:
            if fresh or not _cfg(pgp, "passphrase_secret"):
                raise
            log.info("pgp passphrase refused; reading the secret again (rotation)",
                     extra=log_fields(str(ref.get("job_id", "")), secret=_cfg(pgp, "passphrase_secret")))
    raise AssertionError("unreachable")  # pragma: no cover


def record_decrypt(services: Services, job: Job, plaintext: Plaintext) -> None:
    if "decrypt" not in job.steps_completed:
        services.jobs.append(job.job_id, EventType.STEP_COMPLETED, plaintext.event())
        r = plaintext.result
        services.jobs.log(job.job_id, "INFO", f"decrypted with key {r.decrypted_with}; signature {r.signature}"
                                              + (f" by {r.signer}" if r.signer else ""))


def pgp_failure_reason(exc: PgpError) -> str:
    return f"pgp {exc.kind.replace('_', ' ')}: {exc}"


# --- outbound ----------------------------------------------------------------------------------------------

def encrypted_output(services: Services, job: Job, ref: Mapping[str, Any], output: Mapping[str, Any],
                     pgp: Any) -> dict[str, Any]:
    """The output encrypted for a destination: a staging blob (reused by a retry of the same delivery) and
    the `output` mapping pointing at it, for the delivery to upload in place of the plaintext."""
    pgp = _unredacted(services, job, ref, pgp)
    index = int(ref.get("index", 0))
    name = f"{output['name']}{_cfg(pgp, 'suffix', '.pgp') or ''}"
    path = f"{job.partner}/{job.job_id}/pgp/{index}/{name}"
    attrs = {"wharf.job_id": job.job_id, "wharf.partner": job.partner, "wharf.destination.index": index,
             "wharf.pgp.armor": bool(_cfg(pgp, "armor", False))}
    with span("pgp.encrypt", attrs) as s:
        try:
            info = services.blobs.get_info(STAGING, path)
        except NotFoundError:
            info = None
        if info is not None and info.metadata.get("job_id") == job.job_id \
                and info.metadata.get("source_sha256") == str(output.get("sha256", "")):
            s.set_attribute("wharf.pgp.reused", True)
            recipients = info.metadata.get("recipients", "")
            signer = info.metadata.get("signer", "")
        else:
            with Keyring() as ring:
                result = _encrypt(services, ring, output, pgp)
                meta = {"job_id": job.job_id, "source_sha256": str(output.get("sha256", "")),
                        "recipients": " ".join(result.recipients), "signer": result.signer}
                info = services.blobs.upload_stream(STAGING, path, file_chunks(result.ciphertext), metadata=meta,
                                                    content_type="application/pgp-encrypted")
                recipients, signer = meta["recipients"], result.signer
        s.set_attribute("wharf.pgp.recipients", recipients)
        s.set_attribute("wharf.pgp.signer", signer)
        s.set_attribute("file.size", info.size)
        log.info("encrypted for delivery", extra=log_fields(job.job_id, partner=job.partner, index=index,
                                                            recipients=recipients, signer=signer))
    return {**output, "container": STAGING, "path": path, "name": name, "bytes": info.size,
            "sha256": info.sha256, "pgp": {"recipients": recipients.split(), "signer": signer,
                                           "plain_sha256": str(output.get("sha256", ""))}}


_SECRET_FIELDS = ("encrypt_to_secret", "sign_with_secret", "sign_passphrase_secret")


def _unredacted(services: Services, job: Job, ref: Mapping[str, Any], pgp: Any) -> Any:
    """The `pgp` block with its secret names: a planned destination crosses the orchestration history as an
    activity result (plan_routes), where the values of fields named like secrets (`*_secret`) become `***`
    (observability/redaction.redact_data). Then the block is the catalogue's destination at the same route and
    index; without one there, a configuration error (never a look-up of the secret `***`)."""
    if not any(_cfg(pgp, k) == REDACTED for k in _SECRET_FIELDS):
        return pgp
    route, index = str(ref.get("route", "")), int(ref.get("index", 0))
    try:
        partner = services.catalog.get(job.partner)
    except NotFoundError:
        partner = None
    for r in getattr(partner, "routes", None) or []:
        if r.name == route and index < len(r.destinations):
            found = getattr(r.destinations[index], "pgp", None)
            if found is not None:
                return found
    raise ConfigurationError(f"route '{route}' destination {index}: its pgp block's secret names are not in the "
                             "catalogue any more (the route changed since the job was planned)")


def _encrypt(services: Services, ring: Keyring, output: Mapping[str, Any], pgp: Any) -> Any:
    recipients = _secret(services, _cfg(pgp, "encrypt_to_secret"))
    if recipients is None:
        raise ConfigurationError("pgp needs encrypt_to_secret")
    signer = _secret(services, _cfg(pgp, "sign_with_secret"))
    for fresh in (False, True):
        passphrase = _secret(services, _cfg(pgp, "sign_passphrase_secret"), fresh=fresh)
        try:
            return encrypt_to_file(services.blobs.open_read(output["container"], output["path"]), ring,
                                   recipient_keys=recipients, signer_key=signer, passphrase=passphrase,
                                   armor=bool(_cfg(pgp, "armor", False)), compress=bool(_cfg(pgp, "compress", True)))
        except PgpPassphraseError:
            if fresh or not _cfg(pgp, "sign_passphrase_secret"):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


# --- outbound by email -------------------------------------------------------------------------------------

#: The content type of an encrypted attachment (binary or armoured; RFC 3156's type for OpenPGP data).
PGP_CONTENT_TYPE = "application/pgp-encrypted"


def deliver_encrypted_email(deliver: Callable[..., dict[str, Any]], services: Services, job: Job,
                            ref: Mapping[str, Any], output: Mapping[str, Any], dest: Mapping[str, Any],
                            **options: Any) -> dict[str, Any]:
    """An email destination with `pgp`: `deliver` (services/deliver_email.deliver_email) attaches the output
    encrypted (and signed) instead of the plaintext, under its name with the suffix.

    The ciphertext is the staging blob of `encrypted_output`, streamed to Graph like any staged output (never
    whole in memory) and reused by every retry of the same delivery: the Deliveries record, its
    internetMessageId and its sha256 (the ciphertext's) stay those of the first attempt, so the Sent Items
    lookup and the read-back hash check hold as for a plaintext attachment. The result (the file.routed event)
    carries `pgp: {recipients, signer, plain_sha256}` and the record's `verified` names the same fingerprints;
    never key material."""
    encrypted = {**encrypted_output(services, job, ref, output, dest["pgp"]), "content_type": PGP_CONTENT_TYPE}
    info = encrypted["pgp"]
    result = deliver(services, job, ref, encrypted, {**dest, "pgp": None}, **options)
    note = _fingerprints_note(info)
    try:
        record = services.deliveries.get(job.job_id, int(ref.get("index", 0)))
        if note not in record.verified:
            services.deliveries.update(replace(record, verified=f"{record.verified}; {note}"[:400]))
    except (ConflictError, NotFoundError):
        log.warning("pgp fingerprints not recorded on the delivery: the record moved",
                    extra=log_fields(job.job_id, partner=job.partner, index=int(ref.get("index", 0))))
    if not result.get("already_sent"):
        services.jobs.log(job.job_id, "INFO", f"emailed attachment {encrypted['name']}: {note}")
    return {**result, "pgp": info}


def _fingerprints_note(info: Mapping[str, Any]) -> str:
    recipients = ", ".join(info.get("recipients") or []) or "?"
    signer = info.get("signer") or ""
    return f"pgp encrypted to {recipients}" + (f", signed by {signer}" if signer else ", unsigned")

