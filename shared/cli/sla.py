"""`wharf sla status|check`: the partners' expected files, their windows and misses."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, print_json, services


def cmd_sla_status(args: argparse.Namespace) -> int:
    from shared.domain.jobs import utcnow
    from shared.services.sla import sla_status

    rows = sla_status(services(), now=utcnow(), partner=args.partner, hours=args.hours)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no expectations in the catalogue" + (f" for partner {args.partner}" if args.partner else ""))
        return 0
    for row in rows:
        flag = f"{row['missed']} missed" if row["missed"] else "ok"
        print(f"{row['partner']} / {row['expectation']}: {row['name']!r} every {row['every']!r} "
              f"({row['timezone']}) within {row['within']}, at least {row['min_count']}: {flag}"
              + ("" if row["enabled"] else " (partner disabled)"))
        if row["open_window"]:
            print(f"  open now: {row['open_window']}")
        if row["next_window"]:
            print(f"  next:     {row['next_window']}")
        for w in row["windows"][:args.limit]:
            late = f", {w['late_count']} late" if w["late_count"] else ""
            print(f"  {w['window']}  {w['state']:<9} {w['count']}/{w['min_count']}{late}")
        if not row["windows"]:
            print(f"  no window evaluated in the last {args.hours:g} h")
    return 0


def cmd_sla_check(args: argparse.Namespace) -> int:
    from shared.domain.jobs import utcnow
    from shared.services.sla import check_expectations

    report = check_expectations(services(), now=utcnow())
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"met {len(report.met)}, missed {len(report.missed)}, recovered {len(report.recovered)}, "
              f"already recorded {report.already}")
    return 0


def register(sub: Subparsers) -> None:
    sla = sub.add_parser("sla", help="expected files: windows, misses, recoveries").add_subparsers(
        dest="action", required=True)
    status = sla.add_parser("status", help="each expectation: open and next window, recent windows")
    status.add_argument("--partner")
    status.add_argument("--hours", type=float, default=48, help="recorded windows that closed this recently")
    status.add_argument("--limit", type=int, default=10, help="windows shown per expectation")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_sla_status)
    check = sla.add_parser("check", help="evaluate the closed windows now (what the sla_check timer does)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_sla_check)
