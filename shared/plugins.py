"""Third-party plugins: destination kinds, transforms and validators from Python entry points.

A package adds them in its pyproject.toml:

    [project.entry-points."wharf.destinations"]
    s3 = "wharf_s3:S3Destination"          # a shared.services.destinations.DestinationKind subclass
    [project.entry-points."wharf.transforms"]
    fixed_width = "wharf_fw:FixedWidth"     # a shared.services.transforms.Transform subclass
    [project.entry-points."wharf.validators"]
    iban = "wharf_iban:IbanValidator"       # a shared.services.validators.Validator subclass

`load_plugins()` reads the entry points once per process (importlib.metadata) and registers each under its
entry-point name. A plugin that fails to import, is not the right kind of class or takes a name already taken
is recorded with the reason and skipped: it never stops the app (a route naming it is then a catalogue error,
"unknown destination kind"). `wharf plugins list` shows the built-ins, the plugins and these errors.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from shared.observability.tracing import span

log = logging.getLogger(__name__)

GROUPS = {"wharf.destinations": "destination", "wharf.transforms": "transform", "wharf.validators": "validator"}


@dataclass(frozen=True)
class PluginInfo:
    """One registered (or refused) destination kind, transform or validator."""

    kind: str  # destination | transform | validator
    name: str
    source: str  # "wharf" for built-ins, else the distribution "name version"
    target: str = ""  # the entry point's module:attribute
    error: str = ""  # why it was not registered ("" when it was)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "source": self.source, "target": self.target,
                "error": self.error}


_lock = threading.Lock()
_loaded: list[PluginInfo] | None = None


def _source(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown package)"
    return f"{dist.metadata['Name'] or dist.name} {dist.version}"


def _register(kind: str, name: str, obj: Any, source: str) -> None:
    if kind == "destination":
        from shared.services.destinations import DESTINATIONS, DestinationKind

        if not (isinstance(obj, type) and issubclass(obj, DestinationKind)):
            raise TypeError(f"{obj!r} is not a DestinationKind subclass")
        DESTINATIONS.add(name, obj, source=source)
    elif kind == "transform":
        from shared.services.transforms import TRANSFORMS, Transform

        if not (isinstance(obj, type) and issubclass(obj, Transform)):
            raise TypeError(f"{obj!r} is not a Transform subclass")
        if name in TRANSFORMS:
            raise ValueError(f"transform {name!r} is already registered")
        TRANSFORMS.register(name)(obj)
    else:
        from shared.services.validators import VALIDATORS, Validator

        if not (isinstance(obj, type) and issubclass(obj, Validator)):
            raise TypeError(f"{obj!r} is not a Validator subclass")
        VALIDATORS.add(name, obj, source=source)


def load_plugins() -> list[PluginInfo]:
    """Discover and register every plugin (once per process); what was found, errors included."""
    global _loaded
    with _lock:
        if _loaded is not None:
            return list(_loaded)
        found: list[PluginInfo] = []
        with span("plugins.load") as s:
            for group, kind in GROUPS.items():
                for ep in entry_points(group=group):
                    source = _source(ep)
                    try:
                        _register(kind, ep.name, ep.load(), source)
                    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
                        reason = f"{type(exc).__name__}: {exc}".strip()[:500]
                        log.warning("plugin %s %s from %s not loaded: %s", kind, ep.name, source, reason)
                        found.append(PluginInfo(kind, ep.name, source, ep.value, reason))
                    else:
                        log.info("plugin %s %s loaded from %s", kind, ep.name, source)
                        found.append(PluginInfo(kind, ep.name, source, ep.value))
            s.set_attribute("wharf.plugins", len(found))
            s.set_attribute("wharf.plugin_errors", sum(1 for p in found if p.error))
        _loaded = found
        return list(found)


def list_plugins() -> list[PluginInfo]:
    """Built-ins and plugins of every kind, by kind and name (plugins that failed to load included)."""
    from shared.services.destinations import DESTINATIONS
    from shared.services.transforms import TRANSFORMS
    from shared.services.validators import VALIDATORS

    loaded = load_plugins()
    refused = [p for p in loaded if p.error]
    targets = {(p.kind, p.name): p.target for p in loaded}
    rows = [PluginInfo("destination", n, DESTINATIONS.source(n), targets.get(("destination", n), ""))
            for n in DESTINATIONS.names()]
    plugin_transforms = {p.name: p for p in loaded if p.kind == "transform" and not p.error}
    rows += [plugin_transforms.get(n) or PluginInfo("transform", n, "wharf") for n in TRANSFORMS.names()]
    rows += [PluginInfo("validator", n, VALIDATORS.source(n), targets.get(("validator", n), ""))
             for n in VALIDATORS.names()]
    return sorted(rows + refused, key=lambda p: (p.kind, p.name, p.error))


def destination_kind(name: str) -> Any:
    """The registered destination kind `name`, plugins loaded first (UnknownDestinationError lists the known)."""
    from shared.services.destinations import DESTINATIONS

    load_plugins()
    return DESTINATIONS.get(name)


def _reset_for_tests() -> None:
    global _loaded
    with _lock:
        _loaded = None


__all__ = ["GROUPS", "PluginInfo", "destination_kind", "list_plugins", "load_plugins"]
