"""Benchmark: peak memory and speed while an email delivery sends one large attachment through an upload session.

    python -m benchmarks.email_delivery                   # 30 MiB attachment (needs Azurite on 127.0.0.1)
    python -m benchmarks.email_delivery --size-mb 100     # up to Graph's 150 MiB
    python -m benchmarks.email_delivery --naive           # also the whole file joined into memory first
    python -m benchmarks.email_delivery --json

The Graph test server runs in its own process (its memory is not counted). The parent stages the file in Azurite
(synthetic bytes, chunk by chunk); each mode then runs `deliver_email` end to end in a fresh child process (the
real msgraph-sdk adapter: a draft, createUploadSession, chunked PUTs with Content-Range, send; the Deliveries
record in Azurite Tables). Each child reports its own peak RSS (VmHWM from /proc/self/status: a child's
`ru_maxrss` starts from its parent's high-water mark on Linux, see benchmarks/README.md) and the parent checks the
sent attachment's sha256 (the test server's) against the staged blob's.

Modes: `floor` sends a file just over the inline limit (3 MB + 1 byte, so the same draft + upload session path:
imports, SDK, clients, one chunk in flight); `stream` the large file as Wharf does it; `naive` (with --naive) the
same upload session, but the blob joined into one bytes object first. Growth over the floor is what the file's
size adds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from benchmarks.mail_attachment import _admin, _drop_tables, _start_server

MIB = 1024 * 1024
FLOOR_BYTES = 3_000_001  # the smallest file that takes the upload session
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAILBOX = "bench-out@wharf.test"
AUTH = {"tenant_id": "contoso.onmicrosoft.com", "client_id": "00000000-0000-0000-0000-000000000001",
        "client_secret_secret": "bench-graph-secret"}


def _child(mode: str, base_url: str, token: str, staged: dict[str, Any]) -> dict[str, Any]:
    from shared.adapters.graph_mail import GraphMailSenders
    from shared.adapters.secrets import LocalSecrets
    from shared.bootstrap import build_services
    from shared.catalog import parse_catalog
    from shared.domain.ids import new_job_id
    from shared.domain.jobs import EventType
    from shared.ports import FileToAttach, MailSender
    from shared.services.deliver_email import deliver_email
    from shared.settings import Settings, azurite_connection_string

    tag = uuid.uuid4().hex[:10]
    partner = f"bench-{tag}"
    settings = Settings(AzureWebJobsStorage=azurite_connection_string(), WHARF_TABLE_PREFIX=f"b{tag}",
                        LANDED_QUEUE=f"landed-{tag}", POLL_QUEUE=f"polls-{tag}", WHARF_EVENTS_QUEUE=f"events-{tag}")
    factory = GraphMailSenders(LocalSecrets(env={}), base_url=base_url, local_token=token)

    class Joining:
        """The sender with the attachment read whole into memory before it is uploaded (the contrast)."""

        def __init__(self, inner: MailSender) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def upload_attachment(self, mailbox: str, draft_id: str, attachment: FileToAttach, *,
                              chunk_size: int) -> int:
            whole = FileToAttach(attachment.name, attachment.content_type, attachment.size,
                                 [b"".join(attachment.chunks)])
            return self._inner.upload_attachment(mailbox, draft_id, whole, chunk_size=chunk_size)

    class NaiveFactory:
        def open(self, mailbox: str, auth: Any) -> Any:
            return Joining(factory.open(mailbox, auth))

    services = build_services(settings, mail_senders=NaiveFactory() if mode == "naive" else factory)
    services.overrides["catalog"] = parse_catalog({"partners": [{"id": partner, "name": "Benchmark", "routes": [
        {"name": "out", "default": True, "destinations": [
            {"kind": "email", "to": ["ops@bench.example"], "mailbox": MAILBOX, "auth": AUTH}]}]}]}, env={})
    services.jobs.ensure_tables()
    job_id = new_job_id()
    services.jobs.append(job_id, EventType.CREATED, {"partner": partner, "file_name": staged["name"],
                                                     "source": "benchmark"})
    dest = services.catalog.get(partner).routes[0].destinations[0].model_dump(mode="json")
    started = time.perf_counter()
    cpu = time.process_time()
    result = deliver_email(services, services.jobs.get_job(job_id),
                           {"job_id": job_id, "partner": partner, "route": "out", "index": 0}, staged, dest)
    wall = time.perf_counter() - started
    out = {"mode": mode, "wall_s": wall, "cpu_s": time.process_time() - cpu, "method": result["method"],
           "message_id": result["message_id"], "delivery": result["delivery"], "peak_rss_mib": _vm_hwm_mib()}
    _drop_tables(settings)
    return out


def _vm_hwm_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise SystemExit("no VmHWM in /proc/self/status (Linux only)")


def _stage(size: int, seed: int) -> dict[str, Any]:
    from shared.adapters.blobs import BlobStoreClient
    from shared.settings import azurite_connection_string
    from tests.graph_server.model import synthetic_chunks

    blobs = BlobStoreClient.from_connection_string(azurite_connection_string())
    blobs.ensure_containers(["staging"])
    name = f"bench-{uuid.uuid4().hex[:8]}.bin"
    info = blobs.upload_stream("staging", f"bench/{name}", synthetic_chunks(size, seed))
    return {"container": "staging", "path": info.path, "name": name, "bytes": info.size, "sha256": info.sha256}


def _unstage(staged: dict[str, Any]) -> None:
    from shared.adapters.blobs import BlobStoreClient
    from shared.settings import azurite_connection_string

    BlobStoreClient.from_connection_string(azurite_connection_string()).delete(staged["container"], staged["path"])


def _run_child(mode: str, base_url: str, token: str, staged: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-m", "benchmarks.email_delivery", "--child", mode,
                             "--base-url", base_url, "--token", token, "--staged", json.dumps(staged)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    status = proc.wait()
    if status != 0:
        raise SystemExit(f"child {mode} failed (status {status}): {out}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _sent_sha256(root: str, message_id: str) -> str:
    sent = _admin(root, f"/_admin/users/{MAILBOX}/sent")
    found = [s for s in sent if s["internetMessageId"] == message_id]
    return str(found[0]["attachments"][0]["sha256"]) if len(found) == 1 and found[0]["attachments"] else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=30, help="attachment size in MiB (default 30, at most 150)")
    parser.add_argument("--runs", type=int, default=3, help="runs per mode (medians; default 3)")
    parser.add_argument("--naive", action="store_true", help="also run the whole-file upload for contrast")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="test-token", help=argparse.SUPPRESS)
    parser.add_argument("--staged", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.base_url, args.token, json.loads(args.staged))))
        return 0

    size = args.size_mb * MIB
    server, base_url = _start_server()
    root = base_url.rsplit("/v1.0", 1)[0]
    _admin(root, "/_admin/users", {"address": MAILBOX})
    runs: dict[str, list[dict[str, Any]]] = {}
    staged = {"floor": _stage(FLOOR_BYTES, 7), "stream": _stage(size, 42)}
    staged["naive"] = staged["stream"]
    try:
        modes = ["floor", "stream"] + (["naive"] if args.naive else [])
        for _ in range(max(1, args.runs)):
            for mode in modes:  # interleaved, so a burst of load on the shared machine hits every mode
                result = _run_child(mode, base_url, args.token, staged[mode])
                result["sha256_ok"] = _sent_sha256(root, result["message_id"]) == staged[mode]["sha256"]
                if result["delivery"] != "SENT" or not result["sha256_ok"]:
                    raise SystemExit(f"{mode}: delivery {result['delivery']}, sha256 ok: {result['sha256_ok']}")
                runs.setdefault(mode, []).append(result)
    finally:
        server.terminate()
        server.wait(timeout=10)
        for item in {id(s): s for s in staged.values()}.values():
            _unstage(item)

    results = []
    for mode, items in runs.items():
        nbytes = FLOOR_BYTES if mode == "floor" else size
        wall = statistics.median(r["wall_s"] for r in items)
        results.append({"mode": mode, "size_mib": nbytes / MIB, "method": items[0]["method"], "runs": len(items),
                        "wall_s": wall, "cpu_s": statistics.median(r["cpu_s"] for r in items),
                        "mib_per_s": (nbytes / MIB) / wall if wall else 0.0,
                        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in items)})
    floor = results[0]["peak_rss_mib"]
    for r in results:
        r["over_floor_mib"] = r["peak_rss_mib"] - floor
        added = r["size_mib"] - results[0]["size_mib"]
        r["over_floor_vs_size"] = r["over_floor_mib"] / added if r["mode"] != "floor" and added > 0 else 0.0
    if args.json:
        print(json.dumps({"python": platform.python_version(), "cpus": os.cpu_count(), "results": results},
                         indent=2))
        return 0
    print(f"email delivery (Python {platform.python_version()}, {os.cpu_count()} CPUs, medians of {args.runs})")
    print(f"{'mode':<7} {'size':>8} {'method':<24} {'wall':>7} {'MiB/s':>7} {'cpu':>6} {'peak RSS':>9} "
          f"{'over floor':>11} {'/ size':>7}")
    for r in results:
        print(f"{r['mode']:<7} {r['size_mib']:>6.0f}Mi {r['method']:<24} {r['wall_s']:>6.1f}s {r['mib_per_s']:>7.1f} "
              f"{r['cpu_s']:>5.1f}s {r['peak_rss_mib']:>7.0f}Mi {r['over_floor_mib']:>9.0f}Mi "
              f"{r['over_floor_vs_size']:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
