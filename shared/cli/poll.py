"""`wharf poll PARTNER`: poll a partner's source now, showing files and bytes as they land.
`wharf poll --worker`: transfer the claim batches large polls put on the transfer-batches queue."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, TextIO

from shared.cli.common import Subparsers, print_json, services
from shared.domain.messages import PollRequest

_MIB = 1024 * 1024


def _mib(count: int) -> str:
    return f"{count / _MIB:,.1f} MiB"


class ProgressPrinter:
    """Progress on stderr: one rewritten line on a terminal, a line per event (and every 2 s) otherwise."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stderr
        self._tty = self._out.isatty()
        self._started = time.monotonic()
        self._last_line = 0.0
        self._last_key: tuple[Any, ...] = ()
        self._width = 0

    def __call__(self, p: Any) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = f", {p.bytes / elapsed / _MIB:,.1f} MiB/s" if p.phase == "transferring" and p.bytes else ""
        files = f"{p.landed + p.failed}/{p.to_transfer} files" if p.to_transfer else f"{p.listed} listed"
        size = f"{_mib(p.bytes)}/{_mib(p.bytes_to_transfer)}" if p.bytes_to_transfer else _mib(p.bytes)
        line = f"[{p.phase}] {files}, {size}{rate}"
        if p.failed:
            line += f", {p.failed} failed"
        if p.current and p.phase == "transferring":
            line += f"  {p.current[:60]}"
        key = (p.phase, p.landed, p.failed, p.skipped)
        now = time.monotonic()
        if self._tty:
            self._out.write("\r" + line.ljust(self._width))
            self._width = len(line)
            if p.phase == "done":
                self._out.write("\n")
        elif key != self._last_key or now - self._last_line >= 2.0:
            self._out.write(line + "\n")
            self._last_line = now
        self._last_key = key
        self._out.flush()


def format_summary(summary: dict[str, Any]) -> str:
    started, finished = summary.get("started_at"), summary.get("finished_at")
    lines = [
        f"{summary['partner']} ({summary.get('channel', 'sftp')}): {summary['status']} — "
        f"{summary.get('listed', 0)} listed, {summary.get('landed', 0)} landed, {summary.get('skipped', 0)} "
        f"skipped, {summary.get('failed', 0)} failed, "
        + (f"{summary['queued']} queued in {summary.get('batches', 0)} transfer batches, " if summary.get("queued")
           else "")
        + f"{_mib(int(summary.get('bytes', 0)))}"
        + (f" ({started} .. {finished})" if started and finished else "")
    ]
    if summary.get("ignored"):
        lines.append(f"  ignored: {summary['ignored']} file(s) not matching include/exclude")
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    for title, key in (("skipped", "skipped_reasons"), ("failed", "failed_reasons")):
        reasons = summary.get(key) or {}
        if reasons:
            lines.append(f"  {title}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    for item in summary.get("landed_files", []):
        lines.append(f"  landed   {item['path']}  {item['size']} bytes  {item['job_id']}  {item['blob']}")
    for item in summary.get("skipped_files", []):
        lines.append(f"  skipped  {item['path']}  {item['reason']}" + (f"  {item['job_id']}" if item.get("job_id")
                                                                      else ""))
    for item in summary.get("failed_files", []):
        lines.append(f"  failed   {item['path']}  {item['reason']}" + (f"  {item['job_id']}" if item.get("job_id")
                                                                     else ""))
    return "\n".join(lines)


def _options(args: argparse.Namespace, channel: str = "sftp") -> dict[str, Any]:
    """The flags that change a poll's options: the lease on every channel, the SFTP ones on SFTP only."""
    from datetime import timedelta

    options: dict[str, Any] = {}
    if args.lease is not None:
        options["lease"] = timedelta(seconds=args.lease)
    if channel == "sftp":
        options["concurrency"] = args.concurrency
        if args.settle is not None:
            options["settle_seconds"] = args.settle
        if getattr(args, "batch_files", None) is not None:
            options["batch_files"] = args.batch_files
    return options


def cmd_worker(args: argparse.Namespace) -> int:
    """Transfer batches off the queue until Ctrl-C, --max-batches, or --idle-exit seconds without one."""
    from shared.services import transfers
    from shared.services.polls import default_options

    svc = services()
    opts = _options(args)
    opts.pop("batch_files", None)  # a worker transfers batches; it does not split
    failed = 0

    def show(summary: Any) -> None:
        nonlocal failed
        data = summary.model_dump(mode="json")
        failed += data.get("status") not in ("ok",)
        if args.json:
            print_json(data)
        elif not args.quiet:
            print(format_summary(data), flush=True)

    options = default_options(svc, **opts)  # concurrency and lease; the stability interval is each batch's own
    try:
        handled = transfers.work(svc, idle_exit=args.idle_exit, max_batches=args.max_batches, options=options,
                                 on_summary=show)
    except KeyboardInterrupt:
        return 130
    if not args.quiet and not args.json:
        print(f"worker: {handled} transfer batches handled, {failed} not ok", file=sys.stderr)
    return 0 if failed == 0 else 1


def cmd_poll(args: argparse.Namespace) -> int:
    from shared.services.polls import default_options
    from shared.services.scheduling import poll_channel, run_poll_request

    if not args.verbose:
        # Per-connection chatter would scroll the progress line away; warnings and errors still show.
        logging.getLogger("paramiko").setLevel(logging.WARNING)
    if args.worker:
        if args.partner:
            raise SystemExit("wharf poll --worker takes no PARTNER: it transfers every partner's queued batches")
        return cmd_worker(args)
    if not args.partner:
        raise SystemExit("wharf poll: PARTNER is required (or --worker)")
    svc = services()
    channel = poll_channel(svc, args.partner, args.channel)
    kwargs: dict[str, Any] = {}
    if not args.quiet:
        kwargs["progress"] = ProgressPrinter()
    kwargs["options"] = default_options(svc, **_options(args, channel))
    summary = run_poll_request(svc, PollRequest(partner=args.partner, channel=channel, requested_by="cli"),
                               **kwargs)
    data = summary.model_dump(mode="json")
    if args.json:
        print_json(data)
    else:
        print(format_summary(data))
    return 0 if data.get("status") == "ok" else 1


def register(sub: Subparsers) -> None:
    poll = sub.add_parser("poll", help="poll a partner's source now (progress on stderr, summary on stdout)")
    poll.add_argument("partner", nargs="?", help="the partner to poll (not with --worker)")
    poll.add_argument("--channel", choices=["sftp", "mail"], help="default: the partner's source (sftp first)")
    poll.add_argument("--concurrency", type=int, default=4, help="files transferred at once (sftp; default 4)")
    poll.add_argument("--settle", type=float, help="seconds between the two listings (default 1)")
    poll.add_argument("--lease", type=float, help="seconds after which an abandoned claim is taken over")
    poll.add_argument("--batch-files", type=int, metavar="N",
                      help="sftp: a listing with more than N files to take is claimed in batches of N put on the "
                           "transfer-batches queue for workers (`wharf poll --worker`, or the function)")
    poll.add_argument("--worker", action="store_true",
                      help="transfer the batches on the transfer-batches queue (every partner), one at a time")
    poll.add_argument("--idle-exit", type=float, metavar="SECONDS",
                      help="--worker: stop once the queue has been empty this long (default: run until Ctrl-C)")
    poll.add_argument("--max-batches", type=int, metavar="N", help="--worker: stop after N batches")
    poll.add_argument("--json", action="store_true", help="print the summary as JSON")
    poll.add_argument("--quiet", action="store_true", help="no progress output")
    poll.add_argument("--verbose", action="store_true", help="keep paramiko's connection log lines")
    poll.set_defaults(func=cmd_poll)
