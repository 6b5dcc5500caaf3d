"""Reading partners.yaml: YAML with line numbers, ${ENV} filled in, defaults applied, every problem listed."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.catalog.errors import CatalogError, Loc, Problem, _Invalid
from shared.catalog.interpolation import _interpolate
from shared.catalog.mailbox import Mailbox
from shared.catalog.model import (
    Catalog,
    Partner,
    _check_senders,
    _cross_check,
    _duplicate_message,
    partner_sftp_destinations,
)
from shared.catalog.problems import _convert, _format_loc, _problem, _unknown_key_message
from shared.catalog.routes import Destination, SftpDestination
from shared.catalog.sftp import SftpSource

MAX_DEPTH = 64
"""A catalogue nested deeper than this (lists and mappings) is refused: no real one comes close, and every step
after the YAML parser walks the document recursively."""
MAX_VALUES = 200_000
"""A catalogue holding more values than this, counting each use of an alias in full, is refused (an alias bomb
such as "billion laughs" would otherwise expand to billions of values)."""

_TOP_LEVEL = ("partners", "defaults")
_DEFAULT_BLOCKS: dict[str, type[BaseModel]] = {"sftp": SftpSource, "mailbox": Mailbox}
# Fields that only make sense together: a partner setting one of them inherits none of the others.
_DEFAULT_GROUPS: dict[str, tuple[frozenset[str], ...]] = {
    "sftp": (frozenset({"post_action", "move_to", "suffix"}),),
    "mailbox": (frozenset({"after_action", "move_to"}),),
}


def load_catalog(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Catalog:
    """Read and validate a catalogue file. Raises CatalogError listing every problem found."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise CatalogError(["file not found"], source=source) from exc
    except OSError as exc:
        raise CatalogError([f"cannot read the file: {exc.strerror or exc}"], source=source) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_and_column(data, exc.start)
        problem = Problem("", f"is not UTF-8 text (bad byte 0x{data[exc.start]:02x} at line {line}, column {column})",
                          line)
        raise CatalogError([problem], source=source) from exc
    return parse_catalog(text, source=source, env=env)


def _line_and_column(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters) of a byte offset in UTF-8 text."""
    start = data.rfind(b"\n", 0, offset) + 1
    return data.count(b"\n", 0, offset) + 1, len(data[start:offset].decode("utf-8", "replace")) + 1


def parse_catalog(
    document: str | Mapping[str, Any], *, source: str = "<catalog>", env: Mapping[str, str] | None = None
) -> Catalog:
    """Validate a catalogue given as YAML text or an already-parsed mapping.

    `${NAME}` and `${NAME:-default}` in string values are filled from `env` (default: os.environ) first.
    """
    positions: dict[Loc, int] = {}
    if isinstance(document, str):
        raw, positions = _load_yaml(document, source)
    else:
        raw = document
    if raw is None:
        raise CatalogError(["the catalogue is empty; it needs a top-level partners: list"], source=source)
    if not isinstance(raw, Mapping):
        raise CatalogError([Problem("", "the top level must be a mapping with a partners: list", positions.get(()))],
                           source=source)

    pre: list[tuple[Loc, str]] = []  # found before validation (env, inline keys): they hide what follows from them
    problems: list[tuple[Loc, str, Loc]] = []  # (where, message, scope of the check that found it)

    def note(loc: Loc, message: str) -> None:
        problems.append((loc, message, loc))

    try:
        data = _interpolate(raw, os.environ if env is None else env, (), pre)
    except _Invalid as exc:
        raise CatalogError([_problem(loc, msg, raw, positions) for loc, msg in exc.items], source=source) from exc

    for key in data:
        if key not in _TOP_LEVEL:
            close = difflib.get_close_matches(str(key), _TOP_LEVEL, n=1)
            note((key,), f"unknown key; {f'did you mean {close[0]}?' if close else 'use partners and defaults'}")
    partners_raw = data.get("partners")
    if "partners" not in data:
        note(("partners",), "is required (a list of partners)")
    elif partners_raw is not None and not isinstance(partners_raw, list):
        note(("partners",), "must be a list of partners")
    if not isinstance(partners_raw, list):
        partners_raw = []

    provenance = _apply_defaults(data, partners_raw, note)

    validated: list[Partner] = []
    places: list[int] = []
    destinations: list[tuple[Loc, SftpDestination]] = []
    for index, item in enumerate(partners_raw):
        if not isinstance(item, Mapping):
            note(("partners", index), "must be a mapping with id, name and the partner's settings")
            continue
        try:
            partner = Partner.model_validate(item)
        except ValidationError as exc:
            problems += _convert(exc, Partner, ("partners", index))
            found_here = _raw_sftp_destinations(item.get("routes"))
            outbound = item.get("outbound")
            if isinstance(outbound, Mapping):
                found_here += _raw_sftp_destinations(outbound.get("routes"), ("outbound",))
        else:
            validated.append(partner)
            places.append(index)
            found_here = list(partner_sftp_destinations(partner))
        destinations += [(("partners", index, *loc), dest) for loc, dest in found_here]

    first: dict[str, int] = {}
    targets: dict[str, tuple[bool, bool]] = {}
    for index, item in enumerate(partners_raw):
        partner_id = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(partner_id, str):
            continue
        if partner_id in first:
            note(("partners", index, "id"), _duplicate_message(first[partner_id], index))
        else:
            first[partner_id] = index
            sftp = item.get("sftp")
            has_sftp = isinstance(sftp, Mapping)
            targets[partner_id] = (has_sftp, has_sftp and bool(sftp.get("outbound_dir")))
    for loc, message in _cross_check(destinations, targets) + _check_senders(validated, places):
        note(loc, message)

    found = _report(pre, problems, provenance, data, positions)
    if found:
        raise CatalogError(found, source=source)
    return Catalog(partners=validated, source=source)


_DESTINATION_ADAPTER: TypeAdapter[Destination] = TypeAdapter(Destination)


def _raw_sftp_destinations(raw_routes: Any, prefix: Loc = ()) -> list[tuple[Loc, SftpDestination]]:
    """SFTP destinations of a partner that failed validation which are valid on their own, to cross-check."""
    found: list[tuple[Loc, SftpDestination]] = []
    for r_index, route in enumerate(raw_routes if isinstance(raw_routes, list) else []):
        raw_destinations = route.get("destinations") if isinstance(route, Mapping) else None
        for d_index, raw in enumerate(raw_destinations if isinstance(raw_destinations, list) else []):
            try:
                dest = _DESTINATION_ADAPTER.validate_python(raw)
            except ValidationError:
                continue  # its own errors are already reported
            if isinstance(dest, SftpDestination):
                found.append(((*prefix, "routes", r_index, "destinations", d_index), dest))
    return found


def _report(
    pre: list[tuple[Loc, str]],
    problems: list[tuple[Loc, str, Loc]],
    provenance: Mapping[Loc, Loc],
    data: Any,
    positions: Mapping[Loc, int],
) -> list[Problem]:
    """Final list: defaults mapped to where they are written, consequences of earlier problems dropped, sorted."""

    def origin(loc: Loc) -> Loc:
        return provenance.get(loc[:4], loc[:4]) + loc[4:]

    def under(loc: Loc, base: Loc) -> bool:
        return loc[: len(base)] == base

    blocked = [loc for loc, _ in pre]
    kept: list[tuple[Loc, str]] = list(pre)
    for loc, message, scope in problems:
        loc, scope = origin(loc), origin(scope)
        # A bad ${VAR} or pasted key explains errors at that value and cross-field checks around it.
        if any(under(loc, b) or under(b, scope) for b in blocked):
            continue
        kept.append((loc, message))
    found = [_problem(loc, message, data, positions) for loc, message in dict.fromkeys(kept)]
    found.sort(key=lambda p: (bool(p.path), p.line or 0))
    return found


def _apply_defaults(
    data: Mapping[str, Any], partners: list[Any], note: Callable[[Loc, str], None]
) -> dict[Loc, Loc]:
    """Merge `defaults.sftp` / `defaults.mailbox` under each partner's block; map inherited keys to their origin."""
    defaults = data.get("defaults")
    provenance: dict[Loc, Loc] = {}
    if defaults is None:
        return provenance
    if not isinstance(defaults, Mapping):
        note(("defaults",), "must be a mapping with sftp and/or mailbox defaults")
        return provenance
    usable: dict[str, dict[str, Any]] = {}
    for block, value in defaults.items():
        model = _DEFAULT_BLOCKS.get(block)
        if model is None:
            note(("defaults", block), "unknown key; defaults can hold sftp and mailbox")
            continue
        if not isinstance(value, Mapping):
            note(("defaults", block), "must be a mapping of keys to values")
            continue
        usable[block] = {}
        for key, item in value.items():
            if key in model.model_fields:
                usable[block][key] = item
            else:
                note(("defaults", block, key), _unknown_key_message(str(key), model))
    for index, partner in enumerate(partners):
        if not isinstance(partner, dict):
            continue
        for block, values in usable.items():
            own = partner.get(block)
            if not isinstance(own, dict):
                continue
            taken = {key for group in _DEFAULT_GROUPS[block] if group & own.keys() for key in group}
            inherited = {k: v for k, v in values.items() if k not in own and k not in taken}
            partner[block] = {**own, **inherited}
            for key in inherited:
                provenance[("partners", index, block, key)] = ("defaults", block, key)
    return provenance


# ---------------------------------------------------------------------------------------------------------
# YAML with line numbers and duplicate-key detection


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, nesting past MAX_DEPTH, recursive aliases and documents that
    expand past MAX_VALUES, each as a YAML error with its line (before anything recurses or expands)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()
        self._depth = 0
        self._open: set[str] = set()  # anchors of the nodes being composed: an alias to one is a cycle
        self._sizes: dict[int, int] = {}  # id(node) -> values it holds with its aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise yaml.composer.ComposerError(
                    None, None, f"alias *{event.anchor} refers to a value that contains it (a recursive alias)",
                    event.start_mark,
                )
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor is not None:
                self._open.discard(anchor)
        if node is None:
            return None
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self._sizes.get(id(item), 1) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self._sizes.get(id(k), 1) + self._sizes.get(id(v), 1) for k, v in node.value)
        if size > MAX_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"expands to more than {MAX_VALUES} values (counting each use of an alias in full)",
                node.start_mark,
            )
        self._sizes[id(node)] = size
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. 2024-13-45 read as a date, an int of 5000 digits
            if node.tag == "tag:yaml.org,2002:int":
                message = f"cannot read this value: a number of {len(str(node.value))} digits is too long"
            else:
                message = f"cannot read this value: {exc}"
            raise yaml.constructor.ConstructorError(None, None, message, node.start_mark) from exc

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[str, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key_node.value!r} (first at line {seen[key_node.value].line + 1})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = _line_and_column(text.encode("utf-8", "surrogatepass"),
                                        len(text[:exc.position].encode("utf-8", "surrogatepass")))
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return Problem("", f"invalid YAML at line {line}, column {column}: the character #x{character:04x} is not "
                           "allowed (control characters other than tab and line breaks cannot appear in YAML)")
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}"
        problem = exc.problem or "cannot parse this"
        if exc.context and exc.context_mark is not None:
            context = f"{exc.context} at line {exc.context_mark.line + 1}"
            if problem.startswith("but "):  # e.g. "expected a single document ..., but found another document"
                return Problem("", f"{where}: {context}, {problem}")
            return Problem("", f"{where}: {problem} ({context})")
        return Problem("", f"{where}: {problem}")
    return Problem("", f"invalid YAML: {exc}")


def _load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    try:
        loader = _Loader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise CatalogError([_yaml_problem(exc, text)], source=source) from exc
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise CatalogError([_yaml_problem(exc, text)], source=source) from exc
    finally:
        loader.dispose()
    positions: dict[Loc, int] = {}
    keys: dict[int, tuple[Loc, yaml.ScalarNode]] = {}
    if node is not None:
        positions[()] = node.start_mark.line + 1
        _record_positions(node, (), positions, set(), keys)
    if keys:
        raise CatalogError([_key_problem(loc, key, data) for loc, key in keys.values()], source=source)
    return data, positions


_KEY_KINDS = {"null": "null", "bool": "true/false", "int": "a number", "float": "a number", "timestamp": "a date"}


def _key_problem(loc: Loc, key: yaml.ScalarNode, data: Any) -> Problem:
    kind = _KEY_KINDS.get(key.tag.rsplit(":", 1)[-1], f"something other than text ({key.tag})")
    path = f"{_format_loc(loc, data)}[{json.dumps(key.value)}]"
    message = f"is not text: YAML reads this key as {kind}; quote it ({json.dumps(key.value)})"
    return Problem(path, message, key.start_mark.line + 1)


def _record_positions(node: yaml.Node, loc: Loc, out: dict[Loc, int], active: set[int],
                      keys: dict[int, tuple[Loc, yaml.ScalarNode]]) -> None:
    """Line of every key and item; mapping keys that are not text (1.5, ~, a date, true) go to `keys`."""
    if id(node) in active:
        return  # a recursive alias; nothing to add
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag not in (_STR, _MERGE):
                    keys.setdefault(id(key_node), (loc, key_node))  # once, where first met (aliases repeat it)
                out[(*loc, key_node.value)] = key_node.start_mark.line + 1
                _record_positions(value_node, (*loc, key_node.value), out, active, keys)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            out[(*loc, index)] = item.start_mark.line + 1
            _record_positions(item, (*loc, index), out, active, keys)
    active.discard(id(node))
