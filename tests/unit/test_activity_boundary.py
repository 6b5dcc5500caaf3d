"""The activity boundary: permanent errors become a result the orchestrator fails on at once (no retries)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.catalog.errors import PartnerNotFoundError
from shared.domain.errors import ConfigurationError, DependencyUnavailableError, NotFoundError
from shared.services.activity_boundary import PERMANENT, fails_fast
from shared.services.process import BlobExistsError, DeliveryNotConfiguredError
from shared.workflows import PERMANENT as WORKFLOW_PERMANENT


def _raising(exc: Exception) -> Any:
    @fails_fast
    def activity(ref: dict[str, Any]) -> dict[str, Any]:
        raise exc

    return activity


@pytest.mark.parametrize("exc", [
    BlobExistsError("processed/acme/a.jsonl holds job job-0's output"),
    DeliveryNotConfiguredError("email delivery is not configured"),
    ConfigurationError("partner acme: no rule"),
    PartnerNotFoundError("acme"),
])
def test_permanent_errors_are_returned_not_raised(exc: Exception) -> None:
    result = _raising(exc)({"job_id": "job-1"})
    assert set(result) == {PERMANENT}
    assert result[PERMANENT].startswith(type(exc).__name__ + ": ")


@pytest.mark.parametrize("exc", [DependencyUnavailableError("blob storage", "refused"), NotFoundError("job-1"),
                                 OSError("reset")])
def test_other_errors_still_raise_for_the_retry_policy(exc: Exception) -> None:
    with pytest.raises(type(exc)):
        _raising(exc)({"job_id": "job-1"})


def test_a_permanent_reason_is_redacted() -> None:
    from shared.observability.redaction import register_secret

    register_secret("hunter2-very-secret-value")
    result = _raising(ConfigurationError("login with hunter2-very-secret-value refused"))({"job_id": "job-1"})
    assert "hunter2-very-secret-value" not in result[PERMANENT]


def test_the_orchestrator_reads_the_same_key() -> None:
    assert PERMANENT == WORKFLOW_PERMANENT


def test_a_successful_result_passes_through() -> None:
    @fails_fast
    def activity(ref: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    assert activity({}) == {"ok": True}
