"""`wharf catalog validate FILE`: check a partner catalogue."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.cli.common import Subparsers


def cmd_catalog_validate(args: argparse.Namespace) -> int:
    from shared.catalog import CatalogError, load_catalog

    try:
        catalog = load_catalog(Path(args.file))
    except CatalogError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{args.file}: OK, {len(catalog.partners)} partner(s): "
          + ", ".join(p.id for p in catalog.partners))
    return 0


def register(sub: Subparsers) -> None:
    catalog = sub.add_parser("catalog", help="partner catalogue").add_subparsers(dest="action", required=True)
    validate = catalog.add_parser("validate", help="check a catalogue file; non-zero exit when wrong")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_catalog_validate)
