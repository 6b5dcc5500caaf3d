"""How every glob in the catalogue matches a file name: shell-style, case-insensitive."""

from __future__ import annotations

import fnmatch


def glob_match(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())
