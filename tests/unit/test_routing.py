"""Route matching and blob path templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.domain.routing import plan_route, render_path

WHEN = datetime(2026, 3, 7, 23, 59, tzinfo=UTC)


@dataclass
class Match:
    file_glob: str = "*"
    file_regex: str | None = None
    type: str | None = None


@dataclass
class Route:
    name: str
    match: Match = field(default_factory=Match)
    default: bool = False
    destinations: list[dict[str, Any]] = field(default_factory=lambda: [{"kind": "event"}])


ROUTES = [
    Route("fallback", default=True, destinations=[{"kind": "blob", "path": "misc/{name}"}]),
    Route("invoices", Match(file_glob="invoices-*.csv"), destinations=[{"kind": "blob", "path": "inv/{name}"}]),
    Route("orders", Match(file_regex=r"^ORD\d{6}\.(json|xml)$", type="json")),
]


@pytest.mark.parametrize(("name", "ftype", "route"), [
    ("invoices-2026.csv", "csv", "invoices"),
    ("ORD123456.json", "json", "orders"),
    ("ORD123456.xml", "xml", "fallback"),  # regex matches but type does not
    ("other.bin", "binary", "fallback"),
])
def test_first_matching_route_wins_else_default(name: str, ftype: str, route: str) -> None:
    assert plan_route(ROUTES, file_name=name, file_type=ftype).route == route


def test_no_route_and_no_default_says_why() -> None:
    plan = plan_route(ROUTES[1:], file_name="x.bin", file_type="binary")
    assert plan.destinations == []
    assert plan.reason == "no route matches 'x.bin' (type binary) and there is no default route"


def test_render_path_fills_every_placeholder() -> None:
    path = render_path("{partner}/{yyyy}/{MM}/{dd}/{job_id}/{stem}.{ext}/{name}", partner="acme",
                       name="inv.csv", job_id="job-1", when=WHEN)
    assert path == "acme/2026/03/07/job-1/inv.csv/inv.csv"


def test_render_path_refuses_unknown_placeholders_and_escapes() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \{foo\}"):
        render_path("{foo}/{name}", partner="p", name="n", job_id="j", when=WHEN)
    with pytest.raises(ValueError, match="leaves its container"):
        render_path("../{name}", partner="p", name="n", job_id="j", when=WHEN)
