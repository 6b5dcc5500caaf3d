"""`wharf jobs list|show|rebuild`: the integration jobs' read model."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, print_json, services
from shared.domain.jobs import JobStatus


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from shared.services.jobs_view import list_jobs

    rows = list_jobs(services().jobs, partner=args.partner, status=args.status, limit=args.limit)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no jobs")
        return 0
    print(f"{'JOB':<44} {'PARTNER':<14} {'STATUS':<10} {'TYPE':<12} {'CREATED':<26} FILE")
    for r in rows:
        print(f"{r['job_id']:<44} {r['partner']:<14} {r['status']:<10} {r['type']:<12} "
              f"{r['created_at'][:26]:<26} {r['file_name']}")
    return 0


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
    lst = jobs.add_parser("list", help="newest jobs first")
    lst.add_argument("--partner")
    lst.add_argument("--status", choices=[s.value for s in JobStatus])
    lst.add_argument("--limit", type=int, default=50)
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
