"""The web console (/api/v1/console): server-rendered pages (jinja2, no build step, no CDN) over the same
handlers as the JSON API; operator buttons only for Wharf.Operate (the routes refuse others anyway). Forms post
to console routes that answer with a redirect; cookie-borne sessions carry a CSRF token."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from shared.api import handlers as h
from shared.api import models as m
from shared.api.auth import DEV_COOKIE, OPERATE, READ, Principal, csrf_token, dev_cookie
from shared.api.config import ApiSettings
from shared.api.http import ApiRequest, ApiResponse
from shared.api.problems import Problem
from shared.api.router import PREFIX, route
from shared.domain.jobs import JobStatus
from shared.observability.tracing import span

if TYPE_CHECKING:
    from shared.bootstrap import Services

BASE = PREFIX + "/console"
_TEMPLATES = Path(__file__).with_name("templates")


@cache
def _env() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape  # on first render, not at cold start

    return Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True)


def render(template: str, cfg: ApiSettings, principal: Principal | None, status: int = 200,
           **context: Any) -> ApiResponse:
    with span("console.render", {"wharf.template": template}):
        html = _env().get_template(template).render(
            base=BASE, principal=principal, dev=cfg.dev_signin, operator=bool(principal and principal.may(OPERATE)),
            roles=", ".join(sorted(principal.roles)) if principal else "",
            csrf=csrf_token(cfg, principal) if principal else "", **context)
    return ApiResponse(status, html.encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store"})


def redirect(location: str, headers: dict[str, str] | None = None) -> ApiResponse:
    return ApiResponse(303, b"", "text/html", {"Location": location, **(headers or {})})


def form(req: ApiRequest) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}


# --- pages --------------------------------------------------------------------------------------------


@route("GET", "/console", role=READ, summary="Console: partners overview", media="text/html")
def console_partners(services: Services, cfg: ApiSettings, principal: Principal, req: ApiRequest, **_: Any) -> Any:
    partners = [h.get_partner(services, p.id) for p in services.catalog.partners]
    return render("partners.html", cfg, principal, title="Partners", partners=partners,
                  message=req.query.get("message", ""))


@route("GET", "/console/jobs", role=READ, summary="Console: jobs list (filters, auto-refresh)", media="text/html",
       query=m.ConsoleJobsQuery)
def console_jobs(services: Services, cfg: ApiSettings, principal: Principal, q: m.ConsoleJobsQuery,
                 **_: Any) -> Any:
    api_q = m.JobsQuery(**q.model_dump(exclude={"refresh"}))
    page = h.list_jobs(services, api_q)
    next_url = ""
    if page.continuation:
        params = {k: v for k, v in {**q.model_dump(mode="json", exclude_none=True),
                                    "continuation": page.continuation}.items() if v not in ("", None)}
        next_url = f"{BASE}/jobs?{urlencode(params)}"
    return render("jobs.html", cfg, principal, title="Jobs", page=page, q=api_q, next_url=next_url,
                  statuses=[s.value for s in JobStatus], refresh=q.refresh)


@route("GET", "/console/jobs/{job_id}", role=READ, summary="Console: one job", media="text/html")
def console_job(services: Services, cfg: ApiSettings, principal: Principal, job_id: str, **_: Any) -> Any:
    return render("job.html", cfg, principal, title=f"Job {job_id}", d=h.job_detail(services, job_id))


@route("POST", "/console/jobs/{job_id}/replay", role=OPERATE, summary="Console: replay a job (redirects to it)",
       media="text/html", body="application/x-www-form-urlencoded")
def console_replay(services: Services, principal: Principal, job_id: str, **kw: Any) -> Any:
    result = h.replay_job(services, job_id, principal)
    return redirect(f"{BASE}/jobs/{result.job_id}")


@route("POST", "/console/jobs/{job_id}/resume", role=OPERATE, summary="Console: resume a stalled job",
       media="text/html", body="application/x-www-form-urlencoded")
def console_resume(services: Services, principal: Principal, job_id: str, **_: Any) -> Any:
    h.resume_job(services, job_id, principal)
    return redirect(f"{BASE}/jobs/{job_id}")


@route("POST", "/console/partners/{partner}/poll", role=OPERATE, summary="Console: poll a partner now",
       media="text/html", body="application/x-www-form-urlencoded")
def console_poll(services: Services, principal: Principal, partner: str, **_: Any) -> Any:
    result = h.poll_partner(services, partner, m.PollQuery(), principal)
    return redirect(f"{BASE}/?{urlencode({'message': f'poll of {partner} ({result.channel}) queued'})}")


@route("GET", "/console/partners/{partner}/ledger", role=READ, summary="Console: a partner's ledger",
       media="text/html", query=m.LedgerQuery)
def console_ledger(services: Services, cfg: ApiSettings, principal: Principal, partner: str, q: m.LedgerQuery,
                   **_: Any) -> Any:
    page = h.list_ledger(services, partner, q)
    return render("ledger.html", cfg, principal, title=f"Ledger {partner}", partner=partner, entries=page.items)


@route("POST", "/console/partners/{partner}/ledger/{entry}/reset", role=OPERATE,
       summary="Console: take a ledger entry again", media="text/html", body="application/x-www-form-urlencoded")
def console_ledger_reset(services: Services, principal: Principal, partner: str, entry: str, **_: Any) -> Any:
    h.reset_ledger(services, partner, entry, principal)
    return redirect(f"{BASE}/partners/{partner}/ledger")


@route("GET", "/console/upload", role=READ, summary="Console: upload form", media="text/html")
def console_upload(services: Services, cfg: ApiSettings, principal: Principal, **_: Any) -> Any:
    return render("upload.html", cfg, principal, title="Upload", partners=[p.id for p in services.catalog.partners],
                  max_mib=cfg.upload_max_bytes // (1024 * 1024))


@route("GET", "/console/signin", role="", summary="Console: sign-in (development sign-in locally)",
       media="text/html")
def console_signin(services: Services, cfg: ApiSettings, **_: Any) -> Any:
    return render("signin.html", cfg, None, title="Sign in", reason="Sign in to use the console.")


@route("POST", "/console/signin", role="", summary="Console: development sign-in (local only)", media="text/html",
       body="application/x-www-form-urlencoded")
def console_signin_post(services: Services, cfg: ApiSettings, req: ApiRequest, **_: Any) -> Any:
    if not cfg.dev_signin:
        raise Problem(404, "the development sign-in is off (WHARF_CONSOLE_DEV_SIGNIN)", code="not-found")
    fields = form(req)
    role = fields.get("role", "reader")
    if role not in ("reader", "operator"):
        raise Problem(400, "role must be reader or operator", param="role", code="bad-parameter")
    cookie = dev_cookie(cfg, fields.get("name", "developer"), role)
    return redirect(f"{BASE}/", {"Set-Cookie": f"{DEV_COOKIE}={cookie}; Path=/api/v1; HttpOnly; SameSite=Strict"})


# --- API reference ------------------------------------------------------------------------------------

_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "application/javascript"}


@route("GET", "/docs", role="", summary="API reference (Swagger UI, vendored from the swagger-ui-py package)",
       media="text/html")
def api_docs(services: Services, **_: Any) -> Any:
    return ApiResponse(200, (_TEMPLATES / "docs.html").read_bytes(), "text/html; charset=utf-8")


@route("GET", "/docs/assets/{name}", role="", summary="API reference assets", media="application/octet-stream")
def api_docs_asset(services: Services, name: str, **_: Any) -> Any:
    import swagger_ui

    if name not in _ASSETS:
        raise Problem(404, f"no asset {name[:60]!r}", param="name", code="not-found")
    data = (Path(swagger_ui.__file__).parent / "static" / name).read_bytes()
    return ApiResponse(200, data, _ASSETS[name], {"Cache-Control": "public, max-age=86400"})
