"""One trace per file: from the SFTP poll, across the queue hop and the orchestration, to its routes."""

from __future__ import annotations

import uuid

import pytest

from shared.adapters.secrets import env_name
from shared.observability import setup
from tests.e2e.conftest import E2E, job_trace
from tests.e2e.test_processing import GOOD, catalog_yaml
from tests.integration.sshd_server import SshdServer

pytestmark = [pytest.mark.e2e, pytest.mark.azurite, pytest.mark.sshd]


def test_sftp_file_is_one_connected_trace_and_secrets_appear_nowhere(
        e2e: E2E, sshd_server: SshdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = setup.for_tests()
    partner = f"t{uuid.uuid4().hex[:8]}"
    outbound = sshd_server.folder(f"{partner}-out")
    key_secret = f"{partner}-key"
    key_text = sshd_server.client_key.path.read_text()
    monkeypatch.setenv(env_name(key_secret), key_text)  # the private key itself, as Key Vault would hand it over
    e2e.catalog_path.write_text(catalog_yaml(partner, "EUR, USD").replace("    processing:\n", f"""    sftp:
      host: 127.0.0.1
      port: {sshd_server.port}
      username: {sshd_server.username}
      auth: {{ private_key_secret: {key_secret} }}
      host_keys: ["{sshd_server.known_hosts_line}"]
      remote_dirs: ["{outbound}"]
      min_age_seconds: 0
    processing:
""", 1))
    (outbound / "traced.csv").write_bytes(GOOD)

    code, summary = e2e.request("POST", f"/partners/{partner}/poll?wait=true")
    assert code == 200 and summary["landed"] == 1, summary
    job = e2e.wait_for("the job", lambda: e2e.services.jobs.list_jobs(partner=partner))[0]
    assert e2e.wait_job(job.job_id)["job"]["status"] == "COMPLETED"
    e2e.host.wait_idle(30)

    # The file's work is one trace, one tree: the poll, the queue hop, the orchestration's activities, the routes.
    names = job_trace(capture, job.job_id, ("queue.send", "intake.start", "activity.validate_and_transform",
                                            "activity.route_file", "activity.complete_job", "event.publish"))
    assert any(n.startswith("poll") or n.startswith("sftp") for n in names), sorted(names)

    # Metrics carry the partner: files ingested and the job's duration.
    ingested = [p for p in capture.metric_points("wharf.files.ingested") if p.attributes.get("partner") == partner]
    assert ingested and ingested[0].attributes["channel"] == "sftp"
    done = [p for p in capture.metric_points("wharf.job.duration") if p.attributes.get("partner") == partner]
    assert done and done[0].attributes["status"] == "completed"

    # The private key never reached a span, a log record or a metric.
    exported = capture.exported_text()
    for line in key_text.strip().splitlines()[1:-1]:
        assert line not in exported
