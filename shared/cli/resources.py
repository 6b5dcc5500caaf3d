"""`wharf resources ensure`: create the storage resources."""

from __future__ import annotations

import argparse

from shared.cli.common import Subparsers, services


def cmd_resources_ensure(args: argparse.Namespace) -> int:
    services().ensure_resources()
    print("containers, queues and tables are in place")
    return 0


def register(sub: Subparsers) -> None:
    resources = sub.add_parser("resources", help="storage resources").add_subparsers(dest="action", required=True)
    ensure = resources.add_parser("ensure", help="create every container, queue and table (idempotent)")
    ensure.set_defaults(func=cmd_resources_ensure)
