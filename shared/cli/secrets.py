"""`wharf secrets check`: every secret the catalogue references, whether it resolves, and when it expires."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from shared.cli.common import Subparsers, print_json, services


def cmd_secrets_check(args: argparse.Namespace) -> int:
    from shared.services.secrets_check import check_secrets, warn_days

    now = datetime.now(UTC)
    days = args.warn_days if args.warn_days is not None else warn_days()
    statuses = check_secrets(services(), now=now, warn_within_days=days)
    if args.json:
        print_json({"warn_days": days, "secrets": [s.as_dict(now) for s in statuses]})
    else:
        if not statuses:
            print("the catalogue references no secrets")
        for s in statuses:
            row = s.as_dict(now)
            expiry = (f"expires {row['expires_at'][:19]}Z ({row['expires_in_days']} days, {s.expiry_source})"
                      if s.expires_at else "no expiry known")
            version = f" version {s.version}" if s.version else ""
            updated = f" updated {row['updated_at'][:19]}Z" if s.updated_at else ""
            print(f"{s.state.upper():8} {s.name}: {'resolves' if s.resolves else 'MISSING'}"
                  f"{' (' + s.kind + ')' if s.kind else ''}{version}{updated}; {expiry}"
                  f"{'; ' + s.detail if s.detail else ''}")
            print(f"         used by {', '.join(s.used_by)}")
    return 1 if any(s.state != "ok" for s in statuses) else 0


def register(sub: Subparsers) -> None:
    secrets = sub.add_parser("secrets", help="the secrets the catalogue references").add_subparsers(
        dest="action", required=True)
    check = secrets.add_parser("check", help="does each resolve, and when does it expire (never the value); "
                                             "exit 1 when one is missing or expires within the warning window")
    check.add_argument("--warn-days", type=int, default=None,
                       help="warning window in days (default WHARF_SECRET_EXPIRY_WARN_DAYS or 14)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_secrets_check)
