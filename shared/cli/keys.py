"""`wharf keys create|list|revoke`: partner API keys for uploads (the key is shown once; only its hash is kept)."""

from __future__ import annotations

import argparse
import getpass

from shared.cli.common import Subparsers, print_json, services


def cmd_create(args: argparse.Namespace) -> int:
    from shared.services.partner_keys import create_key

    svc = services()
    svc.partner_keys.ensure_table()
    value, row = create_key(svc, args.partner, created_by=f"cli:{getpass.getuser()}")
    print(f"key {row.key_id} for partner {row.partner} (shown once; send it as X-Wharf-Partner-Key):")
    print(value)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    svc = services()
    svc.partner_keys.ensure_table()
    rows = [{"partner": k.partner, "key_id": k.key_id, "created_at": k.created_at.isoformat(),
             "created_by": k.created_by, "active": k.active,
             "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None}
            for k in svc.partner_keys.list(args.partner)]
    print_json(rows)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    from shared.services.partner_keys import revoke_key

    key = revoke_key(services(), args.partner, args.key_id)
    print(f"key {key.key_id} of {key.partner} revoked at {key.revoked_at}")
    return 0


def register(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="partner API keys for uploads (POST /api/v1/partners/{p}/uploads)")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="a new key for PARTNER (at most 2 active); printed once")
    create.add_argument("partner")
    create.set_defaults(func=cmd_create)
    listing = ksub.add_parser("list", help="keys (ids, dates, state; never the keys)")
    listing.add_argument("partner", nargs="?")
    listing.set_defaults(func=cmd_list)
    revoke = ksub.add_parser("revoke", help="revoke one key of PARTNER")
    revoke.add_argument("partner")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=cmd_revoke)
