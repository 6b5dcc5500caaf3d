"""Read models for operators: job lists and job detail, shared by the CLI and the HTTP API."""

from __future__ import annotations

from typing import Any

from shared.domain.job_index import JobQuery
from shared.domain.jobs import Job
from shared.observability.tracing import span
from shared.ports import Deliveries, JobStore


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id, "partner": job.partner, "type": job.job_type.value, "status": job.status.value,
        "file_name": job.file_name, "bytes": job.bytes, "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(), "error": job.error,
    }


def list_jobs(jobs: JobStore, *, partner: str | None = None, status: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    with span("jobs.list", {"wharf.partner": partner}):
        return [job_summary(j) for j in jobs.list_jobs(partner=partner, status=status, limit=limit)]


def page_jobs(jobs: JobStore, query: JobQuery, *, limit: int = 50,
              cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the newest-first JobsByTime query (the one API v1 pages with), as summaries, and the cursor
    of the next page (None: the last). Reads only the index rows of the query's window, never the job table."""
    with span("jobs.page", {"wharf.partner": query.partner or "", "wharf.limit": limit}) as s:
        page = jobs.query_jobs(query, limit=limit, cursor=cursor)
        s.set_attribute("wharf.jobs", len(page.jobs))
        return [job_summary(j) for j in page.jobs], page.next_cursor


def job_detail(jobs: JobStore, job_id: str, deliveries: Deliveries | None = None) -> dict[str, Any]:
    """Everything known about one job (with `deliveries`: each destination's delivery record and state).
    Raises NotFoundError when absent."""
    from shared.services.deliveries_view import delivery_row

    with span("jobs.show", {"wharf.job_id": job_id}):
        job = jobs.get_job(job_id)
        detail = {
            "job": job.model_dump(mode="json"),
            "events": [e.model_dump(mode="json") for e in jobs.events(job_id)],
            "transfers": [t.model_dump(mode="json") for t in jobs.transfers(job_id)],
            "logs": [entry.model_dump(mode="json") for entry in jobs.logs(job_id)],
        }
        if deliveries is not None:
            detail["deliveries"] = [delivery_row(d) for d in deliveries.for_job(job_id)]
        return detail


def _where(problem: dict[str, Any]) -> str:
    """`row 2, line 3, column 4 (currency)`: where a validation problem is, as far as it is known."""
    parts = [f"{k} {problem[k]}" for k in ("row", "line", "column") if problem.get(k) is not None]
    where = ", ".join(parts) or "file"
    return f"{where} ({problem['field']})" if problem.get("field") else where


def format_job_detail(detail: dict[str, Any]) -> str:
    """Human-readable job detail for `wharf jobs show`."""
    job = detail["job"]
    lines = [
        f"Job {job['job_id']}  [{job['status']}]",
        f"  partner:   {job['partner']}",
        f"  type:      {job['job_type']}",
        f"  file:      {job['file_name']}  ({job['bytes']} bytes, sha256 {job['sha256'] or '-'})",
        f"  blob:      {job['blob_path'] or '-'}",
        f"  created:   {job['created_at']}   updated: {job['updated_at']}",
    ]
    if job.get("parent_job_id"):
        lines.append(f"  replay of: {job['parent_job_id']}")
    if job.get("replayed_by"):
        lines.append(f"  replayed by: {job['replayed_by']}")
    if job.get("error"):
        lines.append(f"  error:     {job['error']}")
    if job.get("counts"):
        lines.append("  counts:    " + ", ".join(f"{k}={v}" for k, v in sorted(job["counts"].items())))
    lines.append("Events:")
    for e in detail["events"]:
        data = ", ".join(f"{k}={v}" for k, v in sorted(e["data"].items()) if k != "report")
        lines.append(f"  {e['seq']:>3}  {e['at']}  {e['type']:<16} {data}")
        report = e["data"].get("report") or {}
        for problem in report.get("errors", [])[:50]:
            lines.append(f"         {_where(problem)}: {problem.get('message', '')}")
        if report.get("truncated"):
            lines.append(f"         ... more in {e['data'].get('report_blob') or e['data'].get('report_path', '')}")
    if detail.get("deliveries"):
        lines.append("Deliveries:")
        for d in detail["deliveries"]:
            again = f"  (re-sends {d['redelivery_of']})" if d.get("redelivery_of") is not None else ""
            where = d["remote_path"] or d["target"]
            lines.append(f"  {d['index']:>3}  {d['kind']:<8} {d['state']:<8} {where}  attempts {d['attempts']}{again}")
            if d.get("error"):
                lines.append(f"         {d['error']}")
    if detail["transfers"]:
        lines.append("Transfers:")
        for t in detail["transfers"]:
            lines.append(f"  {t['transfer_id']}  {t['status']}  {t['source']} -> {t['destination']}  "
                         f"{t['bytes']} bytes")
    if detail["logs"]:
        lines.append("Log:")
        for entry in detail["logs"]:
            lines.append(f"  {entry['timestamp']}  {entry['level']:<7} {entry['message']}")
    return "\n".join(lines)
