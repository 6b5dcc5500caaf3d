"""Scale-out benchmark: one partner's backlog of small files transferred by one `wharf poll --worker` process
against two, same run, same sshd and Azurite (transfer batches on the queue, every bookkeeping write on).

    .venv/bin/python -m benchmarks.sftp_scaleout                       # 4,000 x 1 KiB, 3 runs of each
    .venv/bin/python -m benchmarks.sftp_scaleout --files 1000 --runs 1 --json

Each run: a fresh partner folder of FILES files, one `wharf poll P --batch-files B` (claims the files in batches
and queues them), then W worker processes (`wharf poll --worker --idle-exit 1 --json`). Wall time runs from the
poll's start to the last batch's end (from the summaries the workers print: the idle wait at the end is not
counted). Every run checks that each file became exactly one blob and one job (duplicates and missing must be 0).
Its own OpenSSH server and Azurite on free ports; their data in a temporary folder, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.sftp_ingest import azurite  # noqa: E402
from tests.integration.sshd_server import SshdServer  # noqa: E402

KEY_SECRET = "bench-scaleout-key"


def summaries(text: str) -> list[dict[str, Any]]:
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


def when(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


class Bench:
    def __init__(self, sshd: SshdServer, conn: str, workdir: Path, args: argparse.Namespace) -> None:
        self.sshd, self.conn, self.workdir, self.args = sshd, conn, workdir, args
        self.tag = uuid.uuid4().hex[:8]
        from shared.bootstrap import build_services
        from shared.settings import Settings

        build_services(Settings.model_validate(self.env(workdir / "none.yaml"))).ensure_resources()

    def env(self, catalog: Path) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AzureWebJobsStorage": self.conn,
                "WHARF_TABLE_PREFIX": f"b{self.tag}", "POLL_QUEUE": f"poll-{self.tag}",
                "LANDED_QUEUE": f"landed-{self.tag}", "WHARF_EVENTS_QUEUE": f"events-{self.tag}",
                "TRANSFER_QUEUE": f"transfer-{self.tag}", "WHARF_CATALOG_PATH": str(catalog),
                "WHARF_STACK_ENV": "/nonexistent", "WHARF_SECRET_BENCH_SCALEOUT_KEY": f"@{self.sshd.client_key.path}",
                "WHARF_LOG_LEVEL": "WARNING"}

    def run(self, workers: int) -> dict[str, Any]:
        import yaml

        a = self.args
        partner = f"s{uuid.uuid4().hex[:10]}"
        folder = self.sshd.folder(partner)
        payload = os.urandom(a.size)
        for i in range(a.files):
            (folder / f"f{i:05d}.csv").write_bytes(payload)
        catalog = self.workdir / f"{partner}.yaml"
        catalog.write_text(yaml.safe_dump({"partners": [{"id": partner, "name": partner, "sftp": {
            "host": self.sshd.host, "port": self.sshd.port, "username": self.sshd.username,
            "auth": {"private_key_secret": KEY_SECRET}, "host_keys": [self.sshd.fingerprint],
            "remote_dirs": [str(folder)], "min_age_seconds": 0, "post_action": "delete",
            "max_files_per_poll": 10000, "max_sessions": a.max_sessions}}]}))
        env = self.env(catalog)
        wharf = [sys.executable, "-m", "shared.cli", "poll"]
        poll = subprocess.run([*wharf, partner, "--json", "--quiet", "--settle", "0.2", "--batch-files",
                               str(a.batch_files)], capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        if poll.returncode != 0:
            raise RuntimeError(f"poll failed: {poll.stdout[-2000:]} {poll.stderr[-2000:]}")
        queued = json.loads(poll.stdout)
        # Output to files, not pipes: a worker must never block on a full pipe while another is waited for.
        logs = [(self.workdir / f"{partner}-{i}.out", self.workdir / f"{partner}-{i}.err") for i in range(workers)]
        procs = [subprocess.Popen([*wharf, "--worker", "--idle-exit", "1", "--json", "--concurrency",
                                   str(a.concurrency)], stdout=out.open("w"), stderr=err.open("w"), text=True,
                                  env=env, cwd=ROOT) for out, err in logs]
        done: list[list[dict[str, Any]]] = []
        for proc, (out_path, err_path) in zip(procs, logs, strict=True):
            proc.wait(timeout=3600)
            out, err = out_path.read_text(), err_path.read_text()
            if a.stderr:
                print(f"--- worker {len(done) + 1} stderr ---\n{err[-a.stderr:]}", file=sys.stderr)
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed ({proc.returncode}): {err[-3000:]}")
            done.append(summaries(out))
        batches = [s for w in done for s in w]
        wall = max(when(s["finished_at"]) for s in batches) - when(queued["started_at"])
        from azure.storage.blob import ContainerClient

        blobs = ContainerClient.from_connection_string(self.conn, "inbound")
        names = [b.metadata.get("original_name", "") for b in
                 blobs.list_blobs(name_starts_with=f"{partner}/", include=["metadata"])]
        listed = set(os.listdir(folder))
        return {"workers": workers, "files": a.files, "wall_s": round(wall, 2), "batches": len(batches),
                "batches_per_worker": [len(w) for w in done], "landed": sum(int(s["landed"]) for s in batches),
                "blobs": len(names), "duplicates": len(names) - len(set(names)),
                "missing": a.files - len(set(names)), "left_on_source": len(listed),
                "files_per_s": round(a.files / wall, 1),
                "timeline": [[(round(when(s["started_at"]) - when(queued["started_at"]), 1),
                               round(when(s["finished_at"]) - when(s["started_at"]), 1), int(s["landed"]))
                              for s in w] for w in done] if a.timeline else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--size", type=int, default=1024, help="bytes per file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-files", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4, help="sessions per worker process")
    parser.add_argument("--max-sessions", type=int, default=8, help="the partner's sftp.max_sessions")
    parser.add_argument("--timeline", action="store_true", help="each batch's (start, seconds, files) per worker")
    parser.add_argument("--stderr", type=int, default=0, metavar="CHARS", help="print the end of each worker's stderr")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wharf-scaleout-") as tmp:
        workdir = Path(tmp)
        sshd = SshdServer(workdir / "sshd").start()
        try:
            with azurite(workdir) as conn:
                bench = Bench(sshd, conn, workdir, args)
                for run in range(args.runs):
                    for workers in ((1, 2) if run % 2 == 0 else (2, 1)):  # alternate: drift hits both alike
                        result = bench.run(workers)
                        results.append(result)
                        print(json.dumps(result), file=sys.stderr, flush=True)
        finally:
            sshd.stop()
    one = statistics.median(r["wall_s"] for r in results if r["workers"] == 1)
    two = statistics.median(r["wall_s"] for r in results if r["workers"] == 2)
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "files": args.files,
              "size": args.size, "runs": args.runs, "batch_files": args.batch_files,
              "concurrency": args.concurrency, "max_sessions": args.max_sessions,
              "one_worker_median_s": one, "two_workers_median_s": two, "speedup": round(one / two, 2),
              "duplicates": sum(r["duplicates"] for r in results), "missing": sum(r["missing"] for r in results),
              "runs_detail": results, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.files} x {args.size} B, batches of {args.batch_files}, {args.runs} runs: one worker "
              f"{one:.1f} s, two workers {two:.1f} s (median), speedup {one / two:.2f}x; duplicates "
              f"{report['duplicates']}, missing {report['missing']}")
    return 0 if report["duplicates"] == 0 and report["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
