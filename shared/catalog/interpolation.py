"""`${NAME}` and `${NAME:-default}` in catalogue string values, filled from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared.catalog.common import _PEM, _PEM_MESSAGE
from shared.catalog.errors import Loc, _Invalid

_ENV_REF = re.compile(r"\$\$\{|\$\{([^{}]*)\}|\$\{")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _interpolate_text(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    errors: list[str] = []

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":  # noqa: S105 - the escape for a literal ${
            return "${"
        body = match.group(1)
        if body is None:
            errors.append("has ${ without a closing }; write $${ for a literal ${")
            return token
        name, separator, default = body.partition(":-")
        if not _ENV_NAME.fullmatch(name):
            errors.append(f"${{{body}}} is not a variable reference; use ${{NAME}} or ${{NAME:-default}}")
            return token
        found = env.get(name)
        if found is None or (separator and found == ""):
            if separator:
                return default
            errors.append(f"environment variable {name} is not set and has no default")
            return token
        return found

    return _ENV_REF.sub(replace, value), errors


def _interpolate(data: Any, env: Mapping[str, str], loc: Loc, problems: list[tuple[Loc, str]], depth: int = 0) -> Any:
    """A copy of the document with ${VAR} filled in string values; also flags inline PEM keys."""
    if depth > 64:
        raise _Invalid((loc, "is nested too deeply (a recursive YAML alias?)"))
    if isinstance(data, str):
        value, errors = _interpolate_text(data, env) if "${" in data else (data, [])
        problems.extend((loc, error) for error in errors)
        if not errors and value.lstrip().startswith(_PEM):
            problems.append((loc, _PEM_MESSAGE))
        return value
    if isinstance(data, Mapping):
        problems.extend(((*loc, key), "is not text: keys must be text") for key in data if not isinstance(key, str))
        return {key: _interpolate(value, env, (*loc, key), problems, depth + 1) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_interpolate(value, env, (*loc, i), problems, depth + 1) for i, value in enumerate(data)]
    return data
