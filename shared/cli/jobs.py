"""`wharf jobs list|show|rebuild`: the integration jobs' read model."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime

from shared.cli.common import Subparsers, print_json, services
from shared.domain.jobs import JobStatus

_MAX_LIMIT = 1000  # rows of one page (one JobsByTime query page holds up to 1000)


def cmd_jobs_list(args: argparse.Namespace) -> int:
    """Newest first through the JobsByTime index (as GET /api/v1/jobs): one page of `--limit`, the next page's
    cursor on stderr; `--all` reads page after page. Never the whole IntegrationJob table."""
    from shared.domain.job_index import JobQuery
    from shared.services.jobs_view import page_jobs

    jobs = services().jobs
    query = JobQuery(partner=args.partner, status=args.status, since=args.since)
    rows, cursor = page_jobs(jobs, query, limit=args.limit, cursor=args.next)
    if args.json:
        while args.all and cursor:
            more, cursor = page_jobs(jobs, query, limit=args.limit, cursor=cursor)
            rows.extend(more)
        print_json(rows)
    elif not rows:
        print("no jobs")
    else:
        print(f"{'JOB':<44} {'PARTNER':<14} {'STATUS':<10} {'TYPE':<12} {'CREATED':<26} FILE")
        while True:
            for r in rows:
                print(f"{r['job_id']:<44} {r['partner']:<14} {r['status']:<10} {r['type']:<12} "
                      f"{r['created_at'][:26]:<26} {r['file_name']}")
            if not (args.all and cursor):
                break
            rows, cursor = page_jobs(jobs, query, limit=args.limit, cursor=cursor)
    if cursor:
        print(f"more jobs: the next page is `{_again(args)} --next {cursor}` (or --all)", file=sys.stderr)
    return 0


def _again(args: argparse.Namespace) -> str:
    """The same `wharf jobs list` (filters, page size, format), for the next-page hint."""
    words = ["wharf", "jobs", "list"]
    for flag, value in (("--partner", args.partner), ("--status", args.status),
                        ("--since", args.since.isoformat() if args.since else None), ("--limit", str(args.limit))):
        if value:
            words += [flag, shlex.quote(value)]
    return " ".join(words + (["--json"] if args.json else []))


def _since(text: str) -> datetime:
    """`--since`: an ISO 8601 date or time; without an offset it is UTC."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r} (e.g. 2026-01-31 or "
                                         "2026-01-31T08:00:00Z)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _cursor(text: str) -> str:
    from shared.domain.job_index import Cursor

    try:
        return Cursor.decode(text).encode()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a `wharf jobs list` cursor: {text!r}") from None


def _limit(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= _MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"a page holds 1 to {_MAX_LIMIT} jobs, not {text!r}")
    return value


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from shared.services.jobs_view import format_job_detail, job_detail

    s = services()
    detail = job_detail(s.jobs, args.job_id, s.deliveries)
    if args.json:
        print_json(detail)
    else:
        print(format_job_detail(detail))
    return 0


def cmd_jobs_rebuild(args: argparse.Namespace) -> int:
    count = services().jobs.rebuild(args.job_id)
    print(f"rebuilt {count} job(s) from their events")
    return 0


def cmd_jobs_resume(args: argparse.Namespace) -> int:
    import getpass

    from shared.services.stalled import resume

    print_json(resume(services(), args.job_id, by=f"cli:{getpass.getuser()}"))
    return 0


def register(sub: Subparsers) -> None:
    jobs = sub.add_parser("jobs", help="integration jobs").add_subparsers(dest="action", required=True)
    lst = jobs.add_parser("list", help="newest jobs first, a page at a time (the JobsByTime index)")
    lst.add_argument("--partner")
    lst.add_argument("--status", choices=[s.value for s in JobStatus])
    lst.add_argument("--since", type=_since, help="created at or after (ISO 8601, UTC without an offset; "
                                                  "default: the last 400 days)")
    lst.add_argument("--limit", type=_limit, default=50, help=f"jobs per page (1-{_MAX_LIMIT}, default 50)")
    lst.add_argument("--next", type=_cursor, metavar="CURSOR", help="the page after the one that printed CURSOR")
    lst.add_argument("--all", action="store_true", help="every page, one index query page after another")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_jobs_list)
    show = jobs.add_parser("show", help="one job: status, events, transfers, log")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_jobs_show)
    resume = jobs.add_parser("resume", help="restart a stalled job's orchestration from its last completed step")
    resume.add_argument("job_id")
    resume.set_defaults(func=cmd_jobs_resume)
    rebuild = jobs.add_parser("rebuild", help="re-fold IntegrationJob from JobEvents")
    rebuild.add_argument("job_id", nargs="?")
    rebuild.set_defaults(func=cmd_jobs_rebuild)
