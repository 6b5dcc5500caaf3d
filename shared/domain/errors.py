"""Domain errors: narrow types, always chained (`raise X(...) from exc`)."""

from __future__ import annotations


class WharfError(Exception):
    """Base of every error Wharf raises on purpose."""


class NotFoundError(WharfError):
    """A thing that `get_` was asked for does not exist."""


class ConflictError(WharfError):
    """An optimistic-concurrency check failed (ETag mismatch, entity already exists)."""


class PermanentError(WharfError):
    """Retrying cannot help: the catalogue, the input or the target must change first. A processing activity
    that raises one fails its step at once instead of spending the step's Durable retries on it."""


class ConfigurationError(PermanentError):
    """Settings or catalogue are wrong; the message says what to change."""


class DependencyUnavailableError(WharfError):
    """A dependency (storage, a partner server, Graph) could not be reached."""

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} unavailable: {reason}")
        self.dependency = dependency
        self.reason = reason
