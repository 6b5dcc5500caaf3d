"""GET /api/health (anonymous, cached status only), /api/health/details (function key), and the poll route's
answers to an unknown partner or channel, through devhost."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import E2E

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]

BROKEN = """partners:
  - id: broken
    name: ${WHARF_E2E_UNSET_NAME_VARIABLE}
"""


def partners_yaml(*ids: str) -> str:
    return "partners:\n" + "".join(f"  - {{id: {pid}, name: {pid}}}\n" for pid in ids)


def test_anonymous_health_is_a_cached_status_and_details_need_a_key(e2e: E2E) -> None:
    e2e.catalog_path.write_text(partners_yaml(f"h{uuid.uuid4().hex[:8]}"))
    assert e2e.request("GET", "/health/details", key=False)[0] == 401
    code, details = e2e.request("GET", "/health/details")
    assert code == 200 and details["status"] == "ok"
    assert {k: v["state"] for k, v in details["dependencies"].items()} == {
        "storage.blob": "ok", "storage.queue": "ok", "storage.table": "ok", "catalog": "ok"}
    assert e2e.request("GET", "/health", key=False) == (200, {"status": "ok"})

    e2e.catalog_path.write_text(BROKEN)
    code, details = e2e.request("GET", "/health/details")  # a keyed caller sees the loader's own text, now
    assert code == 200 and details["status"] == "degraded"
    assert "WHARF_E2E_UNSET_NAME_VARIABLE" in details["dependencies"]["catalog"]["detail"]
    code, body = e2e.request("GET", "/health", key=False)
    assert (code, body) == (200, {"status": "degraded"})  # no path, line, partner id or variable name

    e2e.catalog_path.write_text(partners_yaml("healthy"))
    # Anonymous callers get the report of the last few seconds: one probe round per few seconds, whatever
    # the traffic. It turns ok once that is older than the cache time.
    assert e2e.request("GET", "/health", key=False) == (200, {"status": "degraded"})
    e2e.wait_for("the cached health to expire", lambda: e2e.request("GET", "/health", key=False)[1]
                 == {"status": "ok"}, timeout=15)


def test_an_unknown_partner_is_404_without_the_list_of_partners(e2e: E2E) -> None:
    known = [f"k{uuid.uuid4().hex[:8]}" for _ in range(3)]
    e2e.catalog_path.write_text(partners_yaml(*known))
    code, body = e2e.request("POST", "/partners/nobody-here/poll")
    assert code == 404
    assert body == {"error": "partner 'nobody-here' is not in the catalogue"}
    assert not any(pid in str(body) for pid in known)


def test_an_unknown_channel_is_400_naming_the_valid_ones(e2e: E2E) -> None:
    partner = f"c{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(partners_yaml(partner))
    code, body = e2e.request("POST", f"/partners/{partner}/poll?channel=ftp")
    assert (code, body) == (400, {"error": "unknown channel 'ftp'; use one of: sftp, mail"})
    assert e2e.request("POST", "/partners/nobody-here/poll?channel=carrier-pigeon")[0] == 400
    # A channel that exists but that this partner has no source for is still a conflict with the catalogue.
    code, body = e2e.request("POST", f"/partners/{partner}/poll?channel=mail")
    assert code == 409 and "has no mail source" in body["error"]
