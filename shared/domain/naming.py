"""Unique names for a file whose place is taken: a tag before the extension (`orders.2.csv`), never a replacement."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from datetime import UTC, datetime

#: Names `on_exists: unique` tries (`name`, `name.2`, ... `name.1000`) before a delivery fails.
UNIQUE_LIMIT = 1000


def tagged(name: str, tag: str) -> str:
    """`name` with `.tag` before its extension: `a/invoices.jsonl` -> `a/invoices.<tag>.jsonl`. Only the last
    segment of a path is changed; a name without an extension (or a dot file) gets the tag at its end."""
    stem, ext = posixpath.splitext(name)
    return f"{stem}.{tag}{ext}"


def numbered(name: str, limit: int) -> Iterator[str]:
    """`name`, then `name` numbered 2, 3, ... up to `limit` (`invoices.jsonl`, `invoices.2.jsonl`, ...)."""
    yield name
    for n in range(2, limit + 1):
        yield tagged(name, str(n))


def stamp(mtime: int | float) -> str:
    """A file's modification time as a name tag: `20261201T083005Z` (UTC, to the second)."""
    return f"{datetime.fromtimestamp(int(mtime), UTC):%Y%m%dT%H%M%SZ}"


def stamped(name: str, mtime: int | float, limit: int) -> Iterator[str]:
    """`name`, then `name` tagged with the file's mtime, then that numbered 2, 3, ... up to `limit`
    (`orders.csv`, `orders.20261201T083005Z.csv`, `orders.20261201T083005Z.2.csv`, ...). The mtime tag keeps
    the search short in a folder that collects the same name every day; the counter settles same-second
    collisions (the same name in two recursive folders)."""
    yield name
    yield from numbered(tagged(name, stamp(mtime)), limit)
