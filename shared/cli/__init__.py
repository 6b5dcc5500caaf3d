"""The `wharf` command: one module a command group, each adding its sub-parser with `register(sub)`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Protocol

from shared.cli import catalog, jobs, poll, replay, resources
from shared.cli.common import Subparsers, load_local_environment
from shared.domain.errors import NotFoundError, WharfError


class Command(Protocol):
    def register(self, sub: Subparsers) -> None: ...


# A new sub-command is a module with `register(sub)` and one entry here; the order is the order in --help.
COMMANDS: tuple[Command, ...] = (catalog, jobs, replay, resources, poll)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wharf", description="Wharf: partner file exchange on Azure Functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    load_local_environment()
    from shared.observability.setup import configure_telemetry, flush

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
