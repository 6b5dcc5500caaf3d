"""host.json and local.settings.json loading, timespans and %SETTING% resolution, as the Functions host does."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d+)?)$")
_SETTING_REF = re.compile(r"%([^%\s]+)%")


class ConfigError(ValueError):
    """host.json, local.settings.json or a binding is not usable as written."""


def parse_timespan(value: str | int | float) -> timedelta:
    """Parse a .NET TimeSpan string as host.json writes it: ``hh:mm:ss``, ``d.hh:mm:ss`` or ``hh:mm:ss.fff``."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _TIMESPAN.match(value.strip())
    if not match:
        raise ConfigError(f"not a timespan (expected hh:mm:ss): {value!r}")
    return timedelta(
        days=int(match["days"] or 0), hours=int(match["h"]), minutes=int(match["m"]), seconds=float(match["s"])
    )


def is_timespan(value: str) -> bool:
    return bool(_TIMESPAN.match(value.strip()))


def resolve_setting_refs(value: str, env: Mapping[str, str], *, where: str) -> str:
    """Replace each ``%NAME%`` with the app setting NAME; a missing setting is an error naming it."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigError(f"{where}: app setting {name!r} is not set (referenced as %{name}%)")
        return env[name]

    return _SETTING_REF.sub(repl, value)


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` with the host's defaults."""

    max_polling_interval: timedelta = timedelta(minutes=1)
    visibility_timeout: timedelta = timedelta(0)
    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json that devhost acts on."""

    raw: dict[str, Any]
    route_prefix: str = "api"
    function_timeout: timedelta | None = timedelta(minutes=30)
    hub_name: str = "TestHubName"
    queues: QueueOptions = QueueOptions()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HostConfig:
        data = dict(raw)
        if str(data.get("version", "")) != "2.0":
            raise ConfigError("host.json: 'version' must be \"2.0\"")
        ext = data.get("extensions") or {}
        http = ext.get("http") or {}
        prefix = str(http.get("routePrefix", "api")).strip("/")
        timeout_raw = data.get("functionTimeout")
        timeout: timedelta | None = timedelta(minutes=30)
        if timeout_raw is not None:
            timeout = None if str(timeout_raw).strip() == "-1" else parse_timespan(timeout_raw)
        q = ext.get("queues") or {}
        encoding = str(q.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ConfigError(f"host.json: extensions.queues.messageEncoding must be base64 or none, not {encoding!r}")
        queues = QueueOptions(
            max_polling_interval=parse_timespan(q.get("maxPollingInterval", "00:01:00")),
            visibility_timeout=parse_timespan(q.get("visibilityTimeout", "00:00:00")),
            batch_size=int(q.get("batchSize", 16)),
            new_batch_threshold=int(q["newBatchThreshold"]) if "newBatchThreshold" in q else None,
            max_dequeue_count=int(q.get("maxDequeueCount", 5)),
            message_encoding=encoding,
        )
        if not 1 <= queues.batch_size <= 32:
            raise ConfigError("host.json: extensions.queues.batchSize must be between 1 and 32")
        durable = ext.get("durableTask") or {}
        return cls(
            raw=dict(data),
            route_prefix=prefix,
            function_timeout=timeout,
            hub_name=str(durable.get("hubName", "TestHubName")),
            queues=queues,
        )

    @classmethod
    def load(cls, path: Path | None, overrides: Mapping[str, Any] | None = None) -> HostConfig:
        """Read host.json (missing file: the host's defaults), deep-merging ``overrides`` over it."""
        raw: dict[str, Any] = {"version": "2.0"}
        if path is not None and path.exists():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        if overrides:
            raw = _deep_merge(raw, overrides)
        return cls.from_dict(raw)


def load_local_settings(root: Path, env: MutableMapping[str, str] | None = None) -> Path | None:
    """Copy ``Values`` of local.settings.json (else local.settings.sample.json) into env, never overriding.

    Returns the file used, or None when neither exists.
    """
    target = os.environ if env is None else env
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = root / name
        if not path.exists():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
        values = doc.get("Values") or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: 'Values' must be an object")
        for key, value in values.items():
            if key not in target:
                target[key] = "" if value is None else str(value)
        return path
    return None
