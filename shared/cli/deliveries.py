"""`wharf deliveries list|show` and `wharf redeliver JOB [--destination N] [--wait S]`: outbound deliveries per
destination (a redelivery is queued for the function app's worker)."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, print_json, services
from shared.domain.delivery import DeliveryState


def _line(r: dict[str, object]) -> str:
    again = f" (re-sends {r['redelivery_of']})" if r.get("redelivery_of") is not None else ""
    where = r.get("remote_path") or r.get("target")
    return (f"{r['job_id']:<44} {r['index']:>3}  {r['kind']:<8} {r['state']:<9} {r['partner']:<14} "
            f"{r['attempts']:>3}  {where}{again}")


def cmd_deliveries_list(args: argparse.Namespace) -> int:
    from shared.services.deliveries_view import list_deliveries

    rows = list_deliveries(services(), job_id=args.job, state=args.status, partner=args.partner, limit=args.limit)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no deliveries")
        return 0
    print(f"{'JOB':<44} {'IDX':>3}  {'KIND':<8} {'STATE':<9} {'PARTNER':<14} {'TRY':>3}  TARGET")
    for r in rows:
        print(_line(r))
        if r.get("error") and r["state"] == DeliveryState.FAILED.value:
            print(f"{'':<50}{r['error']}")
    return 0


def cmd_deliveries_show(args: argparse.Namespace) -> int:
    from shared.services.deliveries_view import show_delivery

    row = show_delivery(services(), args.job_id, args.index)
    if args.json:
        print_json(row)
        return 0
    for key, value in row.items():
        if value not in ("", None, []):
            print(f"{key + ':':<15} {value}")
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    import getpass
    import time

    from shared.services.deliveries_view import delivery_row, request_redelivery

    s = services()
    rows = request_redelivery(s, args.job_id, destination=args.destination, by=f"cli:{getpass.getuser()}")
    deadline = time.monotonic() + max(0.0, args.wait)
    while args.wait and time.monotonic() < deadline and any(r["state"] in _OPEN for r in rows):
        time.sleep(0.5)
        rows = [delivery_row(s.deliveries.get(r["job_id"], r["index"])) for r in rows]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            what = "queued" if r["state"] in _OPEN else r["state"]
            print(f"delivery {r['redelivery_of']} of {r['job_id']} re-sent as delivery {r['index']}: {what} "
                  f"{r.get('remote_path') or r.get('target')}")
            if r["state"] == DeliveryState.FAILED.value:
                print(f"  {r['error']}")
    if any(r["state"] == DeliveryState.FAILED.value for r in rows):
        return 1
    return 3 if args.wait and any(r["state"] in _OPEN for r in rows) else 0


_OPEN = (DeliveryState.PENDING.value, DeliveryState.SENDING.value)


def register(sub: Subparsers) -> None:
    deliveries = sub.add_parser("deliveries", help="outbound deliveries, one per job and destination") \
        .add_subparsers(dest="action", required=True)
    lst = deliveries.add_parser("list", help="most recently updated first")
    lst.add_argument("--job", help="only this job's deliveries")
    lst.add_argument("--status", choices=[s.value for s in DeliveryState])
    lst.add_argument("--partner", help="only deliveries of this partner's jobs")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_deliveries_list)
    show = deliveries.add_parser("show", help="one delivery: where it went, its state, attempts and error")
    show.add_argument("job_id")
    show.add_argument("index", type=int, nargs="?", default=0, help="the destination index (default 0)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_deliveries_show)
    again = sub.add_parser("redeliver", help="queue the re-sending of a job's failed deliveries (or the one "
                                             "--destination names) as new, linked delivery records; the function "
                                             "app's redelivery worker sends them")
    again.add_argument("job_id")
    again.add_argument("--destination", type=int, help="the delivery index to send again (see wharf deliveries "
                                                       "list --job JOB)")
    again.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                       help="wait up to SECONDS for the worker to finish (exit 1: it failed, 3: still queued)")
    again.add_argument("--json", action="store_true")
    again.set_defaults(func=cmd_redeliver)
