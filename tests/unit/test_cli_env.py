"""The CLI's local environment: the running stack's stack.env first, then local.settings, never overriding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.cli.common import load_local_environment


def test_fills_unset_variables_from_stack_env_then_local_settings(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".local").mkdir()
    (tmp_path / ".local" / "stack.env").write_text(
        "# generated\nAzureWebJobsStorage='A=1;B=2;'\nWHARF_DEMO_SFTP_USER=root\n\nSFTP_PORT=2222\n")
    (tmp_path / "local.settings.sample.json").write_text(json.dumps({"Values": {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true", "POLL_QUEUE": "poll-requests",
        "WHARF_FUNCTION_KEY": "from-sample"}}))
    for var in ("AzureWebJobsStorage", "WHARF_DEMO_SFTP_USER", "SFTP_PORT", "POLL_QUEUE", "WHARF_STACK_ENV"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WHARF_FUNCTION_KEY", "already-set")
    used = load_local_environment(tmp_path)
    assert used == [tmp_path / ".local" / "stack.env", tmp_path / "local.settings.sample.json"]
    assert os.environ["AzureWebJobsStorage"] == "A=1;B=2;"  # the stack's real ports win over the sample
    assert (os.environ["WHARF_DEMO_SFTP_USER"], os.environ["POLL_QUEUE"]) == ("root", "poll-requests")
    assert os.environ["WHARF_FUNCTION_KEY"] == "already-set"


def test_does_nothing_where_the_files_are_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WHARF_STACK_ENV", raising=False)
    assert load_local_environment(tmp_path) == []
