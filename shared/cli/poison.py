"""`wharf poison list|show|requeue|drop`: the messages in the `<queue>-poison` queues, and what to do with them."""

from __future__ import annotations

import argparse
import json

from shared.cli.common import Subparsers, print_json, services


def cmd_poison_list(args: argparse.Namespace) -> int:
    from shared.services.poison import list_poison

    listings = list_poison(services(), args.queue, limit=args.limit)
    if args.json:
        print_json([listing.to_dict() for listing in listings])
        return 0
    for n, listing in enumerate(listings):
        if n:
            print()
        shown = len(listing.messages)
        more = f" (showing the first {shown}: a queue can be peeked 32 at a time)" if listing.depth > shown else ""
        print(f"{listing.queue}: {listing.depth} message(s){more}")
        if not listing.messages:
            continue
        print(f"  {'ID':<36} {'INSERTED':<25} {'DEQ':>3} {'REASON':<40} JOB")
        for m in listing.messages:
            inserted = m.inserted_at.isoformat(timespec="seconds") if m.inserted_at else "-"
            print(f"  {m.id:<36} {inserted:<25} {m.dequeue_count:>3} {m.reason:<40} {m.job_id or '-'}")
    return 0


def cmd_poison_show(args: argparse.Namespace) -> int:
    from shared.services.poison import show

    message = show(services(), args.queue, args.message_id, scan=args.scan)
    if args.json:
        print_json(message.to_dict())
        return 0
    d = message.to_dict()
    for key in ("queue", "id", "inserted_at", "dequeue_count", "reason", "detail", "job_id", "source_queue",
                "dead_lettered_by", "dead_lettered_at", "original_message_id", "body_bytes", "body_truncated"):
        if d.get(key) not in (None, ""):
            print(f"{key + ':':<21} {d[key]}")
    print("body:")
    text = d["body"]
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    print(text)
    return 0


def cmd_poison_requeue(args: argparse.Namespace) -> int:
    from shared.services.poison import requeue

    message = requeue(services(), args.queue, args.message_id, scan=args.scan)
    print(f"requeued {args.message_id} to {message.source_queue} and removed it from {message.queue}"
          + (f"; follow it with: wharf jobs show {message.job_id}" if message.job_id else ""))
    return 0


def cmd_poison_drop(args: argparse.Namespace) -> int:
    from shared.services.poison import drop

    message = drop(services(), args.queue, args.message_id, scan=args.scan)
    print(f"dropped {args.message_id} from {message.queue}")
    return 0


def register(sub: Subparsers) -> None:
    poison = sub.add_parser("poison", help="dead-lettered queue messages (<queue>-poison)").add_subparsers(
        dest="action", required=True)
    queue_help = "a poison queue (file-landed-poison) or the queue it belongs to (file-landed)"
    lst = poison.add_parser("list", help="the messages of one poison queue, or of every watched one")
    lst.add_argument("queue", nargs="?", help=queue_help + "; default: every queue Wharf's triggers read")
    lst.add_argument("--limit", type=int, default=32, help="at most this many per queue (32 at most)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_poison_list)
    for name, func, text in (
        ("show", cmd_poison_show, "one message: reason, job, original body"),
        ("requeue", cmd_poison_requeue, "put the original body back on its queue, remove it from the poison queue"),
        ("drop", cmd_poison_drop, "delete the message for good"),
    ):
        cmd = poison.add_parser(name, help=text)
        cmd.add_argument("queue", help=queue_help)
        cmd.add_argument("message_id", help="the id `wharf poison list` shows")
        cmd.add_argument("--scan", type=int, default=1000,
                         help="look through at most this many messages for the id (default 1000)")
        if name == "show":
            cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(func=func)
