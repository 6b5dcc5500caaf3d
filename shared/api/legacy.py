"""The routes before v1 (/api/jobs, /api/jobs/{id}, ...): kept as deprecated aliases, their parameters checked
with the v1 models (a bad `limit` is a 400 problem, not a 500)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.api.handlers import _parse
from shared.api.http import ApiResponse, json_body
from shared.api.models import LegacyJobsQuery
from shared.api.problems import PROBLEM_TYPE, Problem
from shared.domain.job_index import JobQuery
from shared.services import jobs_view

if TYPE_CHECKING:
    from shared.bootstrap import Services

SUNSET_LINK = '</api/v1/openapi.json>; rel="successor-version"'


def deprecation_headers(successor: str) -> dict[str, str]:
    """RFC 9745 `Deprecation` (a date: deprecated since v1) and a link to the v1 route."""
    return {"Deprecation": "@1798761600", "Link": f'<{successor}>; rel="successor-version"'}


def legacy_jobs(services: Services, query: Mapping[str, str]) -> ApiResponse:
    try:
        q = _parse(LegacyJobsQuery, query)
    except Problem as p:
        return ApiResponse(p.status, p.to_json("/api/jobs"), PROBLEM_TYPE,
                           deprecation_headers("/api/v1/jobs"))
    assert isinstance(q, LegacyJobsQuery)
    # The JobsByTime index, newest first, as v1 reads it (never a scan of the job table); the default window
    # (DEFAULT_WINDOW, 400 days) bounds how far back it goes, and there is no next page: v1 has continuations.
    newest = JobQuery(partner=q.partner, status=q.status.value if q.status else None)
    body, _ = jobs_view.page_jobs(services.jobs, newest, limit=q.limit)
    return json_body(body, 200, deprecation_headers("/api/v1/jobs"))
