"""The `wharf` command: one module a command group, each adding its sub-parser with `register(sub)`."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import Protocol

from shared.cli import catalog, deliveries, jobs, keys, plugins, poison, poll, replay, resources, secrets, send, sla
from shared.cli.common import Subparsers, load_local_environment
from shared.cli.errors import EXIT_FAILED, EXIT_NOT_FOUND, describe
from shared.domain.errors import NotFoundError, WharfError


class Command(Protocol):
    def register(self, sub: Subparsers) -> None: ...


# A new sub-command is a module with `register(sub)` and one entry here; the order is the order in --help.
COMMANDS: tuple[Command, ...] = (catalog, jobs, send, deliveries, replay, resources, poll, poison, plugins, sla,
                                 secrets, keys)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wharf", description="Wharf: partner file exchange on Azure Functions.",
        epilog="exit codes: 0 ok, 1 failed, 2 not found (or a usage error), 3 storage unreachable or refusing, "
               "4 storage not set up (run `wharf resources ensure`)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
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
        return _failed(args, f"error: {exc}", EXIT_NOT_FOUND)
    except WharfError as exc:
        return _failed(args, f"error: {exc}", EXIT_FAILED)
    except Exception as exc:
        failure = describe(exc)
        if failure is None:
            raise
        return _failed(args, failure.message, failure.code)
    finally:
        flush()


def _failed(args: argparse.Namespace, message: str, code: int) -> int:
    """One line on stderr (the traceback before it with --debug), and the exit code."""
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(message, file=sys.stderr)
    return code
