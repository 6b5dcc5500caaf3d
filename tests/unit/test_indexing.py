"""Indexing: what the Functions host will see when it loads function_app.py."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


@functools.cache
def _functions() -> list[Any]:
    # The library validates names in state kept on the app, so an app is indexed once: take a fresh one
    # (another test, or devhost, may have indexed the module already in this process).
    import importlib
    import sys

    sys.modules.pop("function_app", None)
    return list(importlib.import_module("function_app").app.get_functions())


def _binding_strings(fn: Any) -> list[str]:
    out = []
    for b in fn.get_bindings():
        for value in b.get_dict_repr().values():
            if isinstance(value, str):
                out.append(value)
    return out


def test_nothing_unexpected_is_registered() -> None:
    assert sorted(f.get_function_name() for f in _functions()) == sorted(name for name, _, _ in EXPECTED)


def test_names_are_unique_and_follow_the_convention() -> None:
    names = [f.get_function_name() for f in _functions()]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name


def test_every_setting_in_bindings_exists_in_the_sample() -> None:
    missing = {(f.get_function_name(), m) for f in _functions() for s in _binding_strings(f)
               for m in re.findall(r"%([^%]+)%", s) if m not in SAMPLE}
    assert missing == set()


EXPECTED = [
    ("api_health", "httpTrigger", {"req", "$return"}),
    ("api_health_details", "httpTrigger", {"req", "$return"}),
    ("api_jobs", "httpTrigger", {"req", "$return"}),
    ("api_job_detail", "httpTrigger", {"req", "$return"}),
    ("api_job_replay", "httpTrigger", {"req", "$return"}),
    ("api_partner_poll", "httpTrigger", {"req", "$return"}),
    ("api_v1", "httpTrigger", {"req", "$return"}),
    ("sftp_schedule", "timerTrigger", {"timer"}),
    ("mail_schedule", "timerTrigger", {"timer"}),
    ("jobs_sweep", "timerTrigger", {"timer", "client"}),
    ("sla_check", "timerTrigger", {"timer"}),
    ("secrets_expiry", "timerTrigger", {"timer"}),
    ("delivery_status_check", "timerTrigger", {"timer"}),
    ("poll_worker", "queueTrigger", {"msg"}),
    ("intake_file_landed", "queueTrigger", {"msg", "client"}),
    ("transfer_batch_worker", "queueTrigger", {"msg"}),
    ("redelivery_worker", "queueTrigger", {"msg"}),
    ("intake_drop", "eventGridTrigger", {"event", "client"}),
    ("intake_outbound", "eventGridTrigger", {"event", "client"}),
    ("process_file_orchestrator", "orchestrationTrigger", {"context"}),
    ("start_job", "activityTrigger", {"ref"}),
    ("validate_and_transform", "activityTrigger", {"ref"}),
    ("plan_routes", "activityTrigger", {"ref"}),
    ("route_file", "activityTrigger", {"ref"}),
    ("archive_file", "activityTrigger", {"ref"}),
    ("quarantine_file", "activityTrigger", {"ref"}),
    ("complete_job", "activityTrigger", {"ref"}),
    ("fail_job", "activityTrigger", {"ref"}),
]


@pytest.mark.parametrize(("name", "trigger_type", "binding_names"), EXPECTED)
def test_expected_functions_are_registered(name: str, trigger_type: str, binding_names: set[str]) -> None:
    fn = next((f for f in _functions() if f.get_function_name() == name), None)
    assert fn is not None, f"{name} not registered"
    assert fn.get_trigger().get_dict_repr()["type"] == trigger_type
    assert {b.name for b in fn.get_bindings()} >= binding_names


def test_http_routes_other_than_health_need_a_key() -> None:
    for fn in _functions():
        trigger = fn.get_trigger().get_dict_repr()
        if trigger["type"] != "httpTrigger":
            continue
        level = str(trigger.get("authLevel", "")).upper()
        if trigger.get("route") == "health":
            assert level == "ANONYMOUS"
        elif trigger.get("route") == "v1/{*path}":  # anonymous to the host: shared.api authenticates (decision 100)
            assert level == "ANONYMOUS"
            import shared.api.app  # noqa: F401  (registers every route; functions/api_v1 imports it lazily)
            from shared.api.router import ROUTES

            assert {r.path for r in ROUTES if not r.role} == {"/openapi.json", "/docs", "/docs/assets/{name}",
                                                              "/console/signin"}
        else:
            assert level in {"FUNCTION", "ADMIN"}, fn.get_function_name()


def test_import_reads_no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing must not need storage or a catalogue: nothing is read at import."""
    import importlib
    import sys

    for var in ("AzureWebJobsStorage", "WHARF_CATALOG_PATH"):
        monkeypatch.delenv(var, raising=False)
    for mod in [m for m in sys.modules if m == "function_app" or m.startswith("functions")]:
        monkeypatch.delitem(sys.modules, mod)
    module = importlib.import_module("function_app")
    assert module.app.get_functions()


# Cold start (decision 81): `import function_app` loads the Functions libraries and the light decorators only;
# every service, adapter, SDK and pydantic model loads inside the function body that needs it.
_NOT_AT_IMPORT = ("azure.storage", "azure.identity", "azure.data", "azure.keyvault", "azure.servicebus",
                  "azurefunctions.extensions.bindings", "pydantic", "pydantic_settings", "yaml", "paramiko",
                  "msgraph", "croniter", "shared.adapters", "shared.catalog", "shared.domain.jobs",
                  "shared.domain.messages", "shared.settings", "shared.metrics", "shared.cli")


def _loaded_at_import(streams: str) -> list[str]:
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import json, sys
        import function_app
        heavy = {_NOT_AT_IMPORT!r}
        services = [m for m in sys.modules if m.startswith("shared.services.")]
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy) or m in heavy) + sorted(services)))
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PATH": "/usr/bin:/bin",
                            "PYTHONPATH": str(ROOT), "WHARF_HTTP_STREAMS": streams},
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


# shared.adapters.http is two os.environ reads (bootstrap's transport options); activity_boundary the decorators.
_LIGHT = ["shared.adapters", "shared.adapters.http", "shared.services.activity_boundary"]


def test_importing_function_app_defers_services_sdks_and_models() -> None:
    assert _loaded_at_import("0") == _LIGHT


def test_with_http_streams_only_fastapis_pydantic_joins_the_import() -> None:
    # The worker serves HTTP streams through FastAPI, which builds pydantic models at import (decision 192);
    # nothing else heavy comes with it (no pydantic_settings, no Wharf model, no SDK).
    loaded = _loaded_at_import("1")
    assert any(m == "pydantic" for m in loaded)
    assert [m for m in loaded if m.split(".")[0] not in ("pydantic", "pydantic_core")] == _LIGHT
