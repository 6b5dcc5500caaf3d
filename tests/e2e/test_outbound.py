"""Outbound jobs through devhost: a file handed over at outbound/{partner}/ (and one given to `wharf send`) arrives
in the demo partner's SFTP inbound/ folder of the local stack (SFTP_DEMO_INBOUND) once, with one SENT delivery;
a replay, `wharf deliveries list`, `wharf redeliver` and `wharf jobs show` on those jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.secrets import env_name
from shared.cli.common import parse_env_file
from shared.domain.delivery import DeliveryState
from shared.domain.jobs import JobStatus
from tests.e2e.conftest import E2E

pytestmark = [pytest.mark.e2e, pytest.mark.azurite, pytest.mark.sshd]

ROOT = Path(__file__).resolve().parents[2]
DATA = b"iban;amount;currency\nDE89370400440532013000;125.00;EUR\n"


@dataclass
class Demo:
    partner: str
    inbound: Path  # the demo partner's SFTP inbound/ folder (SFTP_DEMO_INBOUND)
    stem: str  # every file of this test starts with it: what it finds there is its own


def _stack() -> dict[str, str]:
    path = Path(os.environ.get("WHARF_STACK_ENV", ROOT / ".local" / "stack.env"))
    assert path.is_file(), f"the local stack's settings are not at {path} (set WHARF_STACK_ENV)"
    return parse_env_file(path.read_text())


@pytest.fixture
def demo(e2e: E2E, monkeypatch: pytest.MonkeyPatch) -> Iterator[Demo]:
    """The demo partner of the local stack's sshd, deliver-only (no remote_dirs), under a partner id of this test:
    outbound route `remit` names files `{stem}_{job_id}.{ext}`; route `again` keeps the name (on_exists unique)."""
    stack = _stack()
    inbound = Path(stack["SFTP_DEMO_INBOUND"])
    inbound.mkdir(parents=True, exist_ok=True)
    secret = "demo-sftp-key"
    monkeypatch.setenv(env_name(secret), f"@{stack['SFTP_CLIENT_KEY']}")
    partner = f"demo{uuid.uuid4().hex[:8]}"
    e2e.catalog_path.write_text(f"""partners:
  - id: {partner}
    name: Demo partner (local SFTP), outbound only
    sftp:
      host: {stack["SFTP_HOST"]}
      port: {stack["SFTP_PORT"]}
      username: {stack["WHARF_DEMO_SFTP_USER"]}
      auth: {{ private_key_secret: {secret} }}
      host_keys: ["{stack["WHARF_DEMO_SFTP_HOST_KEY"]}"]
      outbound_dir: "{inbound}"
    outbound:
      routes:
        - name: remit
          default: true
          destinations:
            - {{ kind: sftp, partner: {partner}, name: "{{stem}}_{{job_id}}.{{ext}}" }}
        - name: again
          match: {{ file_glob: "*.none" }}
          destinations:
            - {{ kind: sftp, partner: {partner}, on_exists: unique }}
""")
    stem = f"remit-{uuid.uuid4().hex[:10]}"
    yield Demo(partner, inbound, stem)
    for path in inbound.glob(f"{stem}*"):
        path.unlink()


def _arrived(demo: Demo) -> list[str]:
    return sorted(p.name for p in demo.inbound.iterdir() if p.name.startswith(demo.stem))


def _wharf(e2e: E2E, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **e2e.env, "PYTHONPATH": str(ROOT), "OTEL_SDK_DISABLED": "true"}
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _outbound_job(e2e: E2E, partner: str) -> dict[str, Any]:
    jobs = e2e.wait_for(f"the outbound job of {partner}", lambda: e2e.services.jobs.list_jobs(partner=partner))
    return e2e.wait_job(jobs[0].job_id)


def test_a_file_handed_over_in_outbound_arrives_in_the_demo_partners_sftp_inbound_once(e2e: E2E, demo: Demo) -> None:
    name = f"{demo.stem}.csv"
    e2e.services.blobs.upload_stream(e2e.outbound_container, f"{demo.partner}/{name}", [DATA])
    detail = _outbound_job(e2e, demo.partner)
    job = detail["job"]
    assert (job["status"], job["job_type"]) == ("COMPLETED", "OUTBOUND"), job["error"]
    job_id = job["job_id"]
    assert _arrived(demo) == [f"{demo.stem}_{job_id}.csv"]  # once, no temporary file left beside it
    assert (demo.inbound / f"{demo.stem}_{job_id}.csv").read_bytes() == DATA  # unprocessed: as handed over
    deliveries = e2e.services.deliveries.for_job(job_id)
    assert [(d.kind, d.state) for d in deliveries] == [("sftp", DeliveryState.SENT)]
    # The job shows each destination's state; the handed-over blob is gone (an immutable copy was processed).
    assert [(d["kind"], d["state"]) for d in detail["deliveries"]] == [("sftp", "SENT")]
    assert job["blob_path"].startswith(f"inbound/{demo.partner}/")
    assert not e2e.services.blobs.exists(e2e.outbound_container, f"{demo.partner}/{name}")
    assert any(t["status"] == "SENT" and t["destination"].startswith(f"sftp:{demo.partner}:")
               for t in detail["transfers"])

    # A replay (`wharf replay`, here through the API: the same replay) is outbound too: delivered once more,
    # under its own job id.
    code, body = e2e.request("POST", f"/jobs/{job_id}/replay")
    assert code == 202, body
    new_id = body["job_id"]
    again = e2e.wait_job(new_id)["job"]
    assert again["status"] == "COMPLETED", again["error"]
    assert _arrived(demo) == sorted([f"{demo.stem}_{job_id}.csv", f"{demo.stem}_{new_id}.csv"])


def test_wharf_send_delivers_once_and_wharf_redeliver_sends_again_as_a_linked_delivery(
        e2e: E2E, demo: Demo, tmp_path: Path) -> None:
    local = tmp_path / f"{demo.stem}.csv"
    local.write_bytes(DATA)
    sent = _wharf(e2e, "send", demo.partner, str(local), "--route", "again", "--json")
    assert sent.returncode == 0, sent.stderr
    job_id = json.loads(sent.stdout)["job_id"]
    job = e2e.wait_job(job_id)["job"]
    assert job["status"] == JobStatus.COMPLETED.value, job["error"]
    assert _arrived(demo) == [local.name]
    assert (demo.inbound / local.name).read_bytes() == DATA

    listed = _wharf(e2e, "deliveries", "list", "--job", job_id, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(r["index"], r["kind"], r["state"]) for r in json.loads(listed.stdout)] == [(0, "sftp", "SENT")]
    nothing_failed = _wharf(e2e, "redeliver", job_id)
    assert nothing_failed.returncode == 2 and "no delivery of this job failed" in nothing_failed.stderr

    # On purpose: a new record linked to delivery 0, queued; devhost's redelivery worker sends it. The name is
    # taken, and on_exists unique numbers it.
    redone = _wharf(e2e, "redeliver", job_id, "--destination", "0", "--json", "--wait", "60")
    assert redone.returncode == 0, redone.stderr
    [row] = json.loads(redone.stdout)
    assert (row["index"], row["redelivery_of"], row["state"]) == (100, 0, "SENT")
    assert _arrived(demo) == sorted([local.name, f"{demo.stem}.2.csv"])
    shown = _wharf(e2e, "jobs", "show", job_id)
    assert "Deliveries:" in shown.stdout and "(re-sends 0)" in shown.stdout
    assert "delivery.redelivered" in shown.stdout and "redelivery.requested" in shown.stdout

    # The API's route queues the same way.
    code, body = e2e.request("POST", f"/v1/jobs/{job_id}/deliveries/0/redeliver")
    assert code == 202, body
    [queued] = body["items"]
    assert (queued["index"], queued["redelivery_of"]) == (101, 0)
    sent = e2e.wait_for("the API's redelivery to be sent", lambda: e2e.services.deliveries.get(job_id, 101)
                        if e2e.services.deliveries.get(job_id, 101).state is DeliveryState.SENT else None)
    assert sent.remote_path.endswith(f"{demo.stem}.3.csv")

    # A crash: a redelivery interrupted while uploading, its row left SENDING. The sweep (here with its clock
    # past WHARF_DELIVERY_STALE_MINUTES) queues it again and the worker takes it over: sent once, not SENDING.
    from dataclasses import replace
    from datetime import timedelta

    from shared.domain.delivery import DeliveryStep
    from shared.domain.jobs import utcnow
    from shared.services.delivery_sweep import sweep_deliveries

    again = _wharf(e2e, "redeliver", job_id, "--destination", "0", "--json")
    assert again.returncode == 0, again.stderr
    index = json.loads(again.stdout)[0]["index"]
    # Once the worker is done with it (a sweep beside a worker still sending would be a race of the test's own
    # making: its clock below makes every SENDING row stale), make it look interrupted, as a crash leaves it.
    record = e2e.wait_for("the worker to send the redelivery", lambda: e2e.services.deliveries.get(job_id, index)
                          if e2e.services.deliveries.get(job_id, index).state is DeliveryState.SENT else None)
    record = e2e.services.deliveries.update(replace(record, state=DeliveryState.SENDING,
                                                    step=DeliveryStep.UPLOADING, remote_path="", sent_at=None))
    swept = sweep_deliveries(e2e.services, now=utcnow() + timedelta(hours=1))
    assert f"{job_id}/{index}" in swept.requeued
    done = e2e.wait_for("the swept redelivery to be sent", lambda: e2e.services.deliveries.get(job_id, index)
                        if e2e.services.deliveries.get(job_id, index).state is DeliveryState.SENT else None)
    assert done.error == "" and done.remote_path
    assert not [p for p in demo.inbound.iterdir() if p.name.endswith(".part")]

