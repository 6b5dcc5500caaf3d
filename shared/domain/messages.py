"""Queue messages between Wharf's functions: small references, never file bytes (a message is <= 64 KiB).

A message is untrusted input: anyone who can write to the queue can write anything. Every field is checked
here, so a consumer never reads a blob outside the containers Wharf lands files into, never follows `..`,
and never acts for a partner id that could not be in the catalogue.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.jobs import utcnow

Channel = Literal["sftp", "mail"]

#: The containers a file-landed message may name: where the channels land files (SFTP, mail and drop copies
#: in inbound/) and where a refused drop is kept for a replay (quarantine/). Never drop/ (mutable, the
#: partner's own), processed/, outbound/ or any container a forged message might point at.
LANDING_CONTAINERS = frozenset({"inbound", "quarantine"})

#: The catalogue's rule for partner ids (shared/catalog/common.py): 2-40 lowercase letters, digits, dashes.
PARTNER_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])$"
#: Job and transfer ids (`job-<time>-<hex>`, `tr-...`) and anything else used as an orchestration instance id.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_MAX_SEGMENT_BYTES = 255
_MAX_PATH_CHARS = 1024  # a blob name's limit


def _unsafe_char(text: str) -> str | None:
    for ch in text:
        if ch == "\\":
            return "a backslash"
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            return f"the control or format character U+{ord(ch):04X}"
    return None


def _segment_problem(segment: str) -> str | None:
    if segment in ("", ".", ".."):
        return "an empty, '.' or '..' segment"
    if segment != segment.strip(" "):
        return "a segment that starts or ends with a space"
    if len(segment.encode("utf-8", "surrogatepass")) > _MAX_SEGMENT_BYTES:
        return f"a segment longer than {_MAX_SEGMENT_BYTES} bytes"
    return _unsafe_char(segment)


def _safe_file_name(value: str) -> str:
    if "/" in value:
        raise ValueError("must be one name, without '/'")
    problem = _segment_problem(value)
    if problem:
        raise ValueError(f"must be a safe file name, not one with {problem}")
    return value


def _safe_blob_path(value: str) -> str:
    if len(value) > _MAX_PATH_CHARS:
        raise ValueError(f"must be at most {_MAX_PATH_CHARS} characters")
    if value.startswith("/"):
        raise ValueError("must be relative to the container (no leading '/')")
    for segment in value.split("/"):
        problem = _segment_problem(segment)
        if problem:
            raise ValueError(f"must be a safe path inside the container, not one with {problem}")
    return value


def _landing_container(value: str) -> str:
    if value not in LANDING_CONTAINERS:
        raise ValueError(f"must be a container Wharf lands files into ({', '.join(sorted(LANDING_CONTAINERS))})")
    return value


PartnerId = Annotated[str, StringConstraints(pattern=PARTNER_ID_PATTERN)]
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
OptionalIdentifier = Annotated[str, StringConstraints(pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,127})?$")]
FileName = Annotated[str, AfterValidator(_safe_file_name)]
BlobPath = Annotated[str, AfterValidator(_safe_blob_path)]
LandingContainer = Annotated[str, AfterValidator(_landing_container)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-fA-F]{64})?$")]
TraceHeader = Annotated[str, StringConstraints(max_length=512)]


class _Message(BaseModel):
    # Transport fields (traceparent, tracestate) are added by the queue adapter; unknown keys are ignored
    # so that an older worker reads a newer message.
    model_config = ConfigDict(extra="ignore", frozen=True)

    def to_message(self) -> dict[str, Any]:
        """JSON-ready dict for `MessageQueue.send` (None fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


class PollRequest(_Message):
    """`poll-requests` queue: poll one partner's source now (from the timer, the HTTP API or the CLI)."""

    partner: PartnerId
    channel: Channel = "sftp"
    requested_by: str = Field(default="timer", max_length=200)
    requested_at: datetime = Field(default_factory=utcnow)


class FileLanded(_Message):
    """`file-landed` queue: a whole file is in Blob Storage and its job exists; processing may start.

    Delivered at least once; the job id is the idempotency key (process_file's instance id).
    `blob_path` is relative to `container` (one of LANDING_CONTAINERS); `file_name` is the sanitised name
    (one path segment, safe in paths and templates). The references are required; the rest is informative.
    """

    job_id: Identifier
    partner: PartnerId
    container: LandingContainer
    blob_path: BlobPath
    file_name: FileName
    bytes: int = Field(default=0, ge=0)
    sha256: Sha256 = ""
    transfer_id: OptionalIdentifier = ""
    source: str = ""  # informative (where the file came from, as received): never used as a path
    #: Set by a resume (`wharf jobs resume`): an orchestration of this job created before this time is terminated
    #: and started again (a hung one included); one created after it is the restart already.
    restart_before: datetime | None = None
    traceparent: TraceHeader | None = None


class RedeliveryRequest(_Message):
    """`redeliveries` queue: send one redelivery record (already PENDING in Deliveries) of a job.

    Delivered at least once: the (job, index) record is the idempotency key (a SENT record is not sent again,
    a SENDING one is taken over where its step says). Written by `wharf redeliver`, the API and the sweep."""

    job_id: Identifier
    index: int = Field(ge=0, le=100_000)
    requested_by: str = Field(default="", max_length=200)
    requested_at: datetime = Field(default_factory=utcnow)
    traceparent: TraceHeader | None = None


#: At most this many files in one FileLandedBatch (a recorded batch is at most 100 files).
MAX_BATCH_FILES = 100


class FileLandedBatch(_Message):
    """`file-landed` queue: the files of one recorded batch, in one message instead of one per file.

    Each entry is a FileLanded (its own job, file and `traceparent`); the intake validates and starts each on
    its own, so a bad entry is dead-lettered alone and the others go on. Only the list's shape is checked here
    (objects, 1 to MAX_BATCH_FILES): per-entry validation is `FileLanded`'s."""

    files: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_FILES)

    @classmethod
    def of(cls, messages: list[FileLanded]) -> FileLandedBatch:
        return cls(files=[m.to_message() for m in messages])


def is_batch(data: dict[str, Any]) -> bool:
    """Whether a decoded file-landed message is a FileLandedBatch (else a single FileLanded)."""
    return "files" in data and "job_id" not in data


def landed_entries(data: dict[str, Any]) -> list[Any]:
    """The per-file entries of a decoded file-landed message: a batch's `files`, or the message itself."""
    return list(data.get("files") or []) if is_batch(data) else [data]


def looks_like_id(value: object) -> bool:
    """Whether `value` could be a job id (a message's job id is only trusted, e.g. looked up, if so)."""
    return isinstance(value, str) and re.fullmatch(ID_PATTERN, value) is not None
