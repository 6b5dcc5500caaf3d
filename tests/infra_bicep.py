"""Reading infra/*.bicep in tests: pycep-parser's JSON, plus the little evaluation the tests need.

pycep renders an identifier and a string literal the same way ("pollQueue" vs "poll-requests"), so a string
that names a variable or parameter of the file is read as a reference to it; interpolations (`${x}-poison`),
`concat(...)` and `union(...)` of resolvable values are evaluated; anything else (resource properties,
module outputs) resolves to None.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
_INTERPOLATION = re.compile(r"\$\{(\w+)\}")


@cache
def parse(relative: str) -> dict[str, Any]:
    """The pycep JSON of infra/<relative> (raises on a syntax error)."""
    return BicepParser().parse(file_path=INFRA / relative)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def resolve(doc: dict[str, Any], value: Any, params: dict[str, Any] | None = None) -> Any:
    """Evaluate `value` in `doc` as far as literals go; `params` supplies a module's parameter values."""
    variables = doc.get("variables", {})
    if isinstance(value, str):
        if params is not None and value in params:
            return params[value]
        if value in variables:
            return resolve(doc, variables[value]["value"], params)
        if value in doc.get("parameters", {}):
            default = doc["parameters"][value].get("default")
            return None if default is None else resolve(doc, default, params)

        def sub(m: re.Match[str]) -> str:
            inner = resolve(doc, m.group(1), params)
            return inner if isinstance(inner, str) else f"<{m.group(1)}>"

        return _INTERPOLATION.sub(sub, value)
    if isinstance(value, list):
        return [resolve(doc, v, params) for v in value]
    if isinstance(value, dict) and "function" in value:
        fn = value["function"]
        args = [resolve(doc, a, params) for a in (fn.get("parameters") or {}).values()]
        if fn["type"] == "concat" and all(isinstance(a, list) for a in args):
            return [x for a in args for x in a]
        if fn["type"] == "union" and all(isinstance(a, dict) for a in args):
            merged: dict[str, Any] = {}
            for a in args:
                merged.update(a)
            return merged
        return None
    if isinstance(value, dict) and "operator" in value:
        return None
    if isinstance(value, dict):
        return {_key(k): resolve(doc, v, params) for k, v in value.items()}
    return value


def _key(key: str) -> str:
    """Object keys keep their Bicep quotes in pycep ("'azd-env-name'")."""
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's body; a conditional one (`= if (...) {...}`) nests it one level down."""
    cfg = declaration["config"]
    return cfg["config"] if "condition" in cfg and "config" in cfg else cfg


def module_params(module: str) -> dict[str, Any]:
    """main.bicep's parameters for `module` (symbolic name), resolved in main.bicep."""
    main = parse("main.bicep")
    raw = body(main["modules"][module])["params"]
    return {k: resolve(main, v) for k, v in raw.items()}


def app_settings() -> dict[str, Any]:
    """Every app setting the function app gets: api.bicep's appSettings loop over items(<var>), that var
    evaluated with the `appSettings` main.bicep passes in. Values that are not literals are None."""
    api = parse("app/api.bicep")
    site = api["resources"]["functionApp"]["config"]["properties"]["siteConfig"]
    loop = site["appSettings"]["loop_type"]["detail"]["array_name"]["function"]
    assert loop["type"] == "items", loop
    (source,) = loop["parameters"].values()
    settings = resolve(api, source, params={"appSettings": module_params("api")["appSettings"]})
    assert isinstance(settings, dict), settings
    return settings


def bindings_module() -> ModuleType:
    """scripts/bindings.py (a standalone script the azd hook runs) as a module."""
    spec = importlib.util.spec_from_file_location("wharf_bindings", ROOT / "scripts" / "bindings.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module
