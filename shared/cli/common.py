"""What the `wharf` command modules share: the services, the local environment, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from shared.bootstrap import Services

# `wharf`'s sub-parsers, which every command module's `register(sub)` adds to.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def services() -> Services:
    from shared.bootstrap import build_services

    return build_services()


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def load_local_environment(root: Path = Path()) -> list[Path]:
    """For a developer's shell: fill unset variables from `local.settings.json` (else the sample) and the
    running local stack's `.local/stack.env`, as devhost and `make run` do. Never overrides what is set;
    in Azure, or anywhere these files are absent, it does nothing."""
    used: list[Path] = []
    stack_env = Path(os.environ.get("WHARF_STACK_ENV", root / ".local" / "stack.env"))
    if stack_env.is_file():  # first: it has the running stack's real ports
        for key, value in parse_env_file(stack_env.read_text()).items():
            os.environ.setdefault(key, value)
        used.append(stack_env)
    for name in ("local.settings.json", "local.settings.sample.json"):
        path = root / name
        if path.is_file():
            values = json.loads(path.read_text()).get("Values") or {}
            for key, value in values.items():
                os.environ.setdefault(str(key), "" if value is None else str(value))
            used.append(path)
            break
    return used


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY=value` and `KEY='value'` lines (what scripts/stack.sh writes); comments and blanks skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        out[key.strip()] = shlex.split(value)[0] if value.strip() else ""
    return out
