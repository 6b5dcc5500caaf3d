"""`wharf plugins list`: destination kinds, transforms and validators, built-in and from installed packages."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, print_json


def cmd_plugins_list(args: argparse.Namespace) -> int:
    from shared.plugins import list_plugins

    rows = list_plugins()
    if args.json:
        print_json([r.as_dict() for r in rows])
        return 0
    print(f"{'KIND':<12} {'NAME':<20} SOURCE")
    for r in rows:
        if r.error:
            print(f"{r.kind:<12} {r.name:<20} {r.source}  NOT LOADED ({r.target}): {r.error}")
        else:
            print(f"{r.kind:<12} {r.name:<20} {r.source}" + (f"  ({r.target})" if r.target else ""))
    return 0


def register(sub: Subparsers) -> None:
    plugins = sub.add_parser("plugins", help="destination kinds, transforms and validators") \
        .add_subparsers(dest="action", required=True)
    lst = plugins.add_parser("list", help="built-ins and plugins (entry points wharf.destinations, "
                                          "wharf.transforms, wharf.validators), with load errors")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_plugins_list)
