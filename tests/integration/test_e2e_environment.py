"""The e2e devhost's app settings (queue names, WHARF_CONSOLE_DEV_SIGNIN, ...) stay inside tests/e2e: a test that
runs after the e2e tests in the same session sees the environment the session started with.

A pytest run of its own (a subprocess: the devhost and the app are process-wide) runs one e2e test, then a probe
outside tests/e2e that compares os.environ with the environment the run was started with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.azurite]

ROOT = Path(__file__).resolve().parents[2]

PROBE = '''
import json
import os
from pathlib import Path


def test_the_environment_is_the_one_the_run_started_with() -> None:
    started = json.loads(Path({expected!r}).read_text())
    now = {{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}}
    changed = {{k: (started.get(k), now.get(k)) for k in set(started) | set(now) if started.get(k) != now.get(k)}}
    assert changed == {{}}, "(value when the run started, value now)"
'''


def test_a_test_after_the_e2e_tests_sees_the_environment_from_before_them(azurite: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(ROOT)
    expected = tmp_path / "environment.json"
    expected.write_text(json.dumps(env))
    probe = tmp_path / "test_after_e2e_probe.py"
    probe.write_text(PROBE.format(expected=str(expected)))
    e2e_test = "tests/e2e/test_health_api.py::test_an_unknown_partner_is_404_without_the_list_of_partners"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), e2e_test, str(probe)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert "2 passed" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0
