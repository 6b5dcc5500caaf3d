"""WHARF_HTTP_STREAMS=0 (decision 192): the fallback to the classic HTTP model still serves every route, through
devhost over the real function_app in a process of its own (the switch is decided at import, app-wide)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.azurite

ROOT = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent("""
    import inspect, json, urllib.error, urllib.request
    import function_app
    from azurefunctions.extensions.base import HttpV2FeatureChecker
    from devhost.host import DevHost

    import os, uuid
    run = uuid.uuid4().hex[:8]
    env = {"WHARF_FUNCTION_KEY": "k", "WHARF_TABLE_PREFIX": f"cl{run}", "POLL_QUEUE": f"poll-{run}",
           "LANDED_QUEUE": f"landed-{run}", "TRANSFER_QUEUE": f"transfer-{run}", "REDELIVERY_QUEUE": f"redeliver-{run}",
           "WHARF_EVENTS_QUEUE": f"events-{run}", "WHARF_CATALOG_PATH": os.environ["CATALOG"],
           "AzureFunctionsWebHost__hostid": f"cl-{run}", "AzureWebJobsStorage": os.environ["AzureWebJobsStorage"]}
    os.environ.update(env)
    host = DevHost(function_app.app, http_port=0, enable_timers=False, settings_env=env)
    host.start()
    http = {s.name: inspect.iscoroutinefunction(s.func) for s in host.specs if s.trigger_type == "httpTrigger"}
    out = {"streams": HttpV2FeatureChecker.http_v2_enabled(), "async": http}
    try:
        for name, path, method, body in (("health", "/health", "GET", None),
                                         ("openapi", "/v1/openapi.json", "GET", None),
                                         ("upload", "/v1/partners/nobody/uploads?name=a.csv", "POST", b"a,b")):
            req = urllib.request.Request(host.http_url + path, data=body, method=method,
                                         headers={"x-functions-key": "k"})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    out[name] = [resp.status, resp.headers.get("Content-Type"), len(resp.read())]
            except urllib.error.HTTPError as err:
                out[name] = [err.code, err.headers.get("Content-Type"), len(err.read())]
    finally:
        host.stop()
    print(json.dumps(out))
""")


def test_with_http_streams_off_every_http_function_is_classic_and_still_answers(tmp_path: Path) -> None:
    import os

    from shared.settings import azurite_connection_string

    catalog = tmp_path / "partners.yaml"
    catalog.write_text("partners: []\n")
    # Only what the app needs: not the test session's environment (an exporter endpoint or a fault another test
    # left set would change what this child does).
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(ROOT), "WHARF_HTTP_STREAMS": "0", "CATALOG": str(catalog),
           "AzureWebJobsStorage": azurite_connection_string()}
    try:
        result = subprocess.run([sys.executable, "-c", _CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=120, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the classic-mode devhost did not answer within 120 s; its stderr: {str(exc.stderr)[-3000:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["streams"] is False
    assert out["async"] and not any(out["async"].values())  # every HTTP function takes func.HttpRequest
    assert out["health"][0] in (200, 503) and out["health"][1].startswith("application/json")
    assert out["openapi"][0] == 200 and out["openapi"][2] > 1000
    assert out["upload"][0] == 404 and out["upload"][1].startswith("application/problem+json")  # no such partner
