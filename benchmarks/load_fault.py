"""Load and faults: many partners' small files and a few large ones, polled concurrently through devhost, with
sshd restarted twice and Azurite once while it runs. Exactly once must hold: 0 duplicates, 0 missing.

    .venv/bin/python -m benchmarks.load_fault                                      # 10 x 1,000 + 2 x 1 GiB
    .venv/bin/python -m benchmarks.load_fault --partners 3 --files 200 --big-mib 64  # a quick run (~2 min)
    .venv/bin/python -m benchmarks.load_fault --json

Everything is private and on loopback: its own OpenSSH server (tests/integration/sshd_server.py) and its own
Azurite (tests/integration/azurite_server.py) on free ports, data in a temporary folder removed at the end;
devhost runs function_app.py in a child process against them. The driver asks for a poll of every partner
that still has files (poll-requests queue, what the timer and the API do) every few seconds; devhost's
poll worker lands them, its intake starts one orchestration per job, and each job runs to COMPLETED. Faults
are timed by progress: sshd killed and restarted at 15 % and 65 % of the small files landed, Azurite
stopped (SIGTERM, data kept) for a few seconds at 40 %. It stops by itself: when every file is landed and
every job has ended, or at --timeout.

Printed: files landed (a blob, a job and a LANDED or DONE ledger entry), duplicates (a file with more than
one blob or job), missing (gone from the source without all three: lost), still on the source (not landed
when a run hits --timeout; not lost), ledger entries left CLAIMED or LANDED, jobs COMPLETED, p50/p95
landing-to-COMPLETED latency (the job's first event to its last), devhost's peak RSS, and the wall time from
devhost's start (the setup, writing the files, apart).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
KEY_SECRET = "load-fault-key"
POLL_EVERY = 5.0  # seconds between rounds of poll requests for partners that still have files
AZURITE_DOWN = 4.0  # seconds Azurite stays stopped
FAULTS = ((0.15, "sshd"), (0.40, "azurite"), (0.65, "sshd"))  # (fraction of small files landed, what restarts)
CATALOG_PROCESSING = {
    "rules": [{"match": "*.bin", "type": "binary", "transform": {"name": "passthrough"}},
              {"match": "*.csv", "type": "csv", "transform": {"name": "passthrough"}}],
}
ROUTES = [{"name": "all", "default": True, "destinations": [{"kind": "event"}]}]


@dataclass
class Result:
    partners: int
    files_per_partner: int
    big_files: int
    big_mib: int
    files_expected: int = 0
    files_landed: int = 0
    duplicates: int = 0
    missing: int = 0  # gone from the source without a blob, a job and a DONE ledger entry: lost
    still_on_source: int = 0  # not landed yet when the run ended (only at --timeout): not lost
    claimed_left: int = 0
    landed_left: int = 0
    jobs: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    latency_p50_s: float | None = None
    latency_p95_s: float | None = None
    devhost_peak_rss_mib: float | None = None
    setup_seconds: float = 0.0  # writing the files, starting the servers (not in wall_seconds)
    wall_seconds: float = 0.0  # from devhost's start to the last job ended
    timed_out: bool = False
    faults: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _write_big(path: Path, mib: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as out:
        for i in range(mib):
            out.write(i.to_bytes(8, "big") + block[8:])  # no two MiB alike


def serve_devhost() -> int:
    """The child process: devhost running function_app.py (settings from the environment)."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    from devhost.host import DevHost

    DevHost("function_app:app", http_port=0, app_dir=ROOT, enable_timers=True,
            host_json_overrides={"extensions": {"queues": {"maxPollingInterval": "00:00:01"}}}).serve_forever()
    return 0


def run(args: argparse.Namespace) -> Result:
    import yaml
    from azure.core.exceptions import AzureError

    from shared.bootstrap import build_services
    from shared.domain.messages import PollRequest
    from shared.settings import Settings
    from tests.integration.azurite_server import PrivateAzurite
    from tests.integration.sshd_server import SshdServer

    res = Result(partners=args.partners, files_per_partner=args.files, big_files=args.big, big_mib=args.big_mib)
    work = Path(tempfile.mkdtemp(prefix="wharf-load-"))
    sshd = SshdServer(work / "sshd").start()
    azurite = PrivateAzurite(work / "azurite").start()
    devhost: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        run_id = uuid.uuid4().hex[:8]
        partners = [f"load{run_id}p{i:02d}" for i in range(args.partners)]
        expected: dict[str, set[str]] = {}
        row = "id,customer,amount\n" + "1,Acme,9.99\n" * max(1, args.file_bytes // 12)
        for i, partner in enumerate(partners):
            folder = sshd.folder(partner)
            names = {f"f{j:05d}.csv" for j in range(args.files)}
            for name in names:
                (folder / name).write_text(row)
            if i < args.big:
                _write_big(folder / f"big{i}.bin", args.big_mib)
                names.add(f"big{i}.bin")
            expected[partner] = names
        res.files_expected = sum(len(v) for v in expected.values())
        small_total = args.partners * args.files
        catalog = work / "partners.yaml"
        catalog.write_text(yaml.safe_dump({"partners": [{
            "id": p, "name": p, "sftp": {
                "host": sshd.host, "port": sshd.port, "username": sshd.username,
                "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [sshd.fingerprint],
                "remote_dirs": [str(sshd.data / p)], "min_age_seconds": 0, "post_action": "delete",
                "max_files_per_poll": args.max_files_per_poll, "max_file_size_bytes": 4 * 1024 * MIB,
                "connect_timeout_seconds": 5, "operation_timeout_seconds": 30},
            "processing": CATALOG_PROCESSING, "routes": ROUTES} for p in partners]}))
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string,
               "WHARF_TABLE_PREFIX": f"load{run_id}", "POLL_QUEUE": f"poll-{run_id}",
               "LANDED_QUEUE": f"landed-{run_id}", "TRANSFER_QUEUE": f"transfer-{run_id}",
               "REDELIVERY_QUEUE": f"redeliver-{run_id}",
               "WHARF_EVENTS_QUEUE": f"events-{run_id}",
               "WHARF_CATALOG_PATH": str(catalog), "WHARF_STACK_ENV": "/nonexistent",
               f"WHARF_SECRET_{KEY_SECRET.upper().replace('-', '_')}": f"@{sshd.client_key.path}",
               "WHARF_FUNCTION_KEY": "bench", "AzureFunctionsWebHost__hostid": f"load-{run_id}",
               "WHARF_PENDING_RESEND_MINUTES": "1", "WHARF_POLL_LEASE_SECONDS": str(args.lease),
               "WHARF_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        for key, value in env.items():
            if key.startswith(("WHARF_", "AzureWebJobsStorage", "POLL_", "LANDED_", "TRANSFER_")):
                os.environ[key] = value
        settings = Settings()
        svc = build_services(settings)
        svc.ensure_resources()
        with (work / "devhost.log").open("ab") as log:
            devhost = subprocess.Popen([sys.executable, "-m", "benchmarks.load_fault", "--serve-devhost"],
                                       env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)

        res.setup_seconds = round(time.monotonic() - started, 1)
        started = time.monotonic()

        def remaining() -> dict[str, int]:
            return {p: len(os.listdir(sshd.data / p)) for p in partners}

        faults = list(FAULTS)
        deadline = started + args.timeout
        last_round = 0.0
        while time.monotonic() < deadline:
            if devhost.poll() is not None:
                res.problems.append(f"devhost exited with {devhost.returncode}")
                break
            left = remaining()
            small_left = sum(n for n in left.values()) - sum(
                1 for i, p in enumerate(partners) if i < args.big and (sshd.data / p / f"big{i}.bin").exists())
            done_fraction = 1 - small_left / max(1, small_total)
            if faults and done_fraction >= faults[0][0]:
                what = faults.pop(0)[1]
                t = time.monotonic() - started
                if what == "sshd":
                    sshd.restart()
                else:
                    azurite.stop()
                    time.sleep(AZURITE_DOWN)
                    azurite.start()
                res.faults.append({"what": what, "at_fraction": round(done_fraction, 3), "at_s": round(t, 1),
                                   "took_s": round(time.monotonic() - started - t, 1)})
            if time.monotonic() - last_round >= POLL_EVERY:
                last_round = time.monotonic()
                try:
                    if svc.queues.depth(settings.poll_queue) == 0:
                        for p, n in left.items():
                            if n:
                                svc.queues.send(settings.poll_queue,
                                                PollRequest(partner=p, requested_by="bench").to_message())
                    if not any(left.values()) and not faults:
                        ended = 0
                        for p in partners:
                            ended += sum(1 for j in svc.jobs.list_jobs(partner=p, limit=10**6)
                                         if j.status.value in ("COMPLETED", "FAILED"))
                        if ended >= res.files_expected:
                            break
                except AzureError as exc:  # Azurite restarting: the next round asks again
                    res.problems.append(f"driver: {type(exc).__name__} at {time.monotonic() - started:.0f}s")
            time.sleep(0.5)
        else:
            res.timed_out = True
        res.wall_seconds = round(time.monotonic() - started, 1)
        if devhost.poll() is None:
            res.devhost_peak_rss_mib = _peak_rss_mib(devhost.pid)
        _stop(devhost)
        devhost = None
        _verify(svc, partners, expected, res, on_source={p: set(os.listdir(sshd.data / p)) for p in partners})
    finally:
        if devhost is not None:
            _stop(devhost)
        sshd.stop()
        azurite.stop()
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return res


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _verify(svc: Any, partners: list[str], expected: dict[str, set[str]], res: Result, *,
            on_source: dict[str, set[str]]) -> None:
    """Count, per partner, blobs, jobs and ledger entries per source file name."""
    latencies: list[float] = []
    for p in partners:
        blobs = Counter(b.path.rsplit("/", 1)[1] for b in svc.blobs.list_blobs("inbound", f"{p}/"))
        jobs = svc.jobs.list_jobs(partner=p, limit=10**6)
        per_file = Counter(j.file_name for j in jobs)
        entries = {e.path.rsplit("/", 1)[1]: e for e in svc.ledger.entries(p)}
        res.jobs += len(jobs)
        res.jobs_completed += sum(1 for j in jobs if j.status.value == "COMPLETED")
        res.jobs_failed += sum(1 for j in jobs if j.status.value == "FAILED")
        res.claimed_left += sum(1 for e in entries.values() if e.state.value == "CLAIMED")
        res.landed_left += sum(1 for e in entries.values() if e.state.value == "LANDED")
        latencies += [(j.updated_at - j.created_at).total_seconds() for j in jobs if j.status.value == "COMPLETED"]
        for name in expected[p]:
            res.duplicates += max(0, blobs.get(name, 0) - 1) + max(0, per_file.get(name, 0) - 1)
            entry = entries.get(name)
            # LANDED: recorded, post-action done or due; a later poll marks it DONE (counted in landed_left).
            if blobs.get(name) and per_file.get(name) and entry is not None and entry.state.value in ("DONE",
                                                                                                   "LANDED"):
                res.files_landed += 1
            elif name in on_source[p]:
                res.still_on_source += 1
            else:
                res.missing += 1
        strays = (set(blobs) | set(per_file)) - expected[p]
        if strays:
            res.problems.append(f"{p}: blobs or jobs of no source file: {sorted(strays)[:5]}")
    res.latency_p50_s = _percentile(latencies, 0.50)
    res.latency_p95_s = _percentile(latencies, 0.95)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partners", type=int, default=10)
    parser.add_argument("--files", type=int, default=1000, help="small files per partner")
    parser.add_argument("--file-bytes", type=int, default=2048, help="size of a small file (about)")
    parser.add_argument("--big", type=int, default=2, help="large files (one each on the first partners)")
    parser.add_argument("--big-mib", type=int, default=1024, help="size of a large file in MiB")
    parser.add_argument("--max-files-per-poll", type=int, default=100)
    parser.add_argument("--lease", type=float, default=120, help="WHARF_POLL_LEASE_SECONDS for the run: claims a "
                        "stopped poll held are taken over after it")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds; the run stops by itself then")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, data)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve-devhost", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_devhost:
        return serve_devhost()
    res = run(args)
    if args.json:
        print(json.dumps(asdict(res), indent=2))
    else:
        p50 = f"{res.latency_p50_s:.1f} s" if res.latency_p50_s is not None else "-"
        p95 = f"{res.latency_p95_s:.1f} s" if res.latency_p95_s is not None else "-"
        rss = f"{res.devhost_peak_rss_mib:.0f} MiB" if res.devhost_peak_rss_mib is not None else "-"
        print(f"load and faults: {res.partners} partners x {res.files_per_partner} files + {res.big_files} x "
              f"{res.big_mib} MiB; faults: " + ", ".join(f"{f['what']} at {f['at_s']} s" for f in res.faults))
        for label, value in (("files expected", res.files_expected), ("files landed", res.files_landed),
                             ("duplicates", res.duplicates), ("missing", res.missing),
                             ("still on the source", res.still_on_source),
                             ("ledger CLAIMED left", res.claimed_left), ("ledger LANDED left", res.landed_left),
                             ("jobs", res.jobs),
                             ("jobs COMPLETED", res.jobs_completed), ("jobs FAILED", res.jobs_failed),
                             ("landing->COMPLETED p50", p50), ("landing->COMPLETED p95", p95),
                             ("devhost peak RSS", rss), ("wall time", f"{res.wall_seconds:.0f} s"
                                                         + (" (timed out)" if res.timed_out else "")
                                                         + f", setup {res.setup_seconds:.0f} s")):
            print(f"  {label:<26} {value}")
        for problem in res.problems:
            print(f"  note: {problem}")
    return 0 if res.duplicates == 0 and res.missing == 0 and not res.timed_out else 1


if __name__ == "__main__":
    sys.exit(main())
