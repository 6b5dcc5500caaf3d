"""`wharf replay JOB_ID`: reprocess a job's stored raw file as a new, linked job."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, services


def cmd_replay(args: argparse.Namespace) -> int:
    from shared.services.intake import replay

    result = replay(services(), args.job_id)
    print(f"replaying {args.job_id} as {result['job_id']}; follow it with: wharf jobs show {result['job_id']}")
    return 0


def register(sub: Subparsers) -> None:
    replay = sub.add_parser("replay", help="reprocess a job's stored raw file as a new, linked job")
    replay.add_argument("job_id")
    replay.set_defaults(func=cmd_replay)
