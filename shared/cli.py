"""The `wharf` command: catalogue, jobs, resources (and, from later work, poll, replay, deliver)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared.cli_poll import register_poll
from shared.domain.errors import NotFoundError, WharfError


def _services():
    from shared.bootstrap import build_services

    return build_services()


def cmd_catalog_validate(args: argparse.Namespace) -> int:
    from shared.catalog import CatalogError, load_catalog

    try:
        catalog = load_catalog(Path(args.file))
    except CatalogError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{args.file}: OK, {len(catalog.partners)} partner(s): "
          + ", ".join(p.id for p in catalog.partners))
    return 0


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from shared.services.jobs_view import list_jobs

    rows = list_jobs(_services().jobs, partner=args.partner, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
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

    detail = job_detail(_services().jobs, args.job_id)
    print(json.dumps(detail, indent=2) if args.json else format_job_detail(detail))
    return 0


def cmd_jobs_rebuild(args: argparse.Namespace) -> int:
    count = _services().jobs.rebuild(args.job_id)
    print(f"rebuilt {count} job(s) from their events")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from shared.services.intake import replay

    result = replay(_services(), args.job_id)
    print(f"replaying {args.job_id} as {result['job_id']}; follow it with: wharf jobs show {result['job_id']}")
    return 0


def cmd_resources_ensure(args: argparse.Namespace) -> int:
    _services().ensure_resources()
    print("containers, queues and tables are in place")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wharf", description="Wharf: partner file exchange on Azure Functions.")
    sub = parser.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="partner catalogue").add_subparsers(dest="action", required=True)
    validate = catalog.add_parser("validate", help="check a catalogue file; non-zero exit when wrong")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_catalog_validate)

    jobs = sub.add_parser("jobs", help="integration jobs").add_subparsers(dest="action", required=True)
    lst = jobs.add_parser("list", help="newest jobs first")
    lst.add_argument("--partner")
    lst.add_argument("--status", choices=["PENDING", "RUNNING", "COMPLETED", "FAILED"])
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_jobs_list)
    show = jobs.add_parser("show", help="one job: status, events, transfers, log")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_jobs_show)
    rebuild = jobs.add_parser("rebuild", help="re-fold IntegrationJob from JobEvents")
    rebuild.add_argument("job_id", nargs="?")
    rebuild.set_defaults(func=cmd_jobs_rebuild)

    replay = sub.add_parser("replay", help="reprocess a job's stored raw file as a new, linked job")
    replay.add_argument("job_id")
    replay.set_defaults(func=cmd_replay)

    resources = sub.add_parser("resources", help="storage resources").add_subparsers(dest="action", required=True)
    ensure = resources.add_parser("ensure", help="create every container, queue and table (idempotent)")
    ensure.set_defaults(func=cmd_resources_ensure)

    for register in _EXTENSIONS:
        register(sub)
    return parser


# Later areas (poll, replay, deliver) add their sub-commands here: each is `register(subparsers)`.
_EXTENSIONS: list[Callable[[Any], None]] = [register_poll]


def load_local_environment(root: Path = Path()) -> list[Path]:
    """For a developer's shell: fill unset variables from `local.settings.json` (else the sample) and the
    running local stack's `.local/stack.env`, as devhost and `make run` do. Never overrides what is set;
    in Azure, or anywhere these files are absent, it does nothing."""
    used: list[Path] = []
    stack_env = Path(os.environ.get("WHARF_STACK_ENV", root / ".local" / "stack.env"))
    if stack_env.is_file():  # first: it has the running stack's real ports
        for key, value in parse_env_file(stack_env.read_text()).items():
            os.environ.setdefault(key, value)
        used.append(stack_env)
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = root / name
        if path.is_file():
            values = json.loads(path.read_text()).get("Values") or {}
            for key, value in values.items():
                os.environ.setdefault(str(key), "" if value is None else str(value))
            used.append(path)
            break
    return used


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY=value` and `KEY='value'` lines (what scripts/stack.sh writes); comments and blanks skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_local_environment()
    from shared.telemetry import configure_telemetry, flush

    configure_telemetry()
    try:
        return int(args.func(args))
    except NotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WharfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        flush()


if __name__ == "__main__":
    sys.exit(main())
