"""The console through dispatch: pages render, readers get no operator buttons and are refused anyway, the
development sign-in is off unless enabled, Easy Auth principals are read from the platform header, CSRF holds."""

from __future__ import annotations

import base64
import json
import re

from shared.api.auth import DEV_COOKIE
from shared.api.http import ApiResponse
from tests.api_world import ApiWorld

BASE = "/console"


def _signin(w: ApiWorld, role: str) -> str:
    r = w.call("POST", f"{BASE}/signin", body=f"name=alice&role={role}".encode(), key=False,
               headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 303
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return cookie.split(";")[0]


def _page(w: ApiWorld, path: str, cookie: str, query: dict[str, str] | None = None) -> tuple[ApiResponse, str]:
    r = w.call("GET", path, query, key=False, headers={"cookie": cookie})
    return r, r.read().decode()


def test_reader_sees_jobs_but_no_operator_buttons_and_is_refused() -> None:
    w = ApiWorld(WHARF_CONSOLE_DEV_SIGNIN=True)
    job_id = w.job(status="FAILED")
    cookie = _signin(w, "reader")
    r, html = _page(w, f"{BASE}/jobs/{job_id}", cookie)
    assert r.status == 200 and r.content_type.startswith("text/html")
    assert "DEVELOPMENT SIGN-IN" in html and job_id in html
    assert 'id="replay"' not in html and "Poll now" not in _page(w, BASE, cookie)[1]
    csrf = re.search(r'name="csrf" value="([^"]*)"', html)
    r = w.call("POST", f"{BASE}/jobs/{job_id}/replay", key=False, body=f"csrf={csrf[1] if csrf else ''}".encode(),
               headers={"cookie": cookie, "content-type": "application/x-www-form-urlencoded"})
    assert r.status == 403 and "Wharf.Operate" in r.read().decode()


def test_operator_replays_with_the_csrf_token_only() -> None:
    w = ApiWorld(WHARF_CONSOLE_DEV_SIGNIN=True)
    job_id = w.job(status="FAILED")
    w.blobs.upload_stream("inbound", "acme/a.csv", [b"x"])
    w.jobs.append(job_id, "file.landed", {"blob_path": "inbound/acme/a.csv", "bytes": 1, "file_name": "a.csv"})
    cookie = _signin(w, "operator")
    html = _page(w, f"{BASE}/jobs/{job_id}", cookie)[1]
    assert 'id="replay"' in html
    token = re.search(r'name="csrf" value="([^"]+)"', html)
    assert token
    form = {"cookie": cookie, "content-type": "application/x-www-form-urlencoded"}
    assert w.call("POST", f"{BASE}/jobs/{job_id}/replay", key=False, body=b"csrf=forged", headers=form).status == 403
    r = w.call("POST", f"{BASE}/jobs/{job_id}/replay", key=False, body=f"csrf={token[1]}".encode(), headers=form)
    assert r.status == 303 and r.headers["Location"].startswith(f"/api/v1{BASE}/jobs/job-")
    assert w.jobs.get_job(job_id).replayed_by in r.headers["Location"]


def test_dev_signin_is_off_unless_enabled_and_a_forged_cookie_is_nobody() -> None:
    w = ApiWorld()
    r = w.call("POST", f"{BASE}/signin", body=b"role=operator", key=False)
    assert r.status == 404
    r, html = _page(w, BASE, f"{DEV_COOKIE}=operator|mallory|0000")
    assert r.status == 401 and "Sign in with Entra ID" in html
    on = ApiWorld(WHARF_CONSOLE_DEV_SIGNIN=True)
    assert _page(on, BASE, f"{DEV_COOKIE}=operator|mallory|0000")[0].status == 401


def _principal(roles: list[str]) -> str:
    claims = [{"typ": "name", "val": "Olga Operator"}] + [{"typ": "roles", "val": r} for r in roles]
    return base64.b64encode(json.dumps({"auth_typ": "aad", "name_typ": "name", "role_typ": "roles",
                                        "claims": claims}).encode()).decode()


def test_easy_auth_principal_when_enabled() -> None:
    w = ApiWorld(WHARF_EASYAUTH_ENABLED=True)
    hdr = {"x-ms-client-principal": _principal(["Wharf.Read"]), "x-ms-client-principal-idp": "aad"}
    r, _ = _page(w, BASE, "")
    assert r.status == 401
    r = w.call("GET", BASE, key=False, headers=hdr)
    assert r.status == 200 and "Olga Operator" in r.read().decode()
    assert w.call("GET", BASE, key=False, headers={**hdr, "x-ms-client-principal-idp": "github"}).status == 401
    assert w.call("GET", BASE, key=False, headers={**hdr, "x-ms-client-principal": "!!"}).status == 401
    off = ApiWorld()
    assert off.call("GET", BASE, key=False, headers=hdr).status == 401  # not trusted unless Easy Auth is on


def test_pages_render_for_an_operator() -> None:
    w = ApiWorld(WHARF_CONSOLE_DEV_SIGNIN=True)
    for i in range(3):
        w.job(file_name=f"f{i}.csv")
    cookie = _signin(w, "operator")
    for path, needle in ((BASE, "Poll now"), (f"{BASE}/jobs", "f2.csv"), (f"{BASE}/partners/acme/ledger", "Ledger"),
                         (f"{BASE}/upload", "uploads?name=")):
        r, html = _page(w, path, cookie)
        assert r.status == 200 and needle in html, path
    r, html = _page(w, f"{BASE}/jobs", cookie, {"limit": "2", "refresh": "10"})
    assert 'http-equiv="refresh" content="10"' in html and 'id="next"' in html
    assert _page(w, f"{BASE}/jobs", cookie, {"limit": "x"})[0].status == 400
    assert w.call("GET", "/docs", key=False).status == 200
    asset = w.call("GET", "/docs/assets/swagger-ui-bundle.js", key=False)
    assert asset.status == 200 and b"SwaggerUIBundle" in asset.read()
    assert w.call("GET", "/docs/assets/..%2Fcore.py", key=False).status == 404


def test_partners_page_shows_the_last_poll() -> None:
    from datetime import UTC, datetime

    from shared.domain.ledger import LastPoll

    w = ApiWorld(WHARF_CONSOLE_DEV_SIGNIN=True)
    cookie = _signin(w, "reader")
    assert "sftp never polled" in _page(w, BASE, cookie)[1]
    at = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
    w.services.last_polls.record(LastPoll(channel="sftp", partner="acme", status="partial", started_at=at,
                                          finished_at=at, landed=2, failed=1, files=("/in/a.csv", "/in/b.csv"),
                                          error=""))
    html = _page(w, BASE, cookie)[1]
    cell = re.search(r'<td class="last-poll">(.*?)</td>', html, re.S)
    assert cell and "partial" in cell[1] and "2026-03-01 12:30:05Z" in cell[1] and "2 landed" in cell[1]
    assert "1 failed" in cell[1] and "/in/a.csv, /in/b.csv" in cell[1]
