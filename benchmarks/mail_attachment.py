"""Benchmark: peak memory and speed while a mailbox poll ingests one large attachment from the Graph test server.

    python -m benchmarks.mail_attachment                  # 300 MiB attachment (needs Azurite on 127.0.0.1)
    python -m benchmarks.mail_attachment --size-mb 50     # quick run
    python -m benchmarks.mail_attachment --naive          # also the whole-body download, for contrast
    python -m benchmarks.mail_attachment --json

The Graph test server runs in its own process (its memory is not counted) and serves the attachment as
synthetic bytes generated chunk by chunk. Each mode runs `poll_mailbox` end to end (the real msgraph-sdk
adapter -> `$value` -> Landing -> staged blob blocks in Azurite -> tables, file-landed message) in a fresh
child process; the parent reads the child's peak RSS from `os.wait4` (rusage ru_maxrss) and checks sha256.

Modes: `floor` ingests a 1 KiB attachment (imports, SDK and clients: the memory every poll pays);
`stream` the large attachment as Wharf does it; `naive` (with --naive) the same, but the download is joined
into one bytes object first, as `.content.get()`-style SDK calls do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

MIB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAILBOX = "bench@wharf.test"
FOLDER = "Inbox/Bench"


# --- the child: one poll ---------------------------------------------------------------------------------


def _child(mode: str, base_url: str, token: str) -> dict[str, Any]:
    from shared.adapters.graph_mail import GraphMailboxes
    from shared.adapters.secrets import LocalSecrets
    from shared.bootstrap import build_services
    from shared.catalog import parse_catalog
    from shared.ports import Mailbox
    from shared.services.poll_mailbox import poll_mailbox
    from shared.settings import Settings, azurite_connection_string

    tag = uuid.uuid4().hex[:10]
    partner = f"bench-{tag}"
    settings = Settings(AzureWebJobsStorage=azurite_connection_string(), WHARF_TABLE_PREFIX=f"b{tag}",
                        LANDED_QUEUE=f"landed-{tag}", POLL_QUEUE=f"polls-{tag}", WHARF_EVENTS_QUEUE=f"events-{tag}")
    factory = GraphMailboxes(LocalSecrets(env={}), base_url=base_url, local_token=token)

    class Slurping:
        """The Mailbox with the download read whole into memory before it is stored (the contrast)."""

        def __init__(self, inner: Mailbox) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def open_attachment(self, mailbox: str, message_id: str, attachment_id: str) -> Iterator[bytes]:
            return iter([b"".join(self._inner.open_attachment(mailbox, message_id, attachment_id))])

    class NaiveFactory:
        def open(self, partner_id: str, config: Any) -> Any:
            return Slurping(factory.open(partner_id, config))

    services = build_services(settings, mailboxes=NaiveFactory() if mode == "naive" else factory)
    services.overrides["catalog"] = parse_catalog({"partners": [{"id": partner, "name": "Benchmark", "mailbox": {
        "mailbox": MAILBOX, "folder": FOLDER, "sender_allow": ["*@bench.example"], "attachment_globs": ["*"],
        "max_attachment_bytes": "4 GiB", "auth": {"tenant_id": "contoso.onmicrosoft.com",
                                                  "client_id": "00000000-0000-0000-0000-000000000001",
                                                  "client_secret_secret": "bench-graph-secret"}}}]}, env={})
    services.ensure_resources()
    started = time.perf_counter()
    cpu = time.process_time()
    summary = poll_mailbox(services, partner, requested_by="benchmark")
    wall = time.perf_counter() - started
    result: dict[str, Any] = {"mode": mode, "status": summary.status, "landed": summary.landed,
                              "bytes": summary.bytes, "wall_s": wall, "cpu_s": time.process_time() - cpu,
                              "error": summary.error}
    for item in summary.landed_files:
        job = services.jobs.get_job(item.job_id)
        result["sha256"] = job.sha256
        container, _, path = job.blob_path.partition("/")
        services.blobs.delete(container, path)
    _drop_tables(settings)
    return result


def _drop_tables(settings: Any) -> None:
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueServiceClient

    from shared.resources import TABLES

    conn = settings.storage_connection_string or ""
    try:
        tables = TableServiceClient.from_connection_string(conn)
        for name in TABLES:
            tables.delete_table(f"{settings.table_prefix}{name}")
        queues = QueueServiceClient.from_connection_string(conn)
        for name in (settings.landed_queue, settings.poll_queue, settings.events_queue):
            queues.delete_queue(name)
    except AzureError:
        pass


# --- the parent: server, seeding, children ------------------------------------------------------------------


def _admin(root: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    # The local Graph test server only (http://127.0.0.1).
    req = urllib.request.Request(root + path, data=data, method="POST" if data else "GET",  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read() or b"null")


def _start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.graph_server", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "Graph test server on http://127.0.0.1:PORT/v1.0 (token: ...)"
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"the Graph test server did not start: {line!r}")
    return proc, line.split(" on ", 1)[1].split(" ", 1)[0]


def _run_child(mode: str, base_url: str, token: str) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.mail_attachment", "--child", mode,
                             "--base-url", base_url, "--token", token], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child {mode} failed (status {status}): {out}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # Linux: KiB
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, default=300, help="attachment size in MiB (default 300)")
    parser.add_argument("--naive", action="store_true", help="also run the whole-body download for contrast")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--token", default="test-token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.base_url, args.token)))
        return 0

    from tests.graph_server.model import synthetic_sha256

    size = args.size_mb * MIB
    server, base_url = _start_server()
    root = base_url.rsplit("/v1.0", 1)[0]
    results = []
    try:
        modes = [("floor", 1024, 7), ("stream", size, 42)] + ([("naive", size, 43)] if args.naive else [])
        for mode, nbytes, seed in modes:
            _admin(root, f"/_admin/users/{MAILBOX}/messages", {
                "folder": FOLDER, "from": "ops@bench.example", "subject": f"benchmark {mode}",
                "attachments": [{"name": f"{mode}.bin", "size": nbytes, "seed": seed}]})
            result = _run_child(mode, base_url, args.token)
            expected = synthetic_sha256(nbytes, seed)
            result.update(size_mib=nbytes / MIB, sha256_ok=result.get("sha256") == expected,
                          mib_per_s=(nbytes / MIB) / result["wall_s"] if result["wall_s"] else 0.0)
            if result["status"] != "ok" or not result["sha256_ok"]:
                raise SystemExit(f"{mode}: poll {result['status']} {result.get('error', '')}, "
                                 f"sha256 ok: {result['sha256_ok']}")
            results.append(result)
    finally:
        server.terminate()
        server.wait(timeout=10)

    floor = results[0]["peak_rss_mib"]
    for r in results:
        r["over_floor_mib"] = r["peak_rss_mib"] - floor
    if args.json:
        print(json.dumps({"python": platform.python_version(), "cpus": os.cpu_count(), "results": results},
                         indent=2))
        return 0
    print(f"mail attachment ingestion (Python {platform.python_version()}, {os.cpu_count()} CPUs)")
    print(f"{'mode':<8} {'size':>9} {'wall':>8} {'MiB/s':>8} {'cpu':>7} {'peak RSS':>10} {'over floor':>11}  sha256")
    for r in results:
        print(f"{r['mode']:<8} {r['size_mib']:>7.0f}Mi {r['wall_s']:>7.1f}s {r['mib_per_s']:>8.1f} "
              f"{r['cpu_s']:>6.1f}s {r['peak_rss_mib']:>8.0f}Mi {r['over_floor_mib']:>9.0f}Mi  "
              f"{'ok' if r['sha256_ok'] else 'MISMATCH'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
