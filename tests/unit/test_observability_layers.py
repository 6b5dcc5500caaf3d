"""shared.observability's modules import one way only, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "shared" / "observability"
# Bottom first: a module may import only the ones before it.
LAYERS = ("redaction", "tracing", "logs", "sdk", "setup")


def _imported(module: str) -> set[str]:
    """Every module an `import` or `from ... import` anywhere in the file names (submodules spelled out)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_the_layers_are_every_module_of_the_package() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == {"__init__", *LAYERS}


@pytest.mark.parametrize("module", LAYERS)
def test_a_module_imports_only_lower_layers_and_nothing_else_of_ours(module: str) -> None:
    # "shared.observability.tracing.span" -> "shared.observability.tracing"
    ours = {".".join(name.split(".")[:3]) for name in _imported(module) if name.split(".")[0] == "shared"}
    lower = {f"shared.observability.{m}" for m in LAYERS[:LAYERS.index(module)]}
    allowed = {"shared.observability", *lower}
    assert ours <= allowed, f"{module} imports {sorted(ours - allowed)}"


@pytest.mark.parametrize("module", ["redaction", "tracing", "logs"])
def test_the_api_side_never_imports_the_sdk(module: str) -> None:
    heavy = {n for n in _imported(module) if n.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "azure"))}
    assert heavy == set()


def test_the_package_init_imports_nothing() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
