"""Routing rules: which route a file takes, and where a blob destination puts it (pure)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.domain.globs import glob_match

PLACEHOLDERS = ("partner", "yyyy", "MM", "dd", "name", "job_id", "stem", "ext")
#: Where a blob destination puts a job's output unless its `path` says otherwise: unique per job, so the same
#: file name twice in one day (a re-send, two recursive folders, names that sanitise alike) never collides.
DEFAULT_BLOB_PATH = "{partner}/{yyyy}/{MM}/{dd}/{job_id}/{name}"
#: What a blob destination does when its path is taken by another job's blob (`on_exists`).
ON_EXISTS = ("fail", "overwrite", "unique")
DEFAULT_ON_EXISTS = "fail"
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_]+)\}")


@dataclass(frozen=True)
class RoutePlan:
    route: str
    destinations: list[dict[str, Any]]
    reason: str = ""


def _matches(route: Any, file_name: str, file_type: str) -> bool:
    match = getattr(route, "match", None)
    if match is None:
        return True
    glob = getattr(match, "file_glob", None) or "*"
    if not glob_match(file_name, glob):
        return False
    regex = getattr(match, "file_regex", None)
    if regex and not re.search(regex, file_name):
        return False
    wanted_type = getattr(match, "type", None)
    return not (wanted_type and file_type and str(wanted_type) != file_type)


def plan_route(routes: Sequence[Any], *, file_name: str, file_type: str = "") -> RoutePlan:
    """The first non-default route that matches, else the default route, else none (with the reason)."""
    for route in routes:
        if not getattr(route, "default", False) and _matches(route, file_name, file_type):
            return RoutePlan(route.name, [_dump(d) for d in route.destinations])
    for route in routes:
        if getattr(route, "default", False):
            return RoutePlan(route.name, [_dump(d) for d in route.destinations])
    kind = f" (type {file_type})" if file_type else ""
    return RoutePlan("", [], f"no route matches '{file_name}'{kind} and there is no default route")


def _dump(destination: Any) -> dict[str, Any]:
    if hasattr(destination, "model_dump"):
        return dict(destination.model_dump(mode="json"))
    return dict(destination)


def fill_placeholders(template: str, *, partner: str, name: str, job_id: str, when: datetime,
                      what: str = "path template", clean: Callable[[str], str] = str) -> str:
    """`template` with each placeholder (`PLACEHOLDERS`) replaced by `clean(value)`. An unknown placeholder is
    refused: a ValueError that names the `what` (the catalogue validates templates too)."""
    stem, ext = posixpath.splitext(name)
    values = {"partner": partner, "yyyy": f"{when.year:04d}", "MM": f"{when.month:02d}", "dd": f"{when.day:02d}",
              "name": name, "job_id": job_id, "stem": stem, "ext": ext.lstrip(".")}

    def fill(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise ValueError(f"unknown placeholder {{{key}}} in {what} '{template}'")
        return clean(values[key])

    return _PLACEHOLDER_RE.sub(fill, template)


def render_path(template: str, *, partner: str, name: str, job_id: str, when: datetime) -> str:
    """Fill a blob path template. Unknown placeholders are refused (the catalogue validates them too)."""
    path = fill_placeholders(template, partner=partner, name=name, job_id=job_id, when=when).lstrip("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"path template '{template}' produced a path that leaves its container")
    return "/".join(parts)
