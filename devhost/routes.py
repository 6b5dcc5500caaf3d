"""ASP.NET-style route templates as the Functions host matches them: ``{id}``, ``{id:int}``, ``{id?}``, ``{*rest}``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from dateutil.parser import isoparse

from devhost.config import ConfigError

_PARAM = re.compile(r"\{([^{}]+)\}")

# Constraint -> (regex for the value, extra check). Checks get the raw value and the constraint's args.
_TYPE_PATTERNS: dict[str, str] = {
    "int": r"-?\d+", "long": r"-?\d+", "alpha": r"[A-Za-z]+", "bool": r"(?i:true|false)",
    "guid": r"\{?[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?",
    "double": r"-?\d+(?:\.\d+)?", "float": r"-?\d+(?:\.\d+)?", "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"[^/]+",
}


def _bounded(fn: Callable[[str, list[str]], bool]) -> Callable[[str, list[str]], bool]:
    def check(value: str, args: list[str]) -> bool:
        try:
            return fn(value, args)
        except ValueError:
            return False
    return check


def _is_datetime(value: str, _: list[str]) -> bool:
    isoparse(value)
    return True


def _is_guid(value: str, _: list[str]) -> bool:
    uuid.UUID(value)
    return True


_CHECKS: dict[str, Callable[[str, list[str]], bool]] = {
    "int": _bounded(lambda v, _: -(2**31) <= int(v) < 2**31),
    "datetime": _bounded(_is_datetime),
    "guid": _bounded(_is_guid),
    "minlength": _bounded(lambda v, a: len(v) >= int(a[0])),
    "maxlength": _bounded(lambda v, a: len(v) <= int(a[0])),
    "length": _bounded(lambda v, a: len(v) == int(a[0]) if len(a) == 1 else int(a[0]) <= len(v) <= int(a[1])),
    "min": _bounded(lambda v, a: int(v) >= int(a[0])),
    "max": _bounded(lambda v, a: int(v) <= int(a[0])),
    "range": _bounded(lambda v, a: int(a[0]) <= int(v) <= int(a[1])),
    "regex": _bounded(lambda v, a: re.fullmatch(",".join(a), v) is not None),
}


@dataclass
class _Param:
    name: str
    constraints: list[tuple[str, list[str]]]
    optional: bool
    catch_all: bool


def _parse_param(text: str, template: str) -> _Param:
    catch_all = text.startswith("*")
    text = text.lstrip("*")
    optional = text.endswith("?")
    text = text.rstrip("?")
    if "=" in text:
        raise ConfigError(f"route {template!r}: default values in route templates are not supported by devhost")
    name, *raw_constraints = text.split(":")
    constraints: list[tuple[str, list[str]]] = []
    for raw in raw_constraints:
        m = re.fullmatch(r"(\w+)(?:\((.*)\))?", raw)
        if not m or (m[1] not in _TYPE_PATTERNS and m[1] not in _CHECKS):
            raise ConfigError(f"route {template!r}: unsupported route constraint {raw!r}")
        constraints.append((m[1], [a.strip() for a in m[2].split(",")] if m[2] else []))
    if not re.fullmatch(r"\w+", name):
        raise ConfigError(f"route {template!r}: bad parameter name {name!r}")
    return _Param(name, constraints, optional, catch_all)


class RouteTemplate:
    """One compiled template; ``match(path)`` gives the route params or None."""

    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        self._params: dict[str, _Param] = {}
        parts: list[str] = []
        ranks: list[int] = []
        segments = self.template.split("/") if self.template else []
        for index, segment in enumerate(segments):
            pieces = _PARAM.split(segment)  # literal, param, literal, param, ...
            seg_regex = ""
            rank = 1
            seg_params: list[_Param] = []
            for i, piece in enumerate(pieces):
                if i % 2 == 0:
                    seg_regex += re.escape(piece)
                    continue
                param = _parse_param(piece, template)
                if param.catch_all and index != len(segments) - 1:
                    raise ConfigError(f"route {template!r}: a catch-all parameter must be last")
                self._params[param.name] = param
                seg_params.append(param)
                pattern = ".*" if param.catch_all else "[^/]+"
                for cname, _ in param.constraints:
                    if cname in _TYPE_PATTERNS and not param.catch_all:
                        pattern = _TYPE_PATTERNS[cname]
                seg_regex += f"(?P<{param.name}>{pattern})"
                rank = max(rank, 5 if param.catch_all else 4 if param.optional else 2 if param.constraints else 3)
            only_param = len(pieces) == 3 and pieces[0] == "" and pieces[2] == ""
            opt = only_param and (seg_params[0].optional or seg_params[0].catch_all)
            parts.append(f"(?:/{seg_regex})?" if opt else f"/{seg_regex}")
            ranks.append(rank)
        self._regex = re.compile("".join(parts) + "/?", re.IGNORECASE)
        # Lower sorts first: literals before constrained params before params before catch-alls.
        self.precedence = (tuple(ranks), -len(segments))

    @property
    def params(self) -> list[str]:
        return list(self._params)

    def match(self, path: str) -> dict[str, str] | None:
        """Match a request path (without the route prefix), e.g. ``/partners/acme/poll``."""
        m = self._regex.fullmatch("/" + path.strip("/") if path.strip("/") else "")
        if m is None:
            return None
        values: dict[str, str] = {}
        for name, param in self._params.items():
            raw = m.group(name)
            if raw is None or raw == "":
                if not (param.optional or param.catch_all):
                    return None
                continue
            value = unquote(raw)
            for cname, args in param.constraints:
                check = _CHECKS.get(cname)
                if check is not None and not check(value, args):
                    return None
            values[name] = value
        return values
