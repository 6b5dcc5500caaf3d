"""Index a v2-model FunctionApp into trigger specs, resolving %SETTING% references like the host."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from devhost.config import ConfigError, resolve_setting_refs

# Trigger binding types devhost runs.
TIMER = "timerTrigger"
QUEUE = "queueTrigger"
BLOB = "blobTrigger"
EVENT_GRID = "eventGridTrigger"
HTTP = "httpTrigger"
ACTIVITY = "activityTrigger"
ORCHESTRATION = "orchestrationTrigger"
SUPPORTED_TRIGGERS = (TIMER, QUEUE, BLOB, EVENT_GRID, HTTP, ACTIVITY, ORCHESTRATION)
# Non-trigger bindings devhost understands.
_DURABLE_CLIENT = "durableClient"
_HTTP_OUT = "http"


@dataclass
class FunctionSpec:
    """One indexed function: its trigger binding (settings resolved) and how to call it."""

    name: str
    trigger_type: str
    trigger: dict[str, Any]
    func: Callable[..., Any]
    trigger_param: str
    client_param: str | None = None
    context_param: bool = False
    param_annotations: dict[str, Any] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def annotation(self, param: str) -> Any:
        return self.param_annotations.get(param, inspect.Parameter.empty)


def _resolve(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        return resolve_setting_refs(value, env, where=where)
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):  # StringifyEnum members
        return value.value
    if isinstance(value, list | tuple):
        return [_resolve(v, env, where) for v in value]
    return value


def _annotations(func: Callable[..., Any]) -> dict[str, Any]:
    target = getattr(func, "client_function", func)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    try:  # string annotations (`from __future__ import annotations`) resolved as the worker would
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001 - an unresolvable hint stays as written
        hints = {}
    return {name: hints.get(name, p.annotation) for name, p in sig.parameters.items()}


def index_app(app: Any, env: Mapping[str, str]) -> list[FunctionSpec]:
    """Turn ``app.get_functions()`` into specs; unsupported triggers or bindings are errors naming the function."""
    specs: list[FunctionSpec] = []
    seen: set[str] = set()
    for fn in app.get_functions():
        name = fn.get_function_name()
        if name in seen:
            raise ConfigError(f"function {name!r} is defined twice")
        seen.add(name)
        trigger = fn.get_trigger()
        if trigger is None:
            raise ConfigError(f"function {name!r} has no trigger")
        trigger_dict = {k: _resolve(v, env, f"function {name!r}") for k, v in trigger.get_dict_repr().items()}
        trigger_type = trigger_dict["type"]
        if trigger_type not in SUPPORTED_TRIGGERS:
            raise ConfigError(f"function {name!r}: devhost does not run {trigger_type!r} triggers")
        client_param: str | None = None
        for binding in fn.get_bindings():
            if binding is trigger:
                continue
            b = binding.get_dict_repr()
            btype = b["type"]
            if btype == _DURABLE_CLIENT:
                client_param = b["name"]
            elif btype == _HTTP_OUT and trigger_type == HTTP:
                continue
            else:
                raise ConfigError(
                    f"function {name!r}: devhost does not support {btype!r} bindings; "
                    "use the platform adapters (shared/adapters) instead"
                )
        func = fn.get_user_function()
        annotations = _annotations(func)
        specs.append(
            FunctionSpec(
                name=name,
                trigger_type=trigger_type,
                trigger=trigger_dict,
                func=func,
                trigger_param=trigger_dict["name"],
                client_param=client_param,
                context_param="context" in annotations and trigger_dict["name"] != "context"
                and client_param != "context",
                param_annotations=annotations,
            )
        )
    return specs
