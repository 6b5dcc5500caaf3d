"""Partner catalogue: pydantic models for partners.yaml and a loader whose errors say what to change.

Modules, lowest first: errors, hostkeys and common (field types); sftp, mailbox, processing and routes (one
block each); model (Partner, Catalog); interpolation and problems; loader (load_catalog, parse_catalog).
"""

from shared.catalog.common import DEFAULT_SCHEDULE, PLACEHOLDERS, next_run
from shared.catalog.errors import CatalogError, PartnerNotFoundError, Problem
from shared.catalog.hostkeys import HostKey, parse_host_key
from shared.catalog.loader import load_catalog, parse_catalog
from shared.catalog.mailbox import Mailbox, MailboxAuth
from shared.catalog.model import Catalog, Partner
from shared.catalog.problems import format_problems
from shared.catalog.processing import ColumnSpec, CsvSpec, FileRule, Processing, Transform
from shared.catalog.routes import (
    BlobDestination,
    Destination,
    EmailDestination,
    EventDestination,
    Route,
    RouteMatch,
    SftpDestination,
)
from shared.catalog.sftp import SftpAuth, SftpSource
from shared.domain.globs import glob_match

__all__ = [
    "DEFAULT_SCHEDULE",
    "PLACEHOLDERS",
    "BlobDestination",
    "Catalog",
    "CatalogError",
    "ColumnSpec",
    "CsvSpec",
    "Destination",
    "EmailDestination",
    "EventDestination",
    "FileRule",
    "HostKey",
    "Mailbox",
    "MailboxAuth",
    "Partner",
    "PartnerNotFoundError",
    "Problem",
    "Processing",
    "Route",
    "RouteMatch",
    "SftpAuth",
    "SftpDestination",
    "SftpSource",
    "Transform",
    "format_problems",
    "glob_match",
    "load_catalog",
    "next_run",
    "parse_catalog",
    "parse_host_key",
]
