"""`wharf send PARTNER FILE [--route NAME]`: hand a local file to Wharf for a partner (an outbound job)."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, print_json, services


def cmd_send(args: argparse.Namespace) -> int:
    from shared.services.outbound import send_file

    result = send_file(services(), args.partner, args.file, route=args.route, name=args.name)
    if args.json:
        print_json(result)
        return 0
    route = f" by route {result['route']}" if result["route"] else ""
    print(f"sending {result['file_name']} ({result['bytes']} bytes) to {result['partner']}{route} as job "
          f"{result['job_id']}; follow it with: wharf jobs show {result['job_id']}")
    return 0


def register(sub: Subparsers) -> None:
    send = sub.add_parser("send", help="send a local file to a partner by its outbound routes (an outbound job)")
    send.add_argument("partner")
    send.add_argument("file")
    send.add_argument("--route", help="the outbound route to take (default: the first that matches, else the "
                                      "default route)")
    send.add_argument("--name", help="the file name to send it under (default: the file's own name)")
    send.add_argument("--json", action="store_true")
    send.set_defaults(func=cmd_send)
