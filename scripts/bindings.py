#!/usr/bin/env python3
"""The trigger bindings declared in function_app.py and functions/, read from the source (ast; stdlib only).

Used by scripts/azd/postdeploy.sh (`python3 scripts/bindings.py eventgrid`: one "function container" line per
Event Grid trigger (its container from shared/resources.py EVENT_GRID_TRIGGERS), and per blob trigger with
source="EventGrid", for the Event Grid subscriptions) and by the infra tests (the settings
the Bicep sets must cover every %SETTING% and connection the bindings name).
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SETTING = re.compile(r"%([A-Za-z0-9_]+)%")


@dataclass(frozen=True)
class Binding:
    function: str  # the function's name in the host (function_name decorator, else the def name)
    kind: str  # decorator name: queue_trigger, blob_trigger, timer_trigger, route, durable_client_input, ...
    args: dict[str, object] = field(default_factory=dict)  # literal keyword arguments

    @property
    def settings(self) -> set[str]:
        """App settings named as %NAME% in the binding's string arguments."""
        return {m for v in self.args.values() if isinstance(v, str) for m in _SETTING.findall(v)}

    @property
    def connection(self) -> str | None:
        value = self.args.get("connection")
        return value if isinstance(value, str) else None


def source_files(root: Path = ROOT) -> list[Path]:
    return [root / "function_app.py", *sorted((root / "functions").glob("*.py"))]


def scan(paths: list[Path] | None = None) -> list[Binding]:
    """Every decorator call with keyword arguments on a function definition, with its literal arguments."""
    found: list[Binding] = []
    for path in paths or source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name = node.name
            calls = [d for d in node.decorator_list if isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)]
            for call in calls:
                if isinstance(call.func, ast.Attribute) and call.func.attr == "function_name" and call.args:
                    first = call.args[0]
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        name = first.value
            for call in calls:
                assert isinstance(call.func, ast.Attribute)
                if call.func.attr == "function_name":
                    continue
                args = {k.arg: k.value.value for k in call.keywords
                        if k.arg and isinstance(k.value, ast.Constant)}
                found.append(Binding(name, call.func.attr, args))
    return found


def event_grid_triggers_of_resources(path: Path | None = None) -> dict[str, str]:
    """EVENT_GRID_TRIGGERS of shared/resources.py (function name -> container), read with ast."""
    tree = ast.parse((path or ROOT / "shared" / "resources.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "EVENT_GRID_TRIGGERS" for t in targets) and node.value:
                value = ast.literal_eval(node.value)
                if isinstance(value, dict):
                    return {str(k): str(v) for k, v in value.items()}
    raise ValueError("shared/resources.py has no literal EVENT_GRID_TRIGGERS")


def event_grid_blob_triggers(bindings: list[Binding] | None = None) -> list[tuple[str, str]]:
    """(function name, container) of each Event Grid trigger (its container from EVENT_GRID_TRIGGERS in
    shared/resources.py), and of each blob trigger whose source is Event Grid (its path's container). An Event
    Grid trigger that list does not name is an error: nothing would subscribe it."""
    containers = event_grid_triggers_of_resources()
    out = []
    for b in bindings if bindings is not None else scan():
        path = b.args.get("path")
        if b.kind == "blob_trigger" and b.args.get("source") == "EventGrid" and isinstance(path, str):
            out.append((b.function, path.split("/", 1)[0]))
        elif b.kind == "event_grid_trigger":
            if b.function not in containers:
                raise ValueError(f"Event Grid trigger {b.function} is not in EVENT_GRID_TRIGGERS (shared/resources.py)")
            out.append((b.function, containers[b.function]))
    return out


def main(argv: list[str]) -> int:
    if argv[1:] == ["eventgrid"]:
        for function, container in event_grid_blob_triggers():
            print(function, container)
        return 0
    print("usage: scripts/bindings.py eventgrid", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
