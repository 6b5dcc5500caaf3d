"""API v1 through devhost and the real host route (v1/{*path}): auth, problems, paging, the old routes'
deprecation headers and the regression GET /api/jobs?limit=abc (was a 500)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from email.message import Message

import pytest

from tests.e2e.conftest import E2E, FUNCTION_KEY

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]


def _get(e2e: E2E, path: str, *, key: bool = True) -> tuple[int, Message, bytes]:
    # The headers as received: names are case-insensitive (uvicorn, which serves HTTP streams, sends them lower-case).
    req = urllib.request.Request(e2e.host.http_url + path)  # noqa: S310 - 127.0.0.1 only
    if key:
        req.add_header("x-functions-key", FUNCTION_KEY)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_legacy_limit_abc_is_a_400_problem_with_a_deprecation_header(e2e: E2E) -> None:
    code, headers, body = _get(e2e, "/jobs?limit=abc")
    assert code == 400 and headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(body)["parameter"] == "limit"
    assert "Deprecation" in headers


def test_v1_jobs_needs_credentials_and_pages(e2e: E2E) -> None:
    partner = f"v{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(f"partners:\n  - {{id: {partner}, name: {partner}}}\n")
    from shared.domain.ids import new_job_id
    from shared.domain.jobs import EventType

    ids = []
    for i in range(3):
        job_id = new_job_id()
        e2e.services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "job_type": "UPLOAD",
                                                             "source": "e2e", "file_name": f"{i}.csv"})
        ids.append(job_id)
    code, headers, body = _get(e2e, "/v1/jobs", key=False)
    assert code == 401 and headers["Content-Type"].startswith("application/problem+json")
    code, _, body = _get(e2e, f"/v1/jobs?partner={partner}&limit=2")
    page = json.loads(body)
    assert code == 200 and [j["job_id"] for j in page["items"]] == [ids[2], ids[1]]
    code, _, body = _get(e2e, f"/v1/jobs?partner={partner}&limit=2&continuation={page['continuation']}")
    assert [j["job_id"] for j in json.loads(body)["items"]] == [ids[0]]
    code, _, body = _get(e2e, "/v1/jobs?limit=abc")
    assert code == 400 and json.loads(body)["parameter"] == "limit"
    code, _, body = _get(e2e, f"/v1/partners/{partner}")
    assert code == 200 and json.loads(body)["jobs_24h"] == {"PENDING": 3}
    code, _, body = _get(e2e, "/v1/openapi.json", key=False)
    assert code == 200 and json.loads(body)["openapi"] == "3.1.0"
